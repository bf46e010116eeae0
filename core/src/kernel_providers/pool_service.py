"""The per-user pool service: one process holding a warm pool, asked over a unix socket
(0600, in the Jupyter runtime dir) by the CLI and the Python API before they start a
kernel themselves.

Protocol: one JSON object per line. ``{"op": "take", "id", "cwd", "environ"}`` answers
``{"ok": true, "kernel", "connection_info", "connection_file"}`` (or ``{"ok": false,
"miss": why}``); the connection then stands for that kernel: ``signal``, ``kill`` and
``cleanup`` act on it, the service sends ``{"event": "exit", "status"}`` when it ends,
and closing the connection (the client ended, however) ends the kernel. ``status`` and
``stop`` are the service's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal as _signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .connection import runtime_dir
from .errors import KernelProviderError
from .launcher import KernelLauncher
from .pool import Caller
from .types import ConnectionInfo, KernelType, LaunchOptions

if TYPE_CHECKING:
    from .finder import KernelFinder

__all__ = ["ServiceKernel", "serve", "service_request", "socket_path", "take"]

log = logging.getLogger(__name__)

SOCKET_NAME = "kernel-providers-pool.sock"


def socket_path() -> Path:
    """Where this user's pool service listens."""
    return runtime_dir() / SOCKET_NAME


# --- the service -------------------------------------------------------------------------


async def serve(finder: KernelFinder, ready: asyncio.Event | None = None) -> None:
    """Hold ``finder``'s pool and answer on the socket until ``stop`` or a signal."""
    pool = finder.pool
    if pool is None:
        raise KernelProviderError(
            "the pool service has nothing to hold: configure [pool] in the config file,"
            ' e.g. [pool."spec/python3"] size = 1 (see docs/pool.md)')
    path = socket_path()
    if await _answers(path):
        raise KernelProviderError(f"a pool service already answers on {path}"
                                  " (`kernel-providers pool stop` ends it)")
    path.unlink(missing_ok=True)  # a dead service's
    stopping = asyncio.Event()
    kernels: set[KernelLauncher] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(finder, writer, kernels, stopping)
        try:
            while line := await reader.readline():
                await session.answer(json.loads(line))
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            await session.end()
            writer.close()

    old_umask = os.umask(0o177)  # the socket is 0600 from its creation on
    try:
        server = await asyncio.start_unix_server(handle, path=str(path))
    finally:
        os.umask(old_umask)
    loop = asyncio.get_running_loop()
    for signum in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
        loop.add_signal_handler(signum, stopping.set)
    try:
        pool.fill()
        if ready is not None:
            ready.set()
        await stopping.wait()
    finally:
        server.close()
        path.unlink(missing_ok=True)
        await asyncio.gather(*(k.shutdown() for k in list(kernels)), return_exceptions=True)
        await pool.close()


class _Session:
    """One client's connection: status and stop, or one kernel taken and driven."""

    def __init__(self, finder: KernelFinder, writer: asyncio.StreamWriter,
                 kernels: set[KernelLauncher], stopping: asyncio.Event) -> None:
        self.finder, self.writer, self.kernels, self.stopping = finder, writer, kernels, stopping
        self.launcher: KernelLauncher | None = None
        self.watcher: asyncio.Future[None] | None = None
        self.closing: asyncio.Future[int | None] | None = None

    async def send(self, message: dict[str, Any]) -> None:
        self.writer.write((json.dumps(message) + "\n").encode())
        await self.writer.drain()

    async def answer(self, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "status" and self.finder.pool is not None:
            await self.send({"ok": True, "status": self.finder.pool.status()})
        elif op == "stop":
            await self.send({"ok": True})
            self.stopping.set()
        elif op == "take" and self.launcher is None:
            await self.take(request)
        elif op in ("signal", "kill", "cleanup") and self.launcher is not None:
            if op == "signal":
                await self.launcher.signal(int(request["signum"]))
            elif op == "kill":
                await self.launcher.kill()
            else:
                await self.launcher.cleanup()
            await self.send({"ok": True})
        elif op == "shutdown" and self.launcher is not None:
            # Polite, by the service (its connection to the kernel is made already);
            # the exit event tells the client the status.
            await self.send({"ok": True})
            self.closing = asyncio.ensure_future(self.launcher.shutdown())
        else:
            await self.send({"ok": False, "error": f"unexpected request {op!r}"})

    async def take(self, request: dict[str, Any]) -> None:
        launcher, why = await _take(self.finder, request)
        if launcher is None:
            await self.send({"ok": False, "miss": why})
            return
        self.launcher = launcher
        self.kernels.add(launcher)
        self.watcher = asyncio.ensure_future(self.watch(launcher))
        await self.send({"ok": True, "kernel": launcher.kernel_type.to_dict(),
                         "connection_info": dict(launcher.connection_info),
                         "connection_file": launcher.connection_file,
                         "kernel_info": launcher.kernel_info})

    async def watch(self, kernel: KernelLauncher) -> None:
        status = await kernel.wait()
        with contextlib.suppress(Exception):
            await kernel.output_complete()
            # Its output goes along: an error about the kernel's end quotes it.
            await self.send({"event": "exit", "status": status, "output": kernel.output})

    async def end(self) -> None:
        """The client is done or gone, however: its kernel goes too."""
        launcher, self.launcher = self.launcher, None
        if launcher is not None:
            self.kernels.discard(launcher)
            if self.watcher is not None:
                self.watcher.cancel()
            await asyncio.shield(self.closing or launcher.shutdown())


async def _take(finder: KernelFinder, request: dict[str, Any]
                ) -> tuple[KernelLauncher | None, str]:
    pool = finder.pool
    assert pool is not None
    try:
        kernel_type = await finder.get_kernel_type(str(request["id"]))
    except KernelProviderError as exc:
        return None, str(exc)
    options = LaunchOptions(cwd=request.get("cwd"), env=dict(request.get("env") or {}))
    caller = Caller(str(request.get("caller_cwd") or "/"), dict(request.get("environ") or {}))
    launcher = await pool.take(kernel_type, options, caller)
    if launcher is None:
        return None, pool.last_miss(kernel_type.id)
    return launcher, ""


# --- clients ------------------------------------------------------------------------------


async def _answers(path: Path) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1)
    except (OSError, asyncio.TimeoutError, TimeoutError):
        return False
    writer.close()
    return True


