"""The launcher contract: what every provider's ``launch`` returns.

The base class owns everything that is the same wherever a kernel runs (the ready check,
interrupt in message mode, the shutdown sequence, restart, idempotent cleanup); a
provider implements only the primitives that depend on where the kernel lives:
``poll``, ``wait``, ``signal``, ``output`` and, where the launch made more than a
process, ``free_resources`` (``kill`` is SIGKILL through ``signal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal as _signal
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from .connection import remove_connection_file, remove_ipc_files
from .errors import KernelDied, KernelProviderError, LaunchFailed, ReadyTimeout
from .orphans import Undo, undo_if_orphaned
from .types import ConnectionInfo, KernelType, LaunchOptions, ready_seconds

if TYPE_CHECKING:  # pyzmq loads on first connection: listing and exec paths skip it
    from .protocol import KernelConnection, Message, OutputCallback

__all__ = ["KernelLauncher", "LauncherOwner", "OutputBuffer"]

# The signature that opens every ZeroMQ (ZMTP 3) connection.
_ZMTP_SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"


async def _zmtp_answers(ip: str, port: int) -> bool:
    """Whether a ZeroMQ peer listens at ip:port (it answers our greeting's signature)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 1)
    except (OSError, asyncio.TimeoutError, TimeoutError):
        return False
    try:
        writer.write(_ZMTP_SIGNATURE)
        await writer.drain()
        greeting = await asyncio.wait_for(reader.readexactly(10), 1)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, TimeoutError):
        return False
    finally:
        writer.close()
    return greeting[:1] == b"\xff"

log = logging.getLogger(__name__)


class OutputBuffer:
    """The last ``limit`` bytes a kernel wrote to stdout/stderr (for diagnostics)."""

    def __init__(self, limit: int = 64 * 1024) -> None:
        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def append(self, data: bytes) -> None:
        """Add output, dropping the oldest bytes beyond the limit."""
        self._chunks.append(data)
        self._size += len(data)
        while self._size > self.limit:
            excess = self._size - self.limit
            first = self._chunks[0]
            if len(first) <= excess:
                self._chunks.popleft()
                self._size -= len(first)
            else:
                self._chunks[0] = first[excess:]
                self._size -= excess

    def text(self) -> str:
        """Everything kept, decoded leniently."""
        return b"".join(self._chunks).decode("utf-8", "replace")


class LauncherOwner(Protocol):
    """What launched a kernel for its user (a :class:`~kernel_providers.KernelFinder`):
    it starts the same kernel type again, and hears when a kernel ended."""

    async def relaunch(self, launcher: KernelLauncher,
                       options: LaunchOptions) -> KernelLauncher:
        """Start ``launcher``'s kernel type again with ``options``; wait until ready."""
        ...

    def stopped(self, launcher: KernelLauncher, status: int | None) -> None:
        """``launcher``'s kernel ended and was cleaned up, with ``status``."""
        ...


