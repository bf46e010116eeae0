"""One object per process, made on first use and made afresh after ``fork``."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerProcess"]

T = TypeVar("T")


class PerProcess(Generic[T]):
    """One ``T`` per process: made on first use (once, whatever the threads), and made
    afresh in a forked child, which has none of its parent's threads and must not share
    its sockets or locks (nbclient's parallel runs fork). ``in_child`` lets the child
    release what it inherited (e.g. close a pipe) before the ``T`` is dropped."""

    def __init__(self, make: Callable[[], T],
                 in_child: Callable[[T], None] | None = None) -> None:
        self._make, self._in_child = make, in_child
        self._value: T | None = None
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def get(self) -> T:
        """The process's ``T``, made now if there is none yet."""
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value

    def _after_fork(self) -> None:
        if self._value is not None and self._in_child is not None:
            self._in_child(self._value)
        self.forget()

    def forget(self) -> None:
        """Drop the ``T`` (and a lock a vanished thread may hold): the next ``get``
        makes a new one."""
        self._value, self._lock = None, threading.Lock()
