"""The entry point of the environments plugin: registers ``conda`` and ``venv``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kernel_providers.sdk import KernelProvider, hookimpl

from .conda import CondaProvider
from .venv import VenvProvider


@hookimpl
def register_kernel_providers() -> Iterator[KernelProvider[Any]]:
    """Yield the conda and the virtualenv providers."""
    yield CondaProvider()
    yield VenvProvider()