class KernelLauncher(ABC):
    """A running kernel, wherever it runs. Returned by every provider's ``launch``.

    ``connection_info`` is reachable from the caller's machine (tunnels and published
    ports already applied) and ``connection_file`` holds the same in a 0600 file.
    Subclasses implement the abstract ``poll``, ``wait``, ``signal`` and ``output``, and
    ``free_resources`` where the launch made more than a process; they set
    ``connection_info`` and ``connection_file`` before ``launch`` returns.
    """

    kernel_type: KernelType
    connection_info: ConnectionInfo
    connection_file: str
    launch_options: LaunchOptions

    def __init__(self, kernel_type: KernelType, connection_info: ConnectionInfo,
                 connection_file: str, launch_options: LaunchOptions | None = None) -> None:
        self.kernel_type = kernel_type
        self.connection_info = connection_info
        self.connection_file = connection_file
        self.launch_options = launch_options or LaunchOptions()
        self.kernel_info: dict[str, Any] | None = None
        self._cleaned = False
        self._cleanup_lock = asyncio.Lock()
        # The connection ``execute`` uses, opened on its first call and proven by the
        # ready handshake (a new SUB socket misses what the kernel publishes before it
        # joins: the slow-subscriber problem). While open, it reads iopub continuously
        # and drops what other clients cause (issue 18).
        self._connection: KernelConnection | None = None
        self._execute_lock = asyncio.Lock()
        self._owner: LauncherOwner | None = None
        self._restarted = False  # restart() handed out the new kernel's launcher
        # What the reaper undoes should this process end before cleanup (see orphans).
        self._undo_if_orphaned: list[Undo] = []
        self._guard_connection_file()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kernel_type.id} status={self.poll()!r}>"

    def _guard_connection_file(self) -> None:
        # Ours (not the caller's): the reaper removes it if this process dies first.
        if self.connection_file != self.launch_options.connection_file:
            self.cancel_at_cleanup(undo_if_orphaned({"remove_file": self.connection_file}))

    def cancel_at_cleanup(self, undo: Undo) -> None:
        """Keep ``undo`` (from :func:`undo_if_orphaned`) until :meth:`cleanup` has freed
        everything: until then, this process's end by any means makes the reaper carry
        it out. Providers register what outlives this process (a container, a job)."""
        self._undo_if_orphaned.append(undo)

    def cancel_undos(self) -> None:
        """Take back every :meth:`cancel_at_cleanup` registration (what they undo is
        gone already)."""
        undos, self._undo_if_orphaned = self._undo_if_orphaned, []
        for undo in undos:
            undo.cancel()

    def detach(self) -> None:
        """Let the kernel outlive this process: the reaper no longer ends it when this
        process ends without cleanup. For a caller that saved :meth:`attach_state` to
        re-attach later (a server that persists its kernels across restarts)."""
        self.cancel_undos()

    def managed_by(self, owner: LauncherOwner) -> None:
        """Make ``owner`` (the :class:`KernelFinder` that launched this kernel) the one
        that starts it again on ``restart`` and hears of its end. Once per launcher."""
        if self._owner is not None and self._owner is not owner:
            raise KernelProviderError(f"kernel {self.kernel_type.id!r} already has an owner")
        self._owner = owner

    # --- primitives every provider implements ------------------------------------

    @abstractmethod
    def poll(self) -> int | None:
        """``None`` while the kernel runs, else its exit status (as ``wait`` returns it).

        Called often (liveness checks during the ready check and while code runs): it
        must not block.
        """
        raise NotImplementedError

    @abstractmethod
    async def wait(self) -> int | None:
        """Wait for the kernel to end and return its exit status.

        An int, negative when the kernel was killed by that signal (as Popen), or
        ``None`` only where the provider cannot know it.
        """
        raise NotImplementedError

    @abstractmethod
    async def signal(self, signum: int) -> None:
        """Deliver ``signum`` to the kernel (and its process group) wherever it runs."""
        raise NotImplementedError

    async def kill(self) -> None:
        """End the kernel at once: SIGKILL (to its process group, where it has one)."""
        await self.signal(_signal.SIGKILL)

    @property
    @abstractmethod
    def output(self) -> str:
        """The kernel's captured stdout/stderr (bounded), for diagnostics."""
        raise NotImplementedError

    async def free_resources(self) -> None:  # noqa: B027 - optional: most make nothing else
        """Free what the launch made besides the connection file: containers, tunnels,
        remote files. Called once, by ``cleanup``, after the kernel has ended."""

    async def output_complete(self) -> None:
        """Return once ``output`` holds everything the ended kernel wrote (called before
        an error quotes it). The default gives readers a moment."""
        await asyncio.sleep(0.05)

    def attach_state(self) -> dict[str, Any] | None:
        """What another process needs to re-attach to this kernel (JSON), with
        ``connection_info``; ``None`` where the kernel cannot outlive this process (local
        kernels die with their parent, remote ones with their SSH channel)."""
        return None

    # --- the shared behaviour ------------------------------------------------------

    def connect(self) -> KernelConnection:
        """A new protocol connection to this kernel (close it, or use ``async with``)."""
        from .protocol import KernelConnection

        return KernelConnection(self.connection_info)

    def close_connection(self) -> None:
        """Close the connection ``execute`` keeps (its next call opens a new one).

        While open, that connection reads the kernel's iopub continuously, dropping what
        other clients cause; ``shutdown`` and ``cleanup`` close it.
        """
        if self._connection is not None:
            self._connection.close()
        self._connection = None

    async def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        """Return once the kernel answers ``kernel_info_request`` and iopub delivers.

        Returns the kernel_info reply content. Raises :class:`KernelDied` (with the
        kernel's output) if it ends first, :class:`ReadyTimeout` after ``timeout``
        seconds (default: the launch options' ``ready_timeout``). The check's connection
        is closed once the kernel is ready: a subscription kept open would make ZeroMQ
        queue everything other clients cause, here and in the kernel.
        """
        async with self.connect() as conn:
            content = await self._ready_check(conn, timeout)
        self.kernel_info = content
        return content

    async def wait_listening(self, timeout: float | None = None) -> None:
        """Return once a ZeroMQ peer answers the greeting on the kernel's shell port: it
        is bound, a client may connect (cheaper than :meth:`wait_ready`, which also waits
        for the kernel to answer). Raises :class:`KernelDied` (with the kernel's output)
        if it ends first, :class:`ReadyTimeout` after ``timeout`` seconds (default: the
        launch options' ``ready_timeout``).

        A published port (Docker) accepts a connection at once and drops it while
        nothing listens behind it, so a mere connect proves nothing: the greeting does.
        """
        timeout = ready_seconds(self.launch_options) if timeout is None else timeout
        info = self.connection_info
        deadline = time.monotonic() + timeout
        delay = 0.002  # a local kernel binds within ~100 ms: seen within 10 ms of it
        while True:
            if self.poll() is not None:
                status = await self.wait()
                await self.output_complete()
                raise KernelDied(f"kernel {self.kernel_type.id!r} ended while starting"
                                 f" (exit status {status})", self.output, status)
            if info.get("transport", "tcp") != "tcp":
                if os.path.exists(f"{info['ip']}-{info['shell_port']}"):
                    return
            elif await _zmtp_answers(info["ip"], int(info["shell_port"])):
                return
            if time.monotonic() > deadline:
                raise ReadyTimeout(f"kernel {self.kernel_type.id!r} did not listen on its"
                                   f" ports within {timeout:g} s; if it is just slow to"
                                   " start, raise ready_timeout", self.output)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)

    async def listening_or_cleaned_up(self, timeout: float | None = None) -> KernelLauncher:
        """:meth:`wait_listening`, cleaning up the launch if that fails (or is
        cancelled) before the error propagates; returns this launcher. What a launch
        that returns once the kernel listens ends with."""
        try:
            await self.wait_listening(timeout)
        except BaseException:
            await asyncio.shield(self.cleanup())
            raise
        return self

    async def _ready_check(self, conn: KernelConnection, timeout: float | None) -> dict[str, Any]:
        from .protocol import ProtocolError

        timeout = ready_seconds(self.launch_options) if timeout is None else timeout
        where = f"kernel {self.kernel_type.id!r}"
        try:
            reply = await conn.wait_ready(timeout, lambda: self.poll() is None)
        except ProtocolError as exc:  # what answers on its ports is no kernel of this key
            raise LaunchFailed(
                f"{where} answered the ready check with a {exc}; is what listens on its"
                " ports a Jupyter kernel?", self.output) from None
        except ConnectionAbortedError:
            status = await self.wait()
            await self.output_complete()
            raise KernelDied(
                f"{where} ended while starting (exit status {status})", self.output, status
            ) from None
        except TimeoutError:
            raise ReadyTimeout(
                f"{where} did not answer within {timeout:g} s; if it is just slow to start,"
                " raise ready_timeout in the config (or LaunchOptions.ready_timeout),"
                " else its output below says what it is doing", self.output) from None
        content: dict[str, Any] = reply["content"]
        return content

    async def _execute_connection(self) -> KernelConnection:
        if self._restarted:
            raise KernelProviderError(
                f"kernel {self.kernel_type.id!r} was restarted: this launcher's kernel is"
                " gone; use the launcher restart() returned")
        conn = self._connection
        if conn is not None and conn.info is self.connection_info and conn.listening:
            return conn
        self.close_connection()
        if self.kernel_info is None:
            await self.wait_ready()  # never checked: the provider's own check (retries)
        conn = self.connect()
        try:
            # The handshake proves this connection's iopub subscription; from then on
            # its reader consumes iopub until close_connection.
            self.kernel_info = await self._ready_check(conn, None)
        except BaseException:
            conn.close()
            raise
        self._connection = conn
        return conn

    async def execute(self, code: str, on_output: OutputCallback | None = None,
                      timeout: float | None = None) -> Message:
        """Run ``code`` and return the execute_reply; iopub messages go to ``on_output``.

        Executions are serialised (as the kernel serialises them anyway). The kernel
        must belong to the running event loop (the one that launched it). The first
        call opens a connection that stays open (reading iopub in the background,
        dropping other clients' output) until ``close_connection``, ``shutdown`` or
        ``cleanup``.
        """
        async with self._execute_lock:
            conn = await self._execute_connection()
            try:
                return await conn.execute(
                    code, on_output, timeout, is_alive=lambda: self.poll() is None)
            except ConnectionAbortedError:
                raise KernelDied(f"kernel {self.kernel_type.id!r} ended while running code",
                                 self.output, self.poll()) from None

    async def execute_silently(self, code: str, timeout: float | None = 30.0) -> Message:
        """Run ``code`` as Jupyter's silent request (no history, no execution count, no
        output broadcast as the code's); the execute_reply. Leaves no connection open."""
        async with self._execute_lock:
            conn = await self._execute_connection()
            try:
                return await conn.execute(code, None, timeout, silent=True,
                                          is_alive=lambda: self.poll() is None)
            except ConnectionAbortedError:
                raise KernelDied(f"kernel {self.kernel_type.id!r} ended while running code",
                                 self.output, self.poll()) from None
            finally:
                self.close_connection()

    async def interrupt(self) -> None:
        """Interrupt what the kernel is doing, honouring its ``interrupt_mode``.

        ``signal``: SIGINT wherever the kernel runs; ``message``: ``interrupt_request``
        on the control channel.
        """
        if self.kernel_type.interrupt_mode == "message":
            async with self.connect() as conn:
                if await conn.interrupt() is None:
                    raise KernelProviderError(
                        f"kernel {self.kernel_type.id!r} did not answer interrupt_request;"
                        " it may be stuck: restart it")
        else:
            await self.signal(_signal.SIGINT)

    async def shutdown(self, timeout: float = 10.0) -> int | None:
        """Stop the kernel politely, then firmly; then ``cleanup``. Returns the status.

        ``shutdown_request`` on control and up to ``timeout`` seconds to exit, then
        SIGTERM and a few seconds more, then ``kill``.
        """
        # Our sockets go first: ZeroMQ would keep reconnecting to a kernel that is ending
        # (through tunnels, too, while they are torn down).
        self.close_connection()
        if self.poll() is None:
            with contextlib.suppress(Exception):
                async with self.connect() as conn:
                    await conn.shutdown(timeout=min(timeout, 5.0))
            if not await self._wait_for(timeout):
                with contextlib.suppress(ProcessLookupError, KernelProviderError):
                    await self.signal(_signal.SIGTERM)
                if not await self._wait_for(3.0):
                    await self.kill()
        status = await self.wait()
        await self.cleanup()
        return status

    async def release(self) -> None:
        """Be done with the kernel as fast as possible: ``shutdown`` here; a kernel held
        by another process (the pool service) goes back to it, which shuts it down
        while this process goes on. For callers that do not need the exit status."""
        await self.shutdown()

    async def _wait_for(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.wait(), seconds)
        except (asyncio.TimeoutError, TimeoutError):
            return False
        return True

    async def restart(self, timeout: float = 10.0) -> KernelLauncher:
        """Shut this kernel down and start the same kernel type again.

        The new kernel reuses the key and, where it can, the ports, so clients connected
        to the old one keep working. Returns the new launcher; this one is cleaned up.
        """
        if self._owner is None:
            raise KernelProviderError(
                f"kernel {self.kernel_type.id!r} cannot restart: it was not started through"
                " KernelFinder.launch (which knows how to start it again)")
        await self.shutdown(timeout)
        options = replace(self.launch_options, connection_info=dict(self.connection_info))  # type: ignore[arg-type]
        successor = await self._owner.relaunch(self, options)
        self._restarted = True
        return successor

    async def cleanup(self) -> None:
        """Free everything the launch made; kills the kernel if it still runs. Idempotent."""
        async with self._cleanup_lock:
            if self._cleaned:
                return
            self._cleaned = True
            self.close_connection()
            freed = False
            try:
                if self.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        await self.kill()
                    await self.wait()
                await self.free_resources()
                freed = True
            finally:
                self.close_connection()
                remove_ipc_files(self.connection_info)
                if self.connection_file != self.launch_options.connection_file:
                    remove_connection_file(self.connection_file)  # ours, not the caller's
                if freed:  # else the reaper still tries, at this process's end
                    self.cancel_undos()
                if self._owner is not None:
                    try:
                        self._owner.stopped(self, self.poll())
                    except Exception:
                        log.exception("kernel_stopped hook failed for %s", self.kernel_type.id)
