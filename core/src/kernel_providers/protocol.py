"""The few Jupyter messages the core itself speaks, on pyzmq.

Signed messages (HMAC-SHA256), the ready check, ``execute_request`` with output
streaming, ``interrupt_request`` and ``shutdown_request``. Full clients (jupyter_client,
nbclient) remain the tools for everything else.

A connection's iopub subscription receives what *every* client of the kernel causes; a
subscription nobody reads makes ZeroMQ queue all of it, here and in the kernel (issue
18). So once subscribed, a connection reads iopub continuously in a background task,
hands each message to the request it answers and drops the rest unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import zmq
import zmq.asyncio

from .errors import KernelProviderError
from .types import ConnectionInfo

__all__ = ["DELIMITER", "KernelConnection", "Message", "ProtocolError", "Session",
           "heartbeat_answers"]

DELIMITER = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.3"

Message = dict[str, Any]
OutputCallback = Callable[[Message], None]

# A backstop only (the reader keeps the queue empty): what ZeroMQ may queue on our side
# while the event loop does not run. Counted in messages, whatever their size.
IOPUB_RCVHWM = 32

log = logging.getLogger(__name__)

_context: zmq.asyncio.Context | None = None
_context_pid = 0


def _zmq_context() -> zmq.asyncio.Context:
    # One context per process: creating one starts I/O threads, which costs a launch
    # time. A forked child gets a new one: the parent's I/O threads are not in it.
    global _context, _context_pid
    if _context is None or _context.closed or _context_pid != os.getpid():
        _context, _context_pid = zmq.asyncio.Context(), os.getpid()
    return _context


def heartbeat_answers(info: ConnectionInfo, timeout: float = 1.0) -> bool:
    """Whether the kernel's heartbeat echoes a ping within ``timeout`` seconds: it runs
    and its ports are reachable. Blocking (call it from a thread)."""
    if info.get("transport", "tcp") == "ipc":
        url = f"ipc://{info['ip']}-{info['hb_port']}"
    else:
        url = f"tcp://{info['ip']}:{info['hb_port']}"
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.REQ)
    sock.linger = 0
    try:
        sock.connect(url)
        sock.send(b"ping")
        return bool(sock.poll(int(timeout * 1000)))
    finally:
        sock.close()



def _new_id() -> str:
    """A random message or session id (as uuid4().hex, without importing uuid, whose
    import costs a CLI process ~10 ms)."""
    return os.urandom(16).hex()

class ProtocolError(KernelProviderError):
    """A message could not be read: bad framing, bad JSON or a wrong signature."""


class Session:
    """Builds and reads signed Jupyter wire messages for one kernel's key."""

    def __init__(self, key: str | bytes, signature_scheme: str = "hmac-sha256") -> None:
        if signature_scheme not in ("hmac-sha256", ""):
            raise ProtocolError(
                f"unsupported signature scheme {signature_scheme!r}: only hmac-sha256 is"
                " spoken by kernel-providers"
            )
        self.key = key.encode() if isinstance(key, str) else key
        self.session_id = _new_id()
        self.username = os.environ.get("USER", "kernel-providers")

    def sign(self, parts: list[bytes]) -> bytes:
        """The hex HMAC-SHA256 of header, parent header, metadata and content."""
        if not self.key:
            return b""
        mac = hmac.new(self.key, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()

    def message(self, msg_type: str, content: dict[str, Any] | None = None) -> Message:
        """A new message dict with a fresh header."""
        return {
            "header": {
                "msg_id": _new_id(),
                "msg_type": msg_type,
                "username": self.username,
                "session": self.session_id,
                "date": datetime.now(timezone.utc).isoformat(),
                "version": PROTOCOL_VERSION,
            },
            "parent_header": {},
            "metadata": {},
            "content": content or {},
            "buffers": [],
        }

    def serialize(self, msg: Message) -> list[bytes]:
        """Wire frames (delimiter, signature, four JSON parts) for ``msg``."""
        parts = [
            json.dumps(msg[name], default=str).encode()
            for name in ("header", "parent_header", "metadata", "content")
        ]
        return [DELIMITER, self.sign(parts), *parts]

    def deserialize(self, frames: list[bytes]) -> Message:
        """Read wire frames (identities allowed before the delimiter); check the signature."""
        try:
            start = frames.index(DELIMITER) + 1
        except ValueError:
            raise ProtocolError("message without the <IDS|MSG> delimiter") from None
        if len(frames) < start + 5:
            raise ProtocolError(f"message with {len(frames) - start} parts, expected >= 5")
        signature, parts = frames[start], frames[start + 1 : start + 5]
        if self.key and not hmac.compare_digest(signature, self.sign(parts)):
            raise ProtocolError("message with an invalid signature (wrong key?)")
        try:
            header, parent, metadata, content = (json.loads(p) for p in parts)
        except ValueError as exc:
            raise ProtocolError(f"message with invalid JSON: {exc}") from None
        return {
            "header": header,
            "parent_header": parent,
            "metadata": metadata,
            "content": content,
            "buffers": frames[start + 5 :],
            "msg_type": header.get("msg_type"),
        }


class KernelConnection:
    """Shell, iopub and control sockets to one kernel, opened on demand.

    Use as ``async with KernelConnection(info) as conn:``; every socket closes on exit.
    From the first ``wait_ready`` or ``execute`` on, a background task reads iopub until
    ``close``: messages answering a request of this connection go to that request, the
    rest (other clients' output) are dropped unread, so nothing piles up.
    """

    def __init__(self, connection_info: ConnectionInfo) -> None:
        self.info = connection_info
        self.session = Session(connection_info.get("key", ""),
                               connection_info.get("signature_scheme", "hmac-sha256"))
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        self._reader: asyncio.Task[None] | None = None
        # parent msg_id -> who wants the iopub messages that request causes
        self._iopub_handlers: dict[str, Callable[[Message], None]] = {}
        # Set by the first iopub message read: the subscription is in place.
        self._iopub_live = asyncio.Event()

    async def __aenter__(self) -> KernelConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading iopub and close every socket this connection opened."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        self._iopub_live = asyncio.Event()  # a reopened socket must be proven again
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()

    def _url(self, channel: str) -> str:
        transport = self.info.get("transport", "tcp")
        ip = self.info.get("ip", "127.0.0.1")
        port = self.info[f"{channel}_port"]  # type: ignore[literal-required]
        if transport == "ipc":
            return f"ipc://{ip}-{port}"
        return f"{transport}://{ip}:{port}"

    def socket(self, channel: str) -> zmq.asyncio.Socket:
        """The socket of ``channel`` (shell, iopub or control), connected on first use."""
        if channel not in self._sockets:
            kind = zmq.SUB if channel == "iopub" else zmq.DEALER
            sock = _zmq_context().socket(kind)
            sock.linger = 0
            if kind == zmq.SUB:
                sock.rcvhwm = IOPUB_RCVHWM
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            else:
                sock.identity = _new_id().encode()
            sock.connect(self._url(channel))
            self._sockets[channel] = sock
        return self._sockets[channel]

    async def send(self, channel: str, msg_type: str,
                   content: dict[str, Any] | None = None) -> Message:
        """Send a request on ``channel``; returns the message sent (for its msg_id)."""
        msg = self.session.message(msg_type, content)
        await self._send(channel, msg)
        return msg

    async def _send(self, channel: str, msg: Message) -> None:
        await self.socket(channel).send_multipart(self.session.serialize(msg))

    async def receive(self, channel: str, timeout: float | None) -> Message | None:
        """The next message on ``channel``, or ``None`` after ``timeout`` seconds.

        Not for iopub once the background reader runs (``wait_ready`` and ``execute``
        start it): it owns that socket.
        """
        if channel == "iopub" and self.listening:
            raise RuntimeError("iopub is read by this connection's background reader")
        sock = self.socket(channel)
        if timeout is not None and timeout != float("inf") and not await sock.poll(
            int(timeout * 1000)
        ):
            return None
        return self.session.deserialize(await sock.recv_multipart())

    async def request(self, channel: str, msg_type: str, content: dict[str, Any] | None = None,
                      timeout: float = 10.0) -> Message | None:
        """Send a request and return its reply, or ``None`` if none came in ``timeout``."""
        sent = await self.send(channel, msg_type, content)
        return await self.reply_to(channel, sent, timeout)

    async def reply_to(self, channel: str, sent: Message, timeout: float) -> Message | None:
        """Wait for the reply to ``sent``, skipping late replies to older requests."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            reply = await self.receive(channel, left)
            if reply is None:
                return None
            if reply["parent_header"].get("msg_id") == sent["header"]["msg_id"]:
                return reply
        return None

    @property
    def listening(self) -> bool:
        """Whether the background iopub reader runs (it ends with ``close`` or with
        the event loop it was started on)."""
        return self._reader is not None and not self._reader.done()

    def _read_iopub(self) -> asyncio.Task[None]:
        """The background iopub reader, started on first use (on the running loop)."""
        if self._reader is None:
            self.socket("iopub")
            self._reader = asyncio.ensure_future(self._iopub_loop())
        return self._reader

    async def _iopub_loop(self) -> None:
        sock = self.socket("iopub")
        count = 0
        while True:
            try:
                # copy=False: the frames of a message we drop are never copied.
                frames = await sock.recv_multipart(copy=False)
            except zmq.ZMQError:  # the socket was closed under us
                return
            self._iopub_live.set()
            count += 1
            if count % 64 == 0:
                # A ready message is returned without yielding: let the loop breathe
                # while another client floods iopub.
                await asyncio.sleep(0)
            msg_id = _parent_msg_id(frames)
            handler = self._iopub_handlers.get(msg_id) if msg_id else None
            if handler is None:
                continue  # another client's traffic (or a late one of ours): dropped
            try:
                handler(self.session.deserialize([f.bytes for f in frames]))
            except ProtocolError as exc:
                log.warning("dropped an iopub message: %s", exc)
            except Exception:  # the reader must outlive any one odd message
                log.exception("dropped an iopub message")

    async def wait_ready(self, timeout: float, is_alive: Callable[[], bool]) -> Message:
        """Return the ``kernel_info_reply`` once shell answers **and** iopub delivers.

        A SUB socket misses what the kernel publishes before the subscription is in
        place, so kernel_info requests are repeated until iopub shows a message.
        Raises ``TimeoutError`` after ``timeout`` and ``ConnectionAbortedError`` as soon
        as ``is_alive()`` turns false.
        """
        deadline = time.monotonic() + timeout
        self._read_iopub()
        info: Message | None = None
        attempt_timeout = 0.25
        while True:
            if not is_alive():
                raise ConnectionAbortedError("the kernel ended before it was ready")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no kernel_info_reply" if info is None else "iopub silent")
            try:
                # A send waits while shell has no peer (its handshake failed): bounded.
                sent = await asyncio.wait_for(self.send("shell", "kernel_info_request"),
                                              min(attempt_timeout, left))
            except (asyncio.TimeoutError, TimeoutError):
                attempt_timeout = min(attempt_timeout * 2, 1.0)
                continue
            reply = await self.reply_to("shell", sent, min(attempt_timeout, left))
            if reply is not None:
                info = reply
                if await self._iopub_delivered(min(0.2, max(left, 0))):
                    return info
            attempt_timeout = min(attempt_timeout * 2, 1.0)

    async def _iopub_delivered(self, timeout: float) -> bool:
        # Any message read proves the subscription (the kernel publishes its busy/idle
        # status around each kernel_info request).
        if not self._iopub_live.is_set():
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._iopub_live.wait(), timeout)
        return self._iopub_live.is_set()

    async def execute(self, code: str, on_output: OutputCallback | None = None,
                      timeout: float | None = None,
                      is_alive: Callable[[], bool] | None = None,
                      silent: bool = False) -> Message:
        """Run ``code``; pass every iopub message it causes to ``on_output``.
        ``silent``: as Jupyter's silent request (no history, no execution count, no
        broadcast of the code).

        Returns the ``execute_reply`` once the kernel is idle again. Raises
        ``TimeoutError`` after ``timeout`` and ``ConnectionAbortedError`` if the kernel
        ends meanwhile (checked through ``is_alive``). If ``on_output`` raises, the
        execution's later output is dropped, and the execution still waited for. Prove
        the iopub subscription first (``wait_ready`` on this connection), or the first
        outputs may be missed.
        """
        reader = self._read_iopub()
        idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = _execution_output(idle, on_output)
        sent = self.session.message("execute_request", {
            "code": code, "silent": silent, "store_history": not silent,
            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
        })
        msg_id = sent["header"]["msg_id"]
        # Registered before sending: the reader may see the first output at once.
        self._iopub_handlers[msg_id] = handle
        reply_task: asyncio.Future[Message | None] | None = None
        try:
            await self._send("shell", sent)
            reply_task = asyncio.ensure_future(self.reply_to("shell", sent, float("inf")))
            await _both_done(idle, reply_task, reader, timeout, is_alive)
        finally:
            self._iopub_handlers.pop(msg_id, None)
            if reply_task is not None:
                if reply_task.done() and not reply_task.cancelled():
                    reply_task.exception()  # retrieved: no "never retrieved" log
                reply_task.cancel()
            if not idle.done():
                idle.cancel()
        reply = reply_task.result()
        assert reply is not None  # reply_to without a deadline only returns a reply
        return reply

    async def interrupt(self, timeout: float = 5.0) -> Message | None:
        """Send ``interrupt_request`` on control; the reply, or ``None`` if none came."""
        return await self.request("control", "interrupt_request", {}, timeout)

    async def shutdown(self, restart: bool = False, timeout: float = 5.0) -> Message | None:
        """Send ``shutdown_request`` on control; the reply, or ``None`` if none came."""
        return await self.request("control", "shutdown_request", {"restart": restart}, timeout)


def _parent_msg_id(frames: list[zmq.Frame]) -> str | None:
    """The parent msg_id of a raw iopub message, reading only its small frames."""
    start = next((i for i, frame in enumerate(frames)
                  if len(frame) == len(DELIMITER) and frame.bytes == DELIMITER), None)
    if start is None or len(frames) < start + 6:
        return None
    try:
        parent = json.loads(frames[start + 3].bytes)
    except ValueError:
        return None
    msg_id = parent.get("msg_id") if isinstance(parent, dict) else None
    return msg_id if isinstance(msg_id, str) else None


def _execution_output(idle: asyncio.Future[None],
                      on_output: OutputCallback | None) -> Callable[[Message], None]:
    """The iopub handler of one execution: resolves ``idle`` when the kernel is idle
    again and passes everything else to ``on_output`` (dropped after it raised once)."""
    deliver = on_output

    def handle(msg: Message) -> None:
        nonlocal deliver
        if idle.done():
            return
        if msg["msg_type"] == "status":
            if msg["content"].get("execution_state") == "idle":
                idle.set_result(None)
        elif deliver is not None:
            try:
                deliver(msg)
            except Exception as exc:
                # Not fatal to the execution: its caller must still learn how it ended
                # (the CLI writing into a closed pipe shuts the kernel down).
                log.debug("on_output raised %r; later output dropped", exc)
                deliver = None

    return handle


async def _both_done(idle: asyncio.Future[None], reply: asyncio.Future[Any],
                     reader: asyncio.Future[Any], timeout: float | None,
                     is_alive: Callable[[], bool] | None) -> None:
    """Wait until the kernel is idle and replied; ProtocolError if the connection
    closed meanwhile, TimeoutError after ``timeout`` s, ConnectionAbortedError if the
    kernel ended."""
    pending: set[asyncio.Future[Any]] = {idle, reply}
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        done, pending = await asyncio.wait(pending, timeout=0.2)
        if (pending and reader.done()) or any(f.cancelled() for f in done):
            # close() ended the reader and cancelled what the sockets awaited
            raise ProtocolError("the connection was closed while code was running")
        for future in done:
            future.result()  # a broken shell socket raises here
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"code still running after {timeout} s")
        if pending and is_alive is not None and not is_alive():
            raise ConnectionAbortedError("the kernel ended while running code")
