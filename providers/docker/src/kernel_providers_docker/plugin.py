"""The entry point of the Docker plugin: registers the ``docker`` provider. Importing it
does not import the docker SDK (that happens on first use)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kernel_providers.sdk import KernelProvider, hookimpl

from .provider import DockerProvider


@hookimpl
def register_kernel_providers() -> Iterator[KernelProvider[Any]]:
    """Yield the Docker provider."""
    yield DockerProvider()
