"""The one finder the bridge uses in a process (discovery is cached there)."""

from __future__ import annotations

from kernel_providers import BlockingKernelFinder, KernelFinder
from kernel_providers.blocking import run_sync
from kernel_providers.per_process import PerProcess


def _make() -> BlockingKernelFinder:
    finder = BlockingKernelFinder(KernelFinder())
    pool = finder.finder.pool
    if pool is not None:  # [pool] configured: kernels get ready while the server starts
        async def fill() -> None:
            pool.fill()

        run_sync(fill())  # (schedules the starts on the background loop: returns at once)
    return finder


# A forked child must not share its parent's engine sockets and connections to remote
# hosts: it builds its own finder on first use.
_shared = PerProcess(_make)


def shared_finder() -> BlockingKernelFinder:
    """The process-wide finder (a blocking facade over one KernelFinder)."""
    return _shared.get()


def forget_shared_finder() -> None:
    """Build the finder afresh on next use (after the configuration or paths changed)."""
    _shared.forget()
