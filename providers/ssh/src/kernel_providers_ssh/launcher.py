"""A kernel on a remote host: started under the remote supervisor, its five channels
forwarded to local ports over the host's one SSH connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import posixpath
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kernel_providers.sdk import (
    PORT_NAMES,
    WATCH_LOST,
    KernelDied,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    OutputBuffer,
    WatchedLauncher,
    client_connection,
    kernel_connection,
    ready_seconds,
    remove_connection_file,
    substitute_argv,
    wait_for_ports,
)

from .remote import NANNY, bootstrap_command, first_lines

if TYPE_CHECKING:
    import asyncssh

    from .hosts import HostPool

__all__ = ["CONNECTION_LOST", "RemoteKernel", "SSHLauncher", "forward_ports",
           "start_remote_kernel"]

log = logging.getLogger(__name__)

#: The status of a kernel whose watch was lost before it reported its own (the host's
#: connection dropped, or the supervisor died): the core's WATCH_LOST, 255, as ssh(1)
#: exits on a lost connection.
CONNECTION_LOST = WATCH_LOST


@dataclass
class RemoteKernel:
    """What one remote kernel holds on its host: the SSH connection it shares, the
    supervisor process, the kernel's pid (its process group) and folder there, its
    connection file there, the local forwards, and the reader of its output."""

    host: str
    conn: asyncssh.SSHClientConnection
    process: asyncssh.SSHClientProcess[bytes]
    pid: int
    cwd: str
    file: str
    forwards: list[asyncssh.SSHListener]
    output_reader: asyncio.Future[None]


class SSHLauncher(WatchedLauncher):
    """A remote kernel. ``remote_pid`` is its pid (and process group) on the host;
    ``remote_cwd`` the folder it runs in there; ``remote_file`` its connection file."""

    def __init__(self, kernel_type: KernelType, connection_info: Any, connection_file: str,
                 options: LaunchOptions, pool: HostPool, remote: RemoteKernel,
                 output: OutputBuffer) -> None:
        super().__init__(kernel_type, connection_info, connection_file, options, output)
        self.pool, self.remote = pool, remote
        self.host, self.process = remote.host, remote.process
        self.remote_pid, self.remote_cwd, self.remote_file = remote.pid, remote.cwd, remote.file
        self._control = asyncio.ensure_future(self._read_control())

    async def _read_control(self) -> None:
        """Watch the supervisor: its ``{"exit"}`` ends the launcher with the kernel's
        status. Its channel closing without one (the connection dropped, or went silent
        past the keepalives; the supervisor was killed) ends it with CONNECTION_LOST."""
        status: int | None = None
        reason = ""
        try:
            async for line in self.process.stdout:
                with contextlib.suppress(ValueError, AttributeError):
                    message = json.loads(line)
                    if "exit" in message:
                        status = int(message["exit"])
        except Exception as exc:  # the connection dropped
            reason = str(exc) or type(exc).__name__
        self.ended_with(self._lost(reason) if status is None else status)

    def _lost(self, reason: str) -> int:
        """Say (in the kernel's output, which errors quote, and in the log) that the watch
        on the kernel was lost; close the local forwards, which lead nowhere now."""
        reason = f" ({reason})" if reason else ""
        if self.remote.conn.is_closed():
            message = (f"the SSH connection to {self.host} was lost{reason}; the kernel"
                       " there ends once the host notices; start it again")
        else:
            message = (f"the supervisor of the kernel on {self.host} ended without its"
                       f" exit status{reason}")
        log.warning("kernel %s: %s", self.kernel_type.id, message)
        self.collected.append(f"\n[kernel-providers: {message}]\n".encode())
        for listener in self.remote.forwards:
            listener.close()
        return CONNECTION_LOST

    async def signal(self, signum: int) -> None:
        """Deliver ``signum`` to the remote kernel's process group, via the supervisor
        (SSH "signal" requests are ignored by many servers)."""
        if self.ended():
            return
        with contextlib.suppress(Exception):
            self.process.stdin.write((json.dumps({"signal": int(signum)}) + "\n").encode())
            await self.process.stdin.drain()

    async def free_resources(self) -> None:
        """Close the supervisor's stdin, the forwards, the remote connection file; release
        the host's connection (closed when no kernel uses it)."""
        await _release(self.pool, self.remote, self.collected)
        self._control.cancel()


async def _release(pool: HostPool, remote: RemoteKernel, output: OutputBuffer) -> None:
    """Undo a remote start, whole or partial: forwards first (no new tunnelled
    connections), then the supervisor (closing its stdin ends the kernel), the remote
    file, and our share of the host's connection."""
    for listener in remote.forwards:
        listener.close()
    with contextlib.suppress(Exception):
        remote.process.stdin.write_eof()
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError, Exception):
        await asyncio.wait_for(remote.process.wait_closed(), 5)
    remote.process.close()
    remote.output_reader.cancel()
    if remote.file and not remote.conn.is_closed():
        try:
            await _remove_remote(await pool.sftp(remote.conn), remote.file)
        except Exception as exc:  # the connection is going away
            output.append(f"\n[could not remove {remote.file}: {exc}]".encode())
    await pool.release(remote.host, remote.conn)


