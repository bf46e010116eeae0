"""Where Slurm's commands run and the jobs' folders live: this machine, or a login host
reached over SSH (the ssh provider's connections, host-key rules and ssh config). Every
command is an argv (quoted as one line for the login host's shell: nothing in it is
ever interpreted there), bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import secrets
import shlex
import shutil
import subprocess
import threading
import weakref
from typing import TYPE_CHECKING, Any

from kernel_providers.sdk import LaunchFailed, ProviderUnavailable
from kernel_providers_ssh import SSHConfig
from kernel_providers_ssh.hosts import HostPool

if TYPE_CHECKING:
    import asyncssh

__all__ = ["COMMAND_SECONDS", "Cluster", "LocalCluster", "LoginCluster", "ssh_pool"]

COMMAND_SECONDS = 30.0


class Cluster:
    """A cluster as seen from one place (this machine or a login host): run Slurm's
    commands there and read and write the job folders there (paths as the cluster's
    nodes see them)."""

    #: how errors name this place
    where = "this machine"
    #: the login host's ssh alias (None: this machine)
    login: str | None = None

    async def run(self, *argv: str, stdin: str | None = None,
                  timeout: float = COMMAND_SECONDS) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of a command there."""
        raise NotImplementedError

    async def read(self, path: str, offset: int = 0) -> bytes | None:
        """The bytes of ``path`` from ``offset`` on; None if it is not there."""
        raise NotImplementedError

    async def write(self, path: str, text: str, *, new: bool = False) -> None:
        """Write ``text`` to ``path`` (0600; with ``new``: only if it does not exist)."""
        raise NotImplementedError

    async def touch(self, path: str) -> None:
        """Set ``path``'s mtime to now."""
        raise NotImplementedError

    def fresh(self) -> Cluster:
        """Another view of the same place, for the leases' thread (see lease.py)."""
        return LocalCluster()

    async def make_folder(self, root: str) -> str:
        """A fresh 0700 folder ``job-<random>`` in ``root`` (made, 0700, if missing)."""
        raise NotImplementedError

    async def remove_tree(self, path: str) -> None:
        """Remove ``path`` and all it holds, if there."""
        raise NotImplementedError

    async def close(self) -> None:
        """Let go of what reaching the cluster holds."""

    async def node_address(self, node: str) -> str:
        """The address Slurm reaches ``node`` at (its NodeAddr)."""
        status, out, err = await self.run("scontrol", "show", "node", "-o", node)
        for part in out.split() if status == 0 else []:
            if part.startswith("NodeAddr="):
                return part.removeprefix("NodeAddr=")
        raise LaunchFailed(f"Slurm does not say where node {node} is (`scontrol show node"
                           f" {node}` on {self.where}: {err.strip() or out.strip()})")

    def reaper_kwargs(self) -> dict[str, Any]:
        """What the reaper (another process) needs to reach the cluster the same way."""
        return {}


class LocalCluster(Cluster):
    """Slurm's commands on this machine's PATH; job folders on its file system."""

    async def run(self, *argv: str, stdin: str | None = None,
                  timeout: float = COMMAND_SECONDS) -> tuple[int, str, str]:
        if shutil.which(argv[0]) is None:
            raise ProviderUnavailable(
                f"Slurm's {argv[0]} is not on PATH: install Slurm's client commands"
                " (Debian: slurm-client) and its configuration (SLURM_CONF), or submit"
                " from a login host with `login = \"<ssh alias>\"` in the profile")
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None), timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        return int(process.returncode or 0), out.decode(errors="replace"), \
            err.decode(errors="replace")

    async def read(self, path: str, offset: int = 0) -> bytes | None:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return None

    async def write(self, path: str, text: str, *, new: bool = False) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if new else os.O_TRUNC)
        with os.fdopen(os.open(path, flags, 0o600), "w") as f:
            f.write(text)

    async def touch(self, path: str) -> None:
        os.utime(path)

    async def make_folder(self, root: str) -> str:
        root = os.path.expanduser(root)
        os.makedirs(root, mode=0o700, exist_ok=True)
        folder = os.path.join(root, f"job-{secrets.token_hex(6)}")
        os.mkdir(folder, 0o700)
        return folder

    async def remove_tree(self, path: str) -> None:
        await asyncio.to_thread(shutil.rmtree, path, True)


