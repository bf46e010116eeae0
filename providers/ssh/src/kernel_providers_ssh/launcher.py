"""A kernel on a remote host: started under the remote supervisor, its five channels
forwarded to local ports over the host's one SSH connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import posixpath
import time
import uuid
from typing import TYPE_CHECKING, Any

from kernel_providers.sdk import (
    PORT_NAMES,
    KernelDied,
    KernelLauncher,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    OutputBuffer,
    ReadyTimeout,
    dictated_connection,
    new_connection_info,
    ready_seconds,
    remove_connection_file,
    substitute_argv,
    write_connection_file,
)

from .remote import NANNY, bootstrap_command, first_lines

if TYPE_CHECKING:
    import asyncssh

    from .hosts import HostPool

__all__ = ["SSHLauncher", "start_remote_kernel"]

log = logging.getLogger(__name__)


class SSHLauncher(KernelLauncher):
    """A remote kernel. ``remote_pid`` is its pid (and process group) on the host;
    ``remote_cwd`` the folder it runs in there."""

    def __init__(self, kernel_type: KernelType, connection_info: Any, connection_file: str,
                 options: LaunchOptions, host: str, pool: HostPool,
                 conn: asyncssh.SSHClientConnection,
                 process: asyncssh.SSHClientProcess[bytes], output: OutputBuffer,
                 remote_pid: int, remote_file: str,
                 forwards: list[asyncssh.SSHListener]) -> None:
        super().__init__(kernel_type, connection_info, connection_file, options)
        self.host, self.pool, self.process = host, pool, process
        self.remote_pid, self.remote_file = remote_pid, remote_file
        self._output, self._forwards = output, forwards
        self._ended: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._conn = conn
        self._control = asyncio.ensure_future(self._read_control())
        self._stderr_reader: asyncio.Future[None] | None = None
        self.remote_cwd = ""

    async def _read_control(self) -> None:
        status: int | None = None
        try:
            async for line in self.process.stdout:
                with contextlib.suppress(ValueError, AttributeError):
                    message = json.loads(line)
                    if "exit" in message:
                        status = int(message["exit"])
        except Exception:  # the connection dropped
            status = None
        if not self._ended.done():
            self._ended.set_result(status)

    @property
    def output(self) -> str:
        """The remote kernel's stdout and stderr, last 64 KiB."""
        return self._output.text()

    def poll(self) -> int | None:
        """``None`` while the remote kernel runs, else its exit status."""
        return self._ended.result() if self._ended.done() else None

    def ended(self) -> bool:
        """Whether the kernel ended (or the connection to it was lost)."""
        return self._ended.done()

    async def wait(self) -> int | None:
        """The remote exit status (negative for a signal); ``None`` if the connection was
        lost first (the supervisor then ends the kernel on the host)."""
        return await asyncio.shield(self._ended)

    async def signal(self, signum: int) -> None:
        """Deliver ``signum`` to the remote kernel's process group, via the supervisor
        (SSH "signal" requests are ignored by many servers)."""
        if self._ended.done():
            return
        with contextlib.suppress(Exception):
            self.process.stdin.write((json.dumps({"signal": int(signum)}) + "\n").encode())
            await self.process.stdin.drain()

    async def free_resources(self) -> None:
        """Close the supervisor's stdin, the forwards, the remote connection file; release
        the host's connection (closed when no kernel uses it)."""
        for listener in self._forwards:  # first: no new tunnelled connections
            listener.close()
        with contextlib.suppress(Exception):
            self.process.stdin.write_eof()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError, Exception):
            await asyncio.wait_for(self.process.wait_closed(), 5)
        self.process.close()
        if not self._conn.is_closed():
            try:
                await (await self.pool.sftp(self._conn)).remove(self.remote_file)
            except Exception as exc:  # the connection is going away
                self._output.append(f"\n[could not remove {self.remote_file}: {exc}]".encode())
        await self.pool.release(self.host, self._conn)
        self._control.cancel()
        if self._stderr_reader is not None:
            self._stderr_reader.cancel()


async def _read_stderr(process: Any, output: OutputBuffer) -> None:
    with contextlib.suppress(Exception):
        while chunk := await process.stderr.read(4096):
            output.append(chunk)