async def _read_stderr(process: Any, output: OutputBuffer) -> None:
    with contextlib.suppress(Exception):
        while chunk := await process.stderr.read(4096):
            output.append(chunk)


async def _put_connection_file(sftp: Any, info: dict[str, Any], runtime_dir: str) -> str:
    """Write the kernel's connection file on the host: 0600, in a 0700 folder made for
    it alone inside ``runtime_dir`` (relative: to the home). The runtime dir may be a
    shared one (/tmp): it is made if missing but never changed; only what is made here
    is made private."""
    import asyncssh

    private = asyncssh.SFTPAttrs(permissions=0o700)
    parent = posixpath.join(await sftp.realpath("."), runtime_dir)
    await sftp.makedirs(parent, private, exist_ok=True)  # missing folders only
    # mkdir fails on an existing name: a fresh, random one no one else prepared.
    folder = posixpath.join(parent, f"kernel-providers-{uuid.uuid4().hex}")
    await sftp.mkdir(folder, private)
    path = posixpath.join(folder, "kernel.json")
    try:
        await sftp.chmod(folder, 0o700)  # ours: private whatever the remote umask
        async with sftp.open(path, "w", attrs=asyncssh.SFTPAttrs(permissions=0o600)) as f:
            await f.write(json.dumps(info))
    except BaseException:
        with contextlib.suppress(Exception):
            await _remove_remote(sftp, path)
        raise
    return path


async def _remove_remote(sftp: Any, path: str) -> None:
    """Remove a kernel's connection file on its host and the folder made for it; both
    may be gone already (the supervisor removes them as the kernel ends)."""
    import asyncssh

    for remove, target in ((sftp.remove, path), (sftp.rmdir, posixpath.dirname(path))):
        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
            await remove(target)


async def forward_ports(conn: asyncssh.SSHClientConnection, ports: dict[str, Any],
                        dictated: Any, where: str, kernel_id: str,
                        listeners: list[asyncssh.SSHListener]) -> dict[str, Any]:
    """Forward the kernel's five ports on the far side's loopback (``ports``) to local
    ones (the ``dictated`` ones, if a client chose), appending each listener to
    ``listeners`` (the caller closes them, also when this raises); the connection info
    as reachable from here."""
    local: dict[str, Any] = {**ports, "ip": "127.0.0.1"}
    for name in PORT_NAMES:
        wanted = dictated[name] if dictated else 0
        try:
            listener = await conn.forward_local_port("127.0.0.1", wanted, "127.0.0.1",
                                                     ports[name])
        except OSError as exc:
            raise LaunchFailed(
                f"cannot forward 127.0.0.1:{wanted} to {kernel_id} on {where}"
                f" ({exc.strerror or exc}); the client's connection file asks for it:"
                " start the kernel again (the client picks new ports) or end what holds"
                " the port") from None
        listeners.append(listener)
        local[name] = listener.get_port()
    return local