class LoginCluster(Cluster):
    """Slurm's commands run on login host ``login`` over SSH; job folders are reached
    by SFTP there (the cluster's shared file system, not this machine's)."""

    def __init__(self, pool: HostPool, login: str) -> None:
        self.pool, self.login, self.alias = pool, login, login
        self.where = f"login host {login}"
        self._conn: asyncssh.SSHClientConnection | None = None

    async def _connection(self) -> asyncssh.SSHClientConnection:
        # One share of the login host's connection while this cluster is in use: the
        # tunnels to nodes ride it.
        if self._conn is None or self._conn.is_closed():
            self._conn = await self.pool.acquire(self.alias)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self.pool.release(self.alias, conn)

    async def run(self, *argv: str, stdin: str | None = None,
                  timeout: float = COMMAND_SECONDS) -> tuple[int, str, str]:
        conn = await self._connection()
        # `command -v` first: a missing command is told apart from one that failed.
        line = f"command -v {shlex.quote(argv[0])} >/dev/null || exit 127; {shlex.join(argv)}"
        done = await asyncio.wait_for(conn.run(line, input=stdin, check=False), timeout)
        status = 127 if done.exit_status is None else int(done.exit_status)
        if status == 127 and not done.stdout:
            raise ProviderUnavailable(
                f"Slurm's {argv[0]} is not on PATH on {self.where}: check the profile's"
                f" login host (`ssh {self.login} {argv[0]} --version`)")
        return status, str(done.stdout or ""), str(done.stderr or "")

    async def _sftp(self) -> asyncssh.SFTPClient:
        return await self.pool.sftp(await self._connection())

    async def read(self, path: str, offset: int = 0) -> bytes | None:
        sftp = await self._sftp()
        try:
            async with sftp.open(path, "rb") as f:
                await f.seek(offset)
                data: bytes = await f.read()
                return data
        except Exception:
            return None

    async def write(self, path: str, text: str, *, new: bool = False) -> None:
        import asyncssh

        sftp = await self._sftp()
        mode = "x" if new else "w"
        async with sftp.open(path, mode, attrs=asyncssh.SFTPAttrs(permissions=0o600)) as f:
            await f.write(text)

    async def touch(self, path: str) -> None:
        await (await self._sftp()).utime(path)

    async def make_folder(self, root: str) -> str:
        import asyncssh

        sftp = await self._sftp()
        private = asyncssh.SFTPAttrs(permissions=0o700)
        if root.startswith("~/"):
            root = posixpath.join(await sftp.realpath("."), root[2:])
        await sftp.makedirs(root, private, exist_ok=True)
        folder = posixpath.join(root, f"job-{secrets.token_hex(6)}")
        await sftp.mkdir(folder, private)
        await sftp.chmod(folder, 0o700)  # whatever the remote umask
        return folder

    async def remove_tree(self, path: str) -> None:
        with contextlib.suppress(Exception):
            await (await self._sftp()).rmtree(path, ignore_errors=True)

    def fresh(self) -> Cluster:
        # The leases' thread has a pool of its own (a pool is not shared across
        # threads), one per pool of ours: its leases on a login host share a connection.
        with _LEASE_POOLS_LOCK:
            pool = _LEASE_POOLS.setdefault(self.pool, HostPool(self.pool.config))
        return LoginCluster(pool, self.alias)

    def reaper_kwargs(self) -> dict[str, Any]:
        config = self.pool.config
        return {"login": self.login, "ssh_config": config.ssh_config,
                "known_hosts": config.known_hosts}


_LEASE_POOLS: weakref.WeakKeyDictionary[HostPool, HostPool] = weakref.WeakKeyDictionary()
_LEASE_POOLS_LOCK = threading.Lock()


def ssh_pool(ssh_config: str | None, known_hosts: str | None) -> HostPool:
    """The ssh provider's connections, with these client files (None: OpenSSH's
    defaults, ~/.ssh/config and ~/.ssh/known_hosts)."""
    return HostPool(SSHConfig(ssh_config=ssh_config, known_hosts=known_hosts))
