"""Nothing outlives the process that launched it: a per-process reaper.

The first launch that has something to undo starts a small companion process (the
reaper: ``python -m kernel_providers.orphans``) whose stdin is a pipe from this process.
Launches tell it what to undo if this process ends without cleaning up — a local
kernel's process group, a connection file, a call into a provider (remove a container)
— and take it back once they cleaned up themselves. When this process ends by any means
(a crash, SIGKILL, a script that never called ``shutdown``) the kernel closes the pipe,
the reaper reads its end and undoes what is still registered, then exits. A process
that cleaned up everything leaves it nothing to do. (The same idea as testcontainers'
Ryuk, without a container.)

Actions are JSON objects, carried out in reverse order of registration:
``{"kill_group": pgid}``, ``{"remove_file": path}`` and
``{"call": "module:function", "kwargs": {...}}`` (a provider's own undo, imported in the
reaper; it must finish within a few seconds).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import IO, Any

from .per_process import PerProcess

__all__ = ["Undo", "undo_if_orphaned"]

log = logging.getLogger(__name__)

#: how long the reaper gives each provider call before it moves on (seconds)
CALL_SECONDS = 4.0


class Undo:
    """A registration with the reaper; :meth:`cancel` takes it back (idempotent)."""

    def __init__(self, reaper: _Reaper | _NoReaper | None, token: int) -> None:
        self._reaper, self._token = reaper, token

    def cancel(self) -> None:
        """The launch cleaned up itself: the reaper forgets the action."""
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.send({"drop": self._token})


def undo_if_orphaned(action: dict[str, Any]) -> Undo:
    """Have the reaper carry out ``action`` if this process ends before the returned
    :class:`Undo` is cancelled. Never raises: without a reaper (it could not start, or
    ``KERNEL_PROVIDERS_NO_REAPER`` is set) the action is only logged at debug level."""
    from .switches import switched_on

    if switched_on("KERNEL_PROVIDERS_NO_REAPER"):
        return Undo(None, 0)
    reaper = _REAPER.get()
    token = reaper.send({"add": action})
    if token is None:  # no reaper: try again at the next launch
        _REAPER.forget()
        return Undo(None, 0)
    return Undo(reaper, token)


class _Reaper:
    """This process's end of the pipe to its reaper."""

    def __init__(self) -> None:
        # Its own session: Ctrl-C and a terminal's hangup reach this process, not it.
        self._process = subprocess.Popen(
            [sys.executable, "-m", "kernel_providers.orphans"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            close_fds=True)
        assert self._process.stdin is not None
        self._pipe: IO[bytes] | None = self._process.stdin
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        # The reaper imports provider modules from where this process found them.
        self.send({"sys_path": [p for p in sys.path if p]})

    def send(self, message: dict[str, Any]) -> int | None:
        """Write one message; the token of an ``add`` (None when the pipe is broken)."""
        with self._lock:
            if "add" in message:
                message = {**message, "token": next(self._tokens)}
            try:
                if self._pipe is None:
                    return None
                self._pipe.write(json.dumps(message).encode() + b"\n")
                self._pipe.flush()
            except (OSError, ValueError) as exc:  # the reaper died: nothing to do about it
                log.debug("the reaper is gone (%s): %s not registered", exc, message)
                return None
            return message.get("token")

    def close_in_child(self) -> None:
        """In a forked child: let go of the parent's pipe, so that the parent's reaper
        still sees the parent's end (the child starts its own when it launches)."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            with contextlib.suppress(OSError):
                os.close(pipe.fileno())


class _NoReaper:
    """Stands in for a reaper that could not start (retried at the next launch)."""

    def send(self, message: dict[str, Any]) -> int | None:
        return None


def _start_reaper() -> _Reaper | _NoReaper:
    try:
        return _Reaper()
    except OSError as exc:
        log.warning("cannot start the reaper that ends kernels left by a crash (%s);"
                    " `kernel-providers cleanup` removes them", exc)
        return _NoReaper()


def _release(reaper: _Reaper | _NoReaper) -> None:
    if isinstance(reaper, _Reaper):
        reaper.close_in_child()


_REAPER: PerProcess[_Reaper | _NoReaper] = PerProcess(_start_reaper, _release)


# --- the reaper process -------------------------------------------------------------


def carry_out(action: dict[str, Any]) -> None:
    """Undo one registered thing; failures are ignored (there is nobody to tell)."""
    if "kill_group" in action:
        with contextlib.suppress(OSError):
            os.killpg(int(action["kill_group"]), signal.SIGKILL)
    elif "remove_file" in action:
        with contextlib.suppress(OSError):
            os.unlink(action["remove_file"])
    elif "call" in action:
        module, _, name = str(action["call"]).partition(":")
        function = getattr(importlib.import_module(module), name)
        worker = threading.Thread(target=function, kwargs=action.get("kwargs", {}),
                                  daemon=True)
        worker.start()
        worker.join(CALL_SECONDS)


def main() -> None:
    """The reaper: collect registrations until stdin ends, then undo what is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pending: dict[int, dict[str, Any]] = {}
    for line in sys.stdin.buffer:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            message = json.loads(line)
            if "sys_path" in message:
                sys.path[:0] = [p for p in message["sys_path"] if p not in sys.path]
            elif "add" in message:
                pending[int(message["token"])] = message["add"]
            elif "drop" in message:
                pending.pop(int(message["drop"]), None)
    for token in sorted(pending, reverse=True):
        with contextlib.suppress(Exception):
            carry_out(pending[token])


if __name__ == "__main__":
    main()
