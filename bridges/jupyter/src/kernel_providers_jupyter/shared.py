"""The one finder the bridge uses in a process (discovery is cached there)."""

from __future__ import annotations

import os
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


def _forget_after_fork() -> None:
    # The parent's providers hold engine sockets and connections to remote hosts that
    # a forked child must not share: the child builds its own finder on first use.
    global _finder, _lock
    _finder, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
