"""The one finder the bridge uses in a process (discovery is cached there)."""

from __future__ import annotations

import threading

from kernel_providers import BlockingKernelFinder, KernelFinder

_finder: BlockingKernelFinder | None = None
_lock = threading.Lock()


def shared_finder() -> BlockingKernelFinder:
    """The process-wide finder (a blocking facade over one KernelFinder)."""
    global _finder
    with _lock:
        if _finder is None:
            _finder = BlockingKernelFinder(KernelFinder())
        return _finder
