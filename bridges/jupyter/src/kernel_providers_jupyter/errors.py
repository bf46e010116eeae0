"""Errors as Jupyter's web clients see them."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

__all__ = ["shown_to_clients"]

E = TypeVar("E", bound=Exception)


@functools.cache
def _shown_class(cls: type[Exception]) -> type[Exception]:
    from tornado.web import HTTPError

    def message(self: Any) -> str:
        return str(self._log_message)

    return type(cls.__name__, (cls, HTTPError), {
        "__module__": cls.__module__, "__doc__": cls.__doc__, "__str__": message})


def shown_to_clients(error: E, message: str | None = None) -> E:
    """``error`` (with ``message``, else its own) as jupyter_server shows it to its web
    clients: still of its own class, and also a tornado ``HTTPError``, whose message
    jupyter_server sends in its JSON reply (JupyterLab's "Error Starting Kernel" dialog
    shows it), where any other exception becomes "Unhandled error"."""
    cls = _shown_class(type(error))  # type: ignore[arg-type]
    shown = cls.__new__(cls)
    shown.__dict__.update(error.__dict__)
    shown.__dict__.update(status_code=500, reason=None,
                          _log_message=str(error) if message is None else message)
    return shown  # type: ignore[return-value]
