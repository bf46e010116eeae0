"""The kernelspec shim: ``python -m kernel_providers_jupyter.shim <id> -f <connection file>``.

The argv of every kernelspec ``kernel-providers jupyter sync`` writes, for clients that
run a kernelspec's argv themselves (``jupyter console``, papermill, VS Code ...). The
provider's kernel answers on exactly the ports, key, transport and address of the
connection file the client wrote:

- a kernel on this machine *becomes* this process (``exec``), reading the client's file:
  nothing stays between client and kernel, signals reach the kernel directly;
- a kernel elsewhere (a container, a remote host) is supervised from here: SIGINT
  interrupts it (signal or message mode, as its type needs), SIGTERM and SIGHUP shut it
  down and clean up, and when it ends this process exits with its status. If this
  process is killed outright, the provider's orphan rules apply (container labels and
  ``kernel-providers cleanup``, the SSH supervisor ending on channel loss).

Exit status: the kernel's (a kernel killed by signal N ends this process by signal N);
2 for an unknown kernel id or bad arguments; 3 when the kernel could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel_providers import KernelLauncher

__all__ = ["main"]

EXIT_USAGE, EXIT_KERNEL_FAILED = 2, 3
_PREFIX = "kernel-providers shim:"


def _say(message: str) -> None:
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


async def _run(kernel_id: str, connection_file: str) -> int | None:
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
        _say(f"{exc}; if the kernel was removed, run `kernel-providers jupyter sync`")
        return EXIT_USAGE
    except KernelProviderError as exc:
        _say(str(exc))
        return EXIT_KERNEL_FAILED
    signals.launcher = launcher
    ended = asyncio.ensure_future(launcher.wait())
    if not await _first(ended, signals.stop):
        return await launcher.shutdown()
    await launcher.cleanup()
    status = ended.result()
    if status:
        _say(f"kernel {kernel_id!r} ended with status {status}")
        if launcher.output.strip():
            print(launcher.output[-4000:], file=sys.stderr, flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run the shim; returns the exit status (or ends by the kernel's signal)."""
    parser = argparse.ArgumentParser(
        prog="python -m kernel_providers_jupyter.shim",
        description="Start a kernel-providers kernel on a Jupyter client's connection file.")
    parser.add_argument("kernel_id", help="the kernel-providers id, e.g. docker/img:1.2")
    parser.add_argument("-f", "--connection-file", required=True,
                        help="the connection file the client wrote")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.connection_file):
        _say(f"connection file {args.connection_file} does not exist; a Jupyter client"
             " writes it and passes it as -f {connection_file}")
        return EXIT_USAGE
    status = asyncio.run(_run(args.kernel_id, os.path.abspath(args.connection_file)))
    if status is None:
        _say(f"the connection to kernel {args.kernel_id!r} was lost; its status is unknown")
        return 1
    if status < 0:  # killed by a signal: end the same way, as the client expects
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


if __name__ == "__main__":
    sys.exit(main())
