"""The entry point of the SSH plugin: registers the ``ssh`` provider. Importing it does
not import asyncssh (that happens on first use)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kernel_providers.sdk import KernelProvider, hookimpl

from .provider import SSHProvider


@hookimpl
def register_kernel_providers() -> Iterator[KernelProvider[Any]]:
    """Yield the SSH provider."""
    yield SSHProvider()
