"""The entry point of the Slurm plugin: registers the ``slurm`` provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kernel_providers.sdk import KernelProvider, hookimpl

from .provider import SlurmProvider


@hookimpl
def register_kernel_providers() -> Iterator[KernelProvider[Any]]:
    """Yield the Slurm provider."""
    yield SlurmProvider()