async def _connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection to the service; None when none runs (the common case costs one
    stat) or it does not answer."""
    path = socket_path()
    if not path.exists():
        return None
    try:
        return await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2)
    except (OSError, asyncio.TimeoutError, TimeoutError):
        return None


async def service_request(request: dict[str, Any], timeout: float = 10.0
                          ) -> dict[str, Any] | None:
    """One request to the service; its answer, or None when no service answers."""
    streams = await _connect()
    if streams is None:
        return None
    reader, writer = streams
    try:
        writer.write((json.dumps(request) + "\n").encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return dict(json.loads(line)) if line else None
    finally:
        writer.close()


async def take(kernel_id: str, cwd: str | None = None,
               env: dict[str, str] | None = None) -> ServiceKernel | None:
    """A kernel of ``kernel_id`` from this user's pool service, set up for ``cwd``,
    ``env`` and this process's environment; None when no service runs or it has none
    ready."""
    streams = await _connect()
    if streams is None:
        return None
    reader, writer = streams
    try:
        writer.write((json.dumps({"op": "take", "id": kernel_id, "cwd": cwd, "env": env or {},
                                  "caller_cwd": os.getcwd(), "environ": dict(os.environ)})
                      + "\n").encode())
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 30) or b"{}")
    except (OSError, ValueError, asyncio.TimeoutError, TimeoutError):
        writer.close()
        return None
    if not answer.get("ok"):
        log.info("pool service: %s", answer.get("miss") or answer.get("error"))
        writer.close()
        return None
    data = answer["kernel"]
    kernel_type = KernelType(id=data["id"], provider=data["provider"],
                             display_name=data["display_name"], language=data["language"],
                             metadata=data["metadata"], resources=data["resources"],
                             interrupt_mode=data["interrupt_mode"])
    kernel = ServiceKernel(kernel_type, answer["connection_info"], answer["connection_file"],
                           LaunchOptions(cwd=cwd, env=dict(env or {})), reader, writer)
    kernel.kernel_info = answer.get("kernel_info")  # ready: no second check
    return kernel


class ServiceKernel(KernelLauncher):
    """A kernel the pool service holds for this process: the launcher contract over
    the service's connection (the kernel ends when this process lets go of it)."""

    def __init__(self, kernel_type: KernelType, connection_info: ConnectionInfo,
                 connection_file: str, options: LaunchOptions,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(kernel_type, connection_info, connection_file, options)
        self._reader, self._writer = reader, writer
        self._status: int | None = None
        self._ended = asyncio.Event()
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._handed_back = False
        self._output = ""
        self._reading = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                message = json.loads(line)
                if message.get("event") == "exit":
                    self._status = message.get("status")
                    self._output = str(message.get("output") or "")
                    self._ended.set()
                else:
                    await self._answers.put(message)
        except (OSError, ValueError):
            pass
        if not self._ended.is_set():  # the service went away: so did the kernel
            self._status = self._status if self._status is not None else -_signal.SIGKILL
            self._ended.set()
        await self._answers.put({"ok": False, "error": "the pool service went away"})

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            self._writer.write((json.dumps(request) + "\n").encode())
            await self._writer.drain()
            return await self._answers.get()

    def poll(self) -> int | None:
        return self._status if self._ended.is_set() else None

    @property
    def output(self) -> str:
        """The kernel's output, once it ended (the service holds it until then)."""
        return self._output

    async def wait(self) -> int | None:
        await self._ended.wait()
        return self._status

    async def signal(self, signum: int) -> None:
        if self.poll() is None:
            await self._ask({"op": "signal", "signum": int(signum)})

    async def kill(self) -> None:
        if self.poll() is None:
            await self._ask({"op": "kill"})

    async def shutdown(self, timeout: float = 10.0) -> int | None:
        """The service shuts the kernel down politely, then firmly, as ``shutdown``
        does; its status once it ended."""
        self.close_connection()
        if self.poll() is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ask({"op": "shutdown"}), 10)
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self.wait(), timeout + 5)
        await self.cleanup()
        return self.poll()

    async def release(self) -> None:
        """Hand the kernel back: the service shuts it down (politely, then firmly) while
        this process goes on."""
        self.close_connection()
        if self.poll() is None:
            with contextlib.suppress(Exception):
                answer = await asyncio.wait_for(self._ask({"op": "shutdown"}), 10)
                self._handed_back = bool(answer.get("ok"))
        await self.cleanup()

    async def cleanup(self) -> None:
        """Let go of the kernel: handed back (``release``), the service ends it; else it
        is killed as ``cleanup`` does."""
        if self._handed_back:
            self.close_connection()
            self._writer.close()
            self._reading.cancel()
            return
        await super().cleanup()

    async def free_resources(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ask({"op": "cleanup"}), 10)
        self._writer.close()
        self._reading.cancel()