async def start_remote_kernel(pool: HostPool, host: str, kernel_type: KernelType,
                              argv: list[str], env: dict[str, str], resource_dir: str,
                              options: LaunchOptions) -> SSHLauncher:
    """Start a kernel on ``host`` and forward its ports; nothing is left behind if this
    raises (the supervisor ends the kernel when its channel closes)."""
    config = pool.config
    dictated = dictated_connection(options, kernel_type.id, remote=True)
    conn = await pool.acquire(host)
    process = None
    stderr_reader: asyncio.Future[None] | None = None
    forwards: list[Any] = []
    remote_file = ""
    local_file = None
    output = OutputBuffer()
    try:
        info: Any = dict(new_connection_info(kernel_name=kernel_type.name))
        reuse = dictated or options.connection_info or {}
        if dictated is not None or reuse.get("key"):  # a client's file: its key, even ""
            info["key"] = str(reuse.get("key", ""))
            info["signature_scheme"] = reuse.get("signature_scheme", "hmac-sha256")
        import asyncssh

        sftp = await pool.sftp(conn)
        home = await sftp.realpath(".")
        folder = posixpath.join(home, config.runtime_dir)
        await sftp.makedirs(folder, exist_ok=True)
        await sftp.chmod(folder, 0o700)
        remote_file = posixpath.join(folder, f"kernel-{uuid.uuid4()}.json")
        async with sftp.open(remote_file, "w",
                             attrs=asyncssh.SFTPAttrs(permissions=0o600)) as f:
            await f.write(json.dumps(info))
        command = substitute_argv([*argv, *options.extra_argv], remote_file, resource_dir)
        process = await conn.create_process(bootstrap_command(config.python), encoding=None)
        stderr_reader = asyncio.ensure_future(_read_stderr(process, output))
        # The supervisor uses cwd only where the host has that folder (see NANNY).
        process.stdin.write(first_lines(NANNY, {"argv": command, "env": {**env, **options.env},
                                                "cwd": options.cwd}).encode())
        first = await asyncio.wait_for(process.stdout.readline(), ready_seconds(options))
        started = json.loads(first or b"{}")
        if "pid" not in started:
            await _drained(stderr_reader)
            raise KernelDied(f"kernel {kernel_type.id} could not start on {host}",
                             output.text(), started.get("exit"))
        remote = await _settled_ports(sftp, remote_file, info["key"], process, output,
                                      kernel_type, host, ready_seconds(options),
                                      stderr_reader)
        local: Any = dict(remote)
        local["ip"] = "127.0.0.1"
        for name in PORT_NAMES:
            wanted = dictated[name] if dictated else 0  # type: ignore[literal-required]
            try:
                listener = await conn.forward_local_port("127.0.0.1", wanted, "127.0.0.1",
                                                         remote[name])
            except OSError as exc:
                raise LaunchFailed(
                    f"cannot forward 127.0.0.1:{wanted} to {kernel_type.id} on {host}"
                    f" ({exc.strerror or exc}); the connection file"
                    f" {options.connection_file} asks for it: start the kernel again (the"
                    " client picks new ports) or end what holds the port") from None
            forwards.append(listener)
            local[name] = listener.get_port()
        if dictated is not None:  # the caller's file describes exactly this
            local = {**local, "kernel_name": dictated.get("kernel_name", kernel_type.name)}
            path = str(options.connection_file)
        else:
            local_file = write_connection_file(local)
            path = str(local_file)
        launcher = SSHLauncher(kernel_type, local, path, options, host, pool,
                               conn, process, output, int(started["pid"]), remote_file, forwards)
        launcher._stderr_reader = stderr_reader
        launcher.remote_cwd = str(started.get("cwd", ""))
        log.debug("%s on %s runs in %s (cwd asked: %s)", kernel_type.id, host,
                  launcher.remote_cwd, options.cwd)
        return launcher
    except BaseException:
        for listener in forwards:
            listener.close()
        if process is not None:
            with contextlib.suppress(Exception):
                process.stdin.write_eof()  # the supervisor ends the kernel
                await asyncio.wait_for(process.wait_closed(), 5)
            process.close()
        if stderr_reader is not None:
            stderr_reader.cancel()
        if remote_file:
            with contextlib.suppress(Exception):
                await (await pool.sftp(conn)).remove(remote_file)
        remove_connection_file(local_file)
        await pool.release(host, conn)
        raise


async def _drained(reader: asyncio.Future[None]) -> None:
    # The kernel's last output arrives on stderr until the channel closes: take it all.
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
        await asyncio.wait_for(asyncio.shield(reader), 10)


async def _settled_ports(sftp: Any, path: str, key: str, process: Any, output: OutputBuffer,
                         kernel_type: KernelType, host: str, timeout: float,
                         stderr_reader: asyncio.Future[None]) -> Any:
    """Wait until the kernel wrote the ports it bound into its connection file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = None
        with contextlib.suppress(Exception):  # not there yet, or half written
            async with sftp.open(path) as f:
                info = json.loads(await f.read())
        if isinstance(info, dict) and all(info.get(p) for p in PORT_NAMES):
            if info.get("key") != key:
                raise LaunchFailed(f"kernel {kernel_type.id} rewrote {path} on"
                                   f" {host} with another key")
            return info
        if process.exit_status is not None or process.stdout.at_eof():
            await _drained(stderr_reader)
            raise KernelDied(f"kernel {kernel_type.id} ended while starting on {host}",
                             output.text())
        await asyncio.sleep(0.05)
    raise ReadyTimeout(f"kernel {kernel_type.id} on {host} did not write its ports to"
                       f" {path} within {timeout:g} s", output.text())
