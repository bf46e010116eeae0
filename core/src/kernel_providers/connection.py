"""Connection info and connection files: fresh keys, loopback, 0600 files in a 0700 dir."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from .errors import LaunchFailed
from .types import ConnectionInfo, LaunchOptions

__all__ = [
    "PORT_NAMES",
    "allocate_ports",
    "dictated_connection",
    "new_connection_info",
    "read_connection_file",
    "remove_connection_file",
    "remove_ipc_files",
    "runtime_dir",
    "write_connection_file",
]

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def runtime_dir() -> Path:
    """Jupyter's runtime dir (``JUPYTER_RUNTIME_DIR`` honoured), created 0700."""
    path = _plain_runtime_dir()
    if path is None:
        try:
            from jupyter_core.paths import jupyter_runtime_dir

            path = Path(jupyter_runtime_dir())
        except ImportError:  # the core does not depend on jupyter_core; its default
            home = Path.home()
            path = (home / "Library" / "Jupyter" if sys.platform == "darwin"
                    else home / ".local" / "share" / "jupyter") / "runtime"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise LaunchFailed(f"cannot create Jupyter's runtime dir {path} (where connection"
                           f" files go): {exc.strerror}; set JUPYTER_RUNTIME_DIR to a folder"
                           " you can write") from None
    return path


def _plain_runtime_dir() -> Path | None:
    """The runtime dir where jupyter_core's rule needs no jupyter_core (whose import
    costs a CLI process ~30 ms): the variables that set it, or Linux's default; None
    where only jupyter_core knows (platformdirs, macOS, Windows)."""
    if os.environ.get("JUPYTER_RUNTIME_DIR"):
        return Path(os.environ["JUPYTER_RUNTIME_DIR"])
    if os.environ.get("JUPYTER_DATA_DIR"):
        return Path(os.environ["JUPYTER_DATA_DIR"], "runtime")
    if os.environ.get("JUPYTER_PLATFORM_DIRS") or sys.platform in ("darwin", "win32"):
        return None
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.realpath(os.path.expanduser("~")), ".local", "share")
    return Path(data, "jupyter", "runtime")


def new_connection_info(ports: dict[str, int] | None = None, ip: str = "127.0.0.1",
                        kernel_name: str = "", transport: str = "tcp") -> ConnectionInfo:
    """Connection info with a fresh 256-bit key; ports default to 0 (the kernel picks)."""
    ports = ports or {}
    info: ConnectionInfo = {
        "transport": transport,
        "ip": ip,
        "key": secrets.token_hex(32),
        "signature_scheme": "hmac-sha256",
        "kernel_name": kernel_name,
    }
    for name in PORT_NAMES:
        info[name] = ports.get(name, 0)  # type: ignore[literal-required]
    return info


def allocate_ports(ip: str = "127.0.0.1") -> dict[str, int]:
    """Five distinct free TCP ports on ``ip``, for kernels that cannot pick their own.

    Racy by nature (another process may take one before the kernel binds it): callers
    retry with new ports when the kernel reports a bind failure.
    """
    socks = []
    try:
        for _ in PORT_NAMES:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((ip, 0))
            socks.append(sock)
        return {name: s.getsockname()[1] for name, s in zip(PORT_NAMES, socks, strict=True)}
    finally:
        for sock in socks:
            sock.close()


def write_connection_file(info: ConnectionInfo, directory: Path | None = None,
                          prefix: str = "kernel") -> Path:
    """Write ``info`` to a new file, readable and writable by its owner only (0600).

    Its name carries this process's pid (``kernel-kp-<pid>-<random>.json``): a file of
    a launcher that died without cleaning up is recognised as ours, and stale, by
    ``kernel-providers cleanup`` (a kernel may rewrite the file's content)."""
    directory = directory or runtime_dir()
    path = directory / f"{prefix}-kp-{os.getpid()}-{secrets.token_hex(12)}.json"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise LaunchFailed(f"cannot write a connection file in {directory}: {exc.strerror};"
                           " set JUPYTER_RUNTIME_DIR to a folder you can write") from None
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=1)
    return path


