"""The shim's supervising part: starts a kernel through its provider and, for a kernel
elsewhere (a container, a remote host), relays signals to it and waits for its end.
A kernel on this machine replaces the shim inside the launch and never comes back here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel_providers import KernelLauncher

__all__ = ["EXIT_KERNEL_FAILED", "EXIT_USAGE", "run", "say"]

EXIT_USAGE, EXIT_KERNEL_FAILED = 2, 3
_PREFIX = "kernel-providers shim:"


def say(message: str) -> None:
    """Tell the client's user (stderr), marked as the shim's."""
    print(f"{_PREFIX} {message}", file=sys.stderr, flush=True)


def _jupyter_env() -> dict[str, str]:
    # What a Jupyter client adds for its kernel (session name ...). A kernel on this
    # machine inherits the whole environment anyway; a container or remote host gets
    # only these, never a copy of this machine's environment.
    return {k: v for k, v in os.environ.items()
            if k.startswith("JPY_") and k != "JPY_PARENT_PID"}


class _Signals:
    """SIGINT, SIGTERM and SIGHUP as the shim handles them (installed before the launch:
    a client that gives up on a slow start must not leave a container behind)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.launcher: KernelLauncher | None = None
        self._interrupts: set[asyncio.Future[None]] = set()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, self.stop.set)

    def _interrupt(self) -> None:
        if self.launcher is None:
            return  # nothing runs yet to interrupt
        task = asyncio.ensure_future(self.launcher.interrupt())
        self._interrupts.add(task)
        task.add_done_callback(self._interrupts.discard)


async def _first(work: asyncio.Future[Any], stop: asyncio.Event) -> bool:
    """Wait for ``work`` or ``stop``; whether ``work`` finished first."""
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    return work.done()


async def run(kernel_id: str, connection_file: str) -> int | None:
    """Start ``kernel_id`` on the client's file and supervise it; its exit status
    (negative: killed by that signal), ``None`` if it was lost."""
    from kernel_providers import KernelFinder, KernelProviderError, LaunchOptions, NoSuchKernel

    signals = _Signals()
    options = LaunchOptions(env=_jupyter_env(), connection_file=connection_file,
                            replace_process=True)
    # Local kernels exec inside launch and never return; the client does the ready check.
    launching = asyncio.ensure_future(KernelFinder().launch(kernel_id, options,
                                                            wait_ready=False))
    if not await _first(launching, signals.stop):
        launching.cancel()  # providers free what a cancelled launch made
        await asyncio.gather(launching, return_exceptions=True)
        return -signal.SIGTERM
    try:
        launcher = launching.result()
    except NoSuchKernel as exc:
        say(f"{exc}; if the kernel was removed, run `kernel-providers jupyter sync`")
        return EXIT_USAGE
    except KernelProviderError as exc:
        say(str(exc))
        return EXIT_KERNEL_FAILED
    signals.launcher = launcher
    ended = asyncio.ensure_future(launcher.wait())
    if not await _first(ended, signals.stop):
        return await launcher.shutdown()
    await launcher.cleanup()
    status = ended.result()
    if status:
        say(f"kernel {kernel_id!r} ended with status {status}")
        if launcher.output.strip():
            print(launcher.output[-4000:], file=sys.stderr, flush=True)
    return status


