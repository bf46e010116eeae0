"""The one blocking facade: the async API for callers without an event loop.

Every call runs on one background event-loop thread shared by the process, so kernels
started through the facade live as long as the process (their parent-death signal is
tied to that thread) and no provider ever writes a blocking twin.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from .finder import KernelFinder, ProviderReport
from .launcher import KernelLauncher
from .per_process import PerProcess
from .types import ConnectionInfo, KernelType, LaunchOptions

if TYPE_CHECKING:
    from .protocol import Message, OutputCallback

__all__ = ["BlockingKernel", "BlockingKernelFinder", "PerProcess", "run_in_background",
           "run_sync"]

T = TypeVar("T")

def _start_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="kernel-providers-loop",
                     daemon=True).start()
    atexit.register(loop.call_soon_threadsafe, loop.stop)
    return loop


_background = PerProcess(_start_loop)


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the shared background loop and return its result."""
    return asyncio.run_coroutine_threadsafe(coro, _background.get()).result(timeout)


def run_in_background(coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
    """Run ``coro`` on the shared background loop; await the result from any event loop.

    For code whose event loops come and go (jupyter_client's blocking managers run
    each call on a loop of their own): launchers started this way all live on the one
    background loop, whichever loop asks.
    """
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, _background.get()))


class BlockingKernel:
    """A blocking wrapper of any :class:`KernelLauncher`; ``restart`` keeps this object."""

    def __init__(self, launcher: KernelLauncher) -> None:
        self.launcher = launcher

    def __enter__(self) -> BlockingKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def kernel_type(self) -> KernelType:
        """The kernel type this kernel was started from."""
        return self.launcher.kernel_type

    @property
    def connection_info(self) -> ConnectionInfo:
        """Connection info reachable from this machine."""
        return self.launcher.connection_info

    @property
    def connection_file(self) -> str:
        """Path of the 0600 connection file."""
        return self.launcher.connection_file

    @property
    def output(self) -> str:
        """The kernel's captured stdout/stderr."""
        return self.launcher.output

    def poll(self) -> int | None:
        """``None`` while running, else the exit status."""
        return self.launcher.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the kernel ends; its exit status."""
        return run_sync(self.launcher.wait(), timeout)

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the kernel is ready; the kernel_info reply content."""
        return run_sync(self.launcher.wait_ready(timeout))

    def execute(self, code: str, on_output: OutputCallback | None = None,
                timeout: float | None = None) -> Message:
        """Run code; ``on_output`` is called (on the loop thread) per iopub message."""
        return run_sync(self.launcher.execute(code, on_output, timeout))

    def interrupt(self) -> None:
        """Interrupt the kernel (signal or message mode)."""
        run_sync(self.launcher.interrupt())

    def signal(self, signum: int) -> None:
        """Deliver a signal wherever the kernel runs."""
        run_sync(self.launcher.signal(signum))

    def kill(self) -> None:
        """Kill the kernel at once."""
        run_sync(self.launcher.kill())

    def shutdown(self, timeout: float = 10.0) -> int | None:
        """Stop politely, then firmly, then clean up; the exit status."""
        return run_sync(self.launcher.shutdown(timeout))

    def restart(self, timeout: float = 10.0) -> None:
        """Restart in place: this object then wraps the new kernel."""
        self.launcher = run_sync(self.launcher.restart(timeout))

    def cleanup(self) -> None:
        """Free everything the launch made (idempotent)."""
        run_sync(self.launcher.cleanup())


class BlockingKernelFinder:
    """A blocking wrapper of :class:`KernelFinder` (built on the background loop)."""

    def __init__(self, finder: KernelFinder | None = None, **kwargs: Any) -> None:
        self.finder = finder if finder is not None else KernelFinder(**kwargs)

    def find_kernels(self, refresh: bool = False,
                     provider: str | None = None) -> list[KernelType]:
        """Every kernel of every provider, sorted by id."""
        return run_sync(self.finder.find_kernels(refresh, provider))

    @property
    def reports(self) -> list[ProviderReport]:
        """How each provider's last discovery went."""
        return self.finder.reports

    def launch(self, kernel_id: str, options: LaunchOptions | None = None) -> BlockingKernel:
        """Start ``kernel_id``, wait until it is ready, return a blocking handle."""
        return BlockingKernel(run_sync(self.finder.launch(kernel_id, options)))
