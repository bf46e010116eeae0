"""The entry point of the kernelspec plugin: registers the ``spec`` provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kernel_providers.sdk import KernelProvider, hookimpl

from .provider import KernelSpecProvider


@hookimpl
def register_kernel_providers() -> Iterator[KernelProvider[Any]]:
    """Yield the kernelspec provider."""
    yield KernelSpecProvider()
