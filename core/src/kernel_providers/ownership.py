"""Telling what we left behind from everything else, for ``kernel-providers cleanup``.

A kernel that outlives its launcher (a container, a batch job) carries three facts:
the launching process's *stamp* (host, pid and start time: a live launcher is never
cleaned up after), and an *owner tag*, an HMAC of the stamp and the kernel's own facts
under a secret only this user on this machine holds (``$XDG_DATA_HOME/kernel-providers/
owner-secret``, 0600). ``cleanup`` only touches what carries a tag it can verify: a
look-alike with copied labels, or a kernel launched by another user or another machine
with the same hostname on a shared engine, is never ours to judge.

A process that re-attaches to such a kernel (labels cannot change) *claims* it: a
0600 file in the runtime dir naming the kernel and the claiming process's stamp, so
``cleanup`` leaves it alone while that process lives.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
from pathlib import Path

from .connection import runtime_dir

__all__ = ["claim", "claimed", "owner_tag", "process_stamp", "remove_stale_files",
           "stamp_alive", "verify_tag"]


def process_stamp(pid: int | None = None) -> str:
    """``host:pid:start-time`` of a process: tells a live launcher from a reused pid."""
    pid = os.getpid() if pid is None else pid
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "?"
    return f"{socket.gethostname()}:{pid}:{start}"


def stamp_alive(stamp: str) -> bool | None:
    """Whether the process of ``stamp`` still runs; ``None`` when it ran on another
    host (not ours to judge)."""
    host, _, rest = stamp.partition(":")
    pid = rest.split(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return None
    return process_stamp(int(pid)) == stamp


def _secret() -> bytes:
    folder = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share",
                  "kernel-providers")
    path = folder / "owner-secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path.read_bytes()


def owner_tag(*facts: str) -> str:
    """A tag only this user on this machine can make for ``facts`` (the launcher's stamp,
    the kernel id ...): a fresh nonce and its HMAC."""
    nonce = secrets.token_hex(8)
    return f"{nonce}.{_mac(nonce, facts)}"


def verify_tag(tag: str, *facts: str) -> bool:
    """Whether ``tag`` was made by :func:`owner_tag` here, for exactly ``facts``."""
    nonce, _, mac = tag.partition(".")
    return bool(nonce and mac) and hmac.compare_digest(mac, _mac(nonce, facts))


def _mac(nonce: str, facts: tuple[str, ...]) -> str:
    message = "\0".join((nonce, *facts)).encode()
    return hmac.new(_secret(), message, hashlib.sha256).hexdigest()


def _claim_file(resource: str) -> Path:
    digest = hashlib.sha256(resource.encode()).hexdigest()[:32]
    return runtime_dir() / f"kernel-providers-claim-{digest}.json"


def claim(resource: str) -> Path:
    """Mark ``resource`` (e.g. ``docker:<container id>``) as this process's; returns the
    claim file, which the claimant removes when it lets go."""
    path = _claim_file(resource)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"resource": resource, "owner": process_stamp()}, f)
    return path


def claimed(resource: str) -> bool:
    """Whether a live process claimed ``resource``."""
    try:
        record = json.loads(_claim_file(resource).read_text())
        return record.get("resource") == resource and bool(stamp_alive(record["owner"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


_OUR_CONNECTION_FILE = re.compile(r"kernel-kp-(\d+)-[0-9a-f]+\.json")


def remove_stale_files() -> list[str]:
    """Remove, from the runtime dir, the connection files this user's launchers wrote
    and claim files whose owner is gone; what was removed. A file of a live process (or
    of a reused pid: then it stays, to be safe) and anything not ours are never touched."""
    removed = []
    folder = runtime_dir()
    for path in sorted(folder.glob("kernel-*.json")):
        mine = _OUR_CONNECTION_FILE.fullmatch(path.name)
        if mine is None or _pid_alive(int(mine.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(f"connection file {path}")
    for path in sorted(folder.glob("kernel-providers-claim-*.json")):
        try:
            owner = json.loads(path.read_text())["owner"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if stamp_alive(str(owner)) is False:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(f"claim file {path}")
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True

