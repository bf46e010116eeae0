"""An example kernel-providers plugin: one kernel per configured Python interpreter."""

from __future__ import annotations

from .provider import ExampleConfig, ExampleProvider

__all__ = ["ExampleConfig", "ExampleProvider"]