def read_connection_file(path: Path) -> ConnectionInfo | None:
    """The info in ``path``, or ``None`` while the file is missing or half written."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: nested thousands deep
        return None
    return data if isinstance(data, dict) else None  # type: ignore[return-value]


def remove_connection_file(path: Path | str | None) -> None:
    """Remove a connection file if it is still there."""
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def remove_ipc_files(info: ConnectionInfo) -> None:
    """Remove the socket files of an ipc connection (kernels leave them behind)."""
    if info.get("transport") != "ipc":
        return
    for name in PORT_NAMES:
        port = info.get(name)
        if port:
            with contextlib.suppress(OSError):
                os.unlink(f"{info.get('ip')}-{port}")


_LOOPBACK = ("127.0.0.1", "localhost")


def _read_dictated(path: Path, where: str) -> dict[str, Any]:
    """The JSON object in a caller's connection file, its strings checked; LaunchFailed
    naming ``where`` (the kernel and the file) and what is wrong."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise LaunchFailed(f"{where} cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise LaunchFailed(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:  # json recurses once per level: '[[[[...' thousands deep
        raise LaunchFailed(f"{where} is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("key", ""), str):
        raise LaunchFailed(f"{where} must hold a JSON object with a string 'key'")
    for name in ("ip", "signature_scheme"):  # the kernel would fail on them, less clearly
        if not isinstance(data.get(name, ""), str):
            raise LaunchFailed(f"{where}: {name!r} must be a string")
    return data


def dictated_connection(options: LaunchOptions, kernel_id: str,
                        remote: bool = False) -> ConnectionInfo | None:
    """The connection the caller dictates with ``options.connection_file``, checked; ``None``
    when it dictates none.

    ``remote``: the kernel runs elsewhere and is reached through published ports or
    forwards, which exist for TCP on a loopback address with every port given. Raises
    LaunchFailed naming the file and what is wrong.
    """
    if not options.connection_file:
        requested = (options.connection_info or {}).get("transport", "tcp")
        if remote and requested != "tcp":  # never silently another transport
            raise LaunchFailed(
                f"kernel {kernel_id!r} cannot use transport {requested!r}: it reaches only"
                " kernels on this machine; use tcp (the default) for this kernel")
        return None
    path = options.connection_file
    where = f"kernel {kernel_id!r}: connection file {path}"
    data = _read_dictated(Path(path), where)
    transport = data.get("transport", "tcp")
    if transport not in ("tcp", "ipc"):
        raise LaunchFailed(f"{where}: transport {transport!r} is not 'tcp' or 'ipc'")
    ports = {name: data.get(name, 0) for name in PORT_NAMES}
    if not all(type(p) is int and 0 <= p < 65536 for p in ports.values()):  # true is no port
        raise LaunchFailed(f"{where}: every port ({', '.join(PORT_NAMES)}) must be a number"
                           " from 0 to 65535")
    if remote:
        if transport != "tcp":
            raise LaunchFailed(
                f"{where} asks for transport {transport!r}, which reaches only kernels on"
                " this machine; use tcp (the default) for this kernel")
        if data.get("ip", "127.0.0.1") not in _LOOPBACK:
            raise LaunchFailed(
                f"{where} asks for ip {data.get('ip')!r}; kernels in containers or on other"
                " hosts are reachable on this machine's loopback only: use 127.0.0.1")
        if not all(ports.values()):
            raise LaunchFailed(f"{where} must give all five ports for this kernel")
    info = {**data, "transport": transport, "ip": data.get("ip", "127.0.0.1"), **ports}
    info.setdefault("signature_scheme", "hmac-sha256")
    return info  # type: ignore[return-value]
