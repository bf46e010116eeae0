"""SSH connections per host, shared by discovery and by the kernels on that host."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_providers.sdk import ProviderUnavailable

from .config import SSHConfig

if TYPE_CHECKING:
    import asyncssh

__all__ = ["HostPool"]


@dataclass
class _Entry:
    loop: asyncio.AbstractEventLoop
    conn: asyncssh.SSHClientConnection
    users: int = 0
    sftp: asyncssh.SFTPClient | None = None


class HostPool:
    """Connections by host alias. Kernels on a host share one connection (every forward
    and supervisor rides it) up to ``kernels_per_connection`` — OpenSSH allows 10
    sessions per connection by default (MaxSessions) — and a further connection is
    opened beyond that. A connection closes when its last kernel is cleaned up; it
    belongs to the event loop that opened it."""

    def __init__(self, config: SSHConfig) -> None:
        self.config = config
        self._entries: dict[str, list[_Entry]] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}

    def _lock(self, host: str) -> asyncio.Lock:
        key = (host, id(asyncio.get_running_loop()))
        if key not in self._locks:
            self._locks[key] = asyncio.Lock()
        return self._locks[key]

    def _live(self, key: str) -> list[_Entry]:
        loop = asyncio.get_running_loop()
        live = [e for e in self._entries.get(key, []) if e.loop is loop
                and not e.conn.is_closed()]
        self._entries[key] = live
        return live

    def _options(self, host: str) -> dict[str, Any]:
        # Keepalives notice a host that went silent (frozen, cut off): with none, a lost
        # connection whose TCP stays half open would look like a running kernel forever.
        options: dict[str, Any] = {"connect_timeout": self.config.connect_timeout,
                                   "keepalive_interval": self.config.keepalive_interval,
                                   "keepalive_count_max": self.config.keepalive_count_max}
        config = Path(os.path.expanduser(self.config.ssh_config or "~/.ssh/config"))
        options["config"] = [str(config)] if config.exists() else []
        if host in self.config.insecure_hosts:
            options["known_hosts"] = None  # the user's explicit opt-out for this host
        elif self.config.known_hosts:
            options["known_hosts"] = os.path.expanduser(self.config.known_hosts)
        return options

    async def _open(self, host: str, via: str | None = None) -> asyncssh.SSHClientConnection:
        import asyncssh

        options = self._options(host)
        if via is not None:  # through the connection to ``via`` (a cluster's login host)
            options["tunnel"] = await self.connect(via)
        # The options as the ssh config resolves them (host name, port, known_hosts).
        resolved = asyncssh.SSHClientConnectionOptions(host=host, **options)
        if resolved.known_hosts is None and host not in self.config.insecure_hosts:
            # `UserKnownHostsFile none` in an ssh config: only insecure_hosts may do that.
            raise ProviderUnavailable(
                f"ssh host {host!r}: the ssh config turns host key checking off for it"
                " (UserKnownHostsFile none); set known_hosts in [providers.ssh], or list the"
                " host in insecure_hosts if you really mean to skip the check")
        try:
            return await asyncssh.connect(host, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            if _key_on_record(resolved):
                raise ProviderUnavailable(
                    f"ssh host {host!r}: its host key CHANGED: it is not the key known_hosts"
                    " holds for it. Someone may be impersonating the host, or it was"
                    " reinstalled: check the new key with its administrator, then replace"
                    f" the old one (`ssh-keygen -R {resolved.host}`); do not list it in"
                    " insecure_hosts") from None
            raise ProviderUnavailable(
                f"ssh host {host!r}: host key not verified ({exc.reason}); check it and add"
                f" it to known_hosts (e.g. `ssh {host}` once), or list the host in"
                " insecure_hosts in [providers.ssh] to skip the check") from None
        except asyncssh.PermissionDenied as exc:
            raise ProviderUnavailable(
                f"ssh host {host!r}: authentication failed ({exc.reason}); set IdentityFile"
                " for it in your ssh config or load the key into your agent (passwords"
                " are never asked for)") from None
        except (OSError, asyncssh.Error, asyncio.TimeoutError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            through = f" (through {via})" if via else ""
            raise ProviderUnavailable(
                f"ssh host {host!r}{through} unreachable: {reason}; check HostName/Port in"
                " your ssh config and that sshd runs there") from None

    async def connect(self, host: str) -> asyncssh.SSHClientConnection:
        """An open connection to ``host`` (for discovery); ProviderUnavailable with what
        to do when it cannot be opened."""
        async with self._lock(host):
            live = self._live(host)
            if live:
                return live[0].conn
            entry = _Entry(asyncio.get_running_loop(), await self._open(host))
            self._entries[host].append(entry)
            return entry.conn

    async def acquire(self, host: str, via: str | None = None) -> asyncssh.SSHClientConnection:
        """A connection for one more kernel on ``host`` (opened through the connection
        to host alias ``via`` if given: a compute node behind a login host)."""
        key = _key(host, via)
        async with self._lock(key):
            for entry in self._live(key):
                if entry.users < self.config.kernels_per_connection:
                    entry.users += 1
                    return entry.conn
            entry = _Entry(asyncio.get_running_loop(), await self._open(host, via), 1)
            self._entries[key].append(entry)
            return entry.conn

    async def release(self, host: str, conn: asyncssh.SSHClientConnection,
                      via: str | None = None) -> None:
        """A kernel stopped using ``conn``; close it when none does (and the connection
        to ``via`` when nothing else uses it)."""
        key = _key(host, via)
        for entry in self._entries.get(key, []):
            if entry.conn is conn:
                entry.users = max(entry.users - 1, 0)
        await self.close_idle(key)
        if via is not None and not any(k.endswith(f" via {via}") and self._entries[k]
                                       for k in self._entries):
            await self.close_idle(via)

    async def close_idle(self, host: str) -> None:
        """Close ``host``'s connections that no kernel uses (e.g. after discovery)."""
        loop = asyncio.get_running_loop()
        keep = []
        for entry in self._entries.get(host, []):
            if entry.users == 0 and entry.loop is loop:
                if entry.sftp is not None:
                    entry.sftp.exit()
                entry.conn.close()
                await entry.conn.wait_closed()
            else:
                keep.append(entry)
        self._entries[host] = keep

    async def sftp(self, conn: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
        """The one SFTP session of ``conn``, shared by its kernels' file transfers (each
        session counts against the server's MaxSessions)."""
        for entries in self._entries.values():
            for entry in entries:
                if entry.conn is conn:
                    async with self._lock(f"sftp-{id(conn)}"):
                        if entry.sftp is None:
                            entry.sftp = await conn.start_sftp_client()
                    return entry.sftp
        return await conn.start_sftp_client()  # pragma: no cover - not pooled

    def users(self, host: str) -> int:
        """How many kernels use connections to ``host``."""
        return sum(e.users for e in self._entries.get(host, []))


def _key(host: str, via: str | None) -> str:
    return host if via is None else f"{host} via {via}"


def _key_on_record(options: asyncssh.SSHClientConnectionOptions) -> bool:
    """Whether the known_hosts files hold a key for the host (so a refused key is a
    changed one, not an unknown one)."""
    import asyncssh

    files = options.known_hosts
    for known in files if isinstance(files, (list, tuple)) else [files]:
        if not isinstance(known, str) or not os.path.exists(os.path.expanduser(known)):
            continue
        try:
            keys = asyncssh.match_known_hosts(os.path.expanduser(known), options.host,
                                              options.host, options.port)[0]
        except (OSError, ValueError, asyncssh.Error):
            continue
        if keys:
            return True
    return False