async def start_remote_kernel(pool: HostPool, host: str, kernel_type: KernelType,
                              argv: list[str], env: dict[str, str], resource_dir: str,
                              options: LaunchOptions) -> SSHLauncher:
    """Start a kernel on ``host`` and forward its ports; nothing is left behind if this
    raises (the supervisor ends the kernel when its channel closes)."""
    info, dictated = kernel_connection(kernel_type, options)
    conn = await pool.acquire(host)
    output = OutputBuffer()
    remote: RemoteKernel | None = None
    remote_file = owned_file = None
    try:
        sftp = await pool.sftp(conn)
        remote_file = await _put_connection_file(sftp, info, pool.config.runtime_dir)
        command = substitute_argv([*argv, *options.extra_argv], remote_file, resource_dir)
        process = await conn.create_process(bootstrap_command(pool.config.python),
                                            encoding=None)
        remote = RemoteKernel(host, conn, process, 0, "", remote_file, [],
                              asyncio.ensure_future(_read_stderr(process, output)))
        # The supervisor uses cwd only where the host has that folder (see NANNY).
        process.stdin.write(first_lines(NANNY, {"argv": command, "env": {**env, **options.env},
                                                "cwd": options.cwd, "file": remote_file}
                                        ).encode())
        first = await asyncio.wait_for(process.stdout.readline(), ready_seconds(options))
        started = json.loads(first or b"{}")
        if "pid" not in started:
            await _drained(remote.output_reader)
            raise KernelDied(f"kernel {kernel_type.id} could not start on {host}",
                             output.text(), started.get("exit"))
        remote.pid, remote.cwd = int(started["pid"]), str(started.get("cwd", ""))
        ports = await _ports_written(sftp, remote, info["key"], kernel_type, options, output)
        local = await forward_ports(conn, ports, dictated, host, kernel_type.id,
                                    remote.forwards)
        client_info, path, owned = client_connection(kernel_type, options, local, dictated)
        owned_file = path if owned else None
        log.debug("%s on %s runs in %s (cwd asked: %s)", kernel_type.id, host, remote.cwd,
                  options.cwd)
        return SSHLauncher(kernel_type, client_info, path, options, pool, remote, output)
    except BaseException:
        remove_connection_file(owned_file)
        if remote is not None:
            await _release(pool, remote, output)
        else:  # the supervisor never started
            if remote_file:
                with contextlib.suppress(Exception):
                    await _remove_remote(await pool.sftp(conn), remote_file)
            await pool.release(host, conn)
        raise


async def _drained(reader: asyncio.Future[None]) -> None:
    # The kernel's last output arrives on stderr until the channel closes: take it all.
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
        await asyncio.wait_for(asyncio.shield(reader), 10)


async def _ports_written(sftp: Any, remote: RemoteKernel, key: str, kernel_type: KernelType,
                         options: LaunchOptions, output: OutputBuffer) -> Any:
    """The ports the kernel bound, once it wrote them into its connection file there."""
    async def read() -> Any:
        with contextlib.suppress(Exception):  # not there yet, or half written
            async with sftp.open(remote.file) as f:
                return json.loads(await f.read())
        return None

    async def check_alive() -> None:
        if remote.process.exit_status is not None or remote.process.stdout.at_eof():
            await _drained(remote.output_reader)
            raise KernelDied(f"kernel {kernel_type.id} ended while starting on"
                             f" {remote.host}", output.text())

    return await wait_for_ports(read, check_alive, key=key, where=f"{remote.file} on"
                                f" {remote.host}", timeout=ready_seconds(options),
                                output=output.text, kernel_id=kernel_type.id)
