"""What every launch of a kernel that runs elsewhere (a container, a remote host, a batch
job) shares, written once: the connection the kernel gets (a restart keeps the key, a
client's dictated file is honoured), the connection the client gets back, waiting for a
kernel that binds its own ports to write them, and a launcher whose end is reported by
whatever watches the kernel. (Local launching uses the first and the third too.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .connection import (
    PORT_NAMES,
    dictated_connection,
    new_connection_info,
    write_connection_file,
)
from .errors import LaunchFailed, ReadyTimeout
from .launcher import KernelLauncher, OutputBuffer
from .types import ConnectionInfo, KernelType, LaunchOptions

__all__ = [
    "WatchedLauncher",
    "client_connection",
    "keep_key",
    "kernel_connection",
    "wait_for_ports",
]


def keep_key(info: dict[str, Any], reuse: Mapping[str, Any], dictated: bool) -> None:
    """Give ``info`` the key (and signature scheme) of ``reuse``: a restart keeps its
    clients connected, and a client's own file is honoured even with an empty key."""
    if dictated or reuse.get("key"):
        info["key"] = str(reuse.get("key", ""))
        info["signature_scheme"] = reuse.get("signature_scheme", "hmac-sha256")


def kernel_connection(kernel_type: KernelType, options: LaunchOptions,
                      ports: dict[str, int] | None = None, ip: str = "127.0.0.1"
                      ) -> tuple[dict[str, Any], ConnectionInfo | None]:
    """(the connection info the kernel is given, the caller's dictated connection or
    ``None``). ``ports``/``ip`` are where the kernel binds in its own world (None: it
    picks its ports and writes them back); the key is fresh unless a restart or the
    caller's file says otherwise. A dictated file a remote kernel cannot honour raises
    LaunchFailed here, before anything is started."""
    dictated = dictated_connection(options, kernel_type.id, remote=True)
    info: dict[str, Any] = dict(new_connection_info(ports, ip=ip,
                                                    kernel_name=kernel_type.name))
    keep_key(info, dictated or options.connection_info or {}, dictated is not None)
    return info, dictated


def client_connection(kernel_type: KernelType, options: LaunchOptions,
                      info: Mapping[str, Any], dictated: ConnectionInfo | None
                      ) -> tuple[ConnectionInfo, str, bool]:
    """(connection info, file, whether the launcher owns the file) for the client:
    ``info`` as reachable from this machine. With a dictated file it is the caller's own
    file, which describes exactly this (its address and kernel name); else a new 0600
    file, which the launcher removes at cleanup."""
    if dictated is not None:
        described = {**info, "ip": dictated.get("ip", "127.0.0.1"),
                     "kernel_name": dictated.get("kernel_name", kernel_type.name)}
        return described, str(options.connection_file), False  # type: ignore[return-value]
    return info, str(write_connection_file(info)), True  # type: ignore[arg-type,return-value]


async def wait_for_ports(read: Callable[[], Awaitable[Any]],
                         check_alive: Callable[[], Awaitable[None]], *, key: str, where: str,
                         timeout: float, output: Callable[[], str],
                         kernel_id: str) -> ConnectionInfo:
    """Poll ``read()`` (the kernel's connection file, wherever it lies: ``where``) until
    it holds all five ports, as a kernel that binds its own writes them; then return
    it. ``check_alive()`` raises (KernelDied, with the kernel's output) once the kernel
    ended; a file rewritten with another key, or no ports within ``timeout``, fail.
    Polls back off to 10 ms apart: the ports are seen within 10 ms of their writing
    (far off, a read takes its round trip on top)."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while time.monotonic() < deadline:
        info = await read()
        if isinstance(info, dict) and all(info.get(p) for p in PORT_NAMES):
            if info.get("key") != key:
                raise LaunchFailed(f"kernel {kernel_id!r} rewrote its connection file"
                                   f" {where} with another key")
            return info  # type: ignore[return-value]
        await check_alive()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.01)
    raise ReadyTimeout(f"kernel {kernel_id!r} did not write its ports to {where} within"
                       f" {timeout:g} s", output())


#: The exit status of a kernel whose watch was lost before it reported its own (the
#: connection to its host dropped, its container vanished): 255, as ssh(1) exits when
#: its connection fails.
WATCH_LOST = 255


class WatchedLauncher(KernelLauncher):
    """A kernel this process is not the parent of (a container, a remote process, a
    batch job): whatever watches it reports its end with :meth:`ended_with` and its
    output into ``self.collected``. ``poll``, ``wait`` and ``output`` follow from that;
    a subclass implements ``signal`` and ``free_resources``."""

    def __init__(self, kernel_type: KernelType, connection_info: ConnectionInfo,
                 connection_file: str, options: LaunchOptions,
                 collected: OutputBuffer | None = None) -> None:
        super().__init__(kernel_type, connection_info, connection_file, options)
        self.collected = collected if collected is not None else OutputBuffer()
        self._ended: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    def ended_with(self, status: int | None) -> None:
        """Report the kernel's end: its exit status (-N: signal N), ``None`` if unknown
        (the watch was lost: then :data:`WATCH_LOST`, so that ``poll`` never mistakes a
        lost kernel for a running one). Later reports are ignored."""
        if not self._ended.done():
            self._ended.set_result(WATCH_LOST if status is None else status)

    @property
    def output(self) -> str:
        """The kernel's collected stdout and stderr, last 64 KiB."""
        return self.collected.text()

    def poll(self) -> int | None:
        """``None`` while the kernel runs, else its exit status."""
        return self._ended.result() if self._ended.done() else None

    def ended(self) -> bool:
        """Whether the kernel ended (or the watch on it was lost)."""
        return self._ended.done()

    async def wait(self) -> int | None:
        """Wait for the kernel's end: its exit status (negative for a signal,
        :data:`WATCH_LOST` where it cannot be known)."""
        return await asyncio.shield(self._ended)
