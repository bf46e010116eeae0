"""kernel-providers plugin for kernelspecs: every ``kernels/*/kernel.json`` on Jupyter's
data path, as ``spec/<name>``."""

from __future__ import annotations

from .provider import KernelSpecConfig, KernelSpecProvider

__all__ = ["KernelSpecConfig", "KernelSpecProvider"]
