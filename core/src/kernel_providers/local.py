"""Local kernel processes: the one launcher used by every provider that runs a kernel on
this machine (kernelspecs, conda and virtualenv environments, and plugins).

Ports: ipykernel binds random ports itself when its connection file says 0 and writes
the real ones back, which is race-free, so that is used whenever the kernel is known to
do it; other kernels get allocated ports and are restarted with new ones if the
kernel reports that a port was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal as _signal
import sys
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from string import Template
from typing import Literal, NoReturn

from . import exec_plans
from .connection import (
    PORT_NAMES,
    allocate_ports,
    dictated_connection,
    new_connection_info,
    read_connection_file,
    remove_connection_file,
    write_connection_file,
)
from .elsewhere import keep_key, wait_for_ports
from .errors import KernelDied, LaunchFailed
from .launcher import KernelLauncher, OutputBuffer
from .orphans import undo_if_orphaned
from .parameters import parameter_variables, substitute_parameters
from .types import ConnectionInfo, KernelType, LaunchOptions, ready_seconds

__all__ = ["LocalLauncher", "PortStrategy", "build_env", "launch_local", "substitute_argv"]

PortStrategy = Literal["kernel-binds", "allocate"]

_BIND_FAILURE = re.compile(r"address already in use|EADDRINUSE", re.IGNORECASE)
_BIND_RETRIES = 3

#: The inputs of the launch under way, when its exec should be recorded as an exec plan
#: (set by :class:`~kernel_providers.KernelFinder`); ``None``: not recorded.
exec_plan_inputs: ContextVar[list[str] | None] = ContextVar("exec_plan_inputs", default=None)
_PR_SET_PDEATHSIG = 1


@functools.cache
def _libc_prctl() -> Callable[..., int] | None:
    # Looked up in the parent, on the first launch (a forked child must not load
    # libraries); the process's own symbols include libc's.
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent(parent_pid: int, prctl: Callable[..., int] | None) -> None:
    # Runs in the child between fork and exec: SIGKILL when the manager dies (Linux), so
    # a killed manager never leaves a kernel behind. ipykernel's JPY_PARENT_PID poller
    # is the second line on other systems.
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, _signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


def substitute_argv(argv: Sequence[str], connection_file: str,
                    resource_dir: str | None = None) -> list[str]:
    """Replace ``{connection_file}`` and ``{resource_dir}`` in every argument."""
    values = {"connection_file": connection_file, "resource_dir": resource_dir or ""}
    out = []
    for arg in argv:
        for name, value in values.items():
            arg = arg.replace("{" + name + "}", value)
        out.append(arg)
    return out


def build_env(*layers: Mapping[str, str | None] | None) -> dict[str, str]:
    """``os.environ`` with each layer merged over it in turn.

    Values may refer to the variables below them as ``${NAME}`` (as kernelspecs do, e.g.
    ``"PATH": "/opt/bin:${PATH}"``); a value of ``None`` removes the variable (as an
    activation script's ``unset`` does).
    """
    env = dict(os.environ)
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = Template(str(value)).safe_substitute(env)
    return env


def binds_own_ports(argv: Sequence[str]) -> bool:
    """Whether this argv starts ipykernel, which binds random ports when told 0."""
    joined = " ".join(argv)
    return "ipykernel_launcher" in joined or re.search(r"-m\s+ipykernel\b", joined) is not None


class LocalLauncher(KernelLauncher):
    """A kernel running as a child process of this one, in its own process group."""

    def __init__(self, kernel_type: KernelType, connection_info: ConnectionInfo,
                 connection_file: str, launch_options: LaunchOptions,
                 process: asyncio.subprocess.Process, output: OutputBuffer,
                 respawn: _Spawner) -> None:
        super().__init__(kernel_type, connection_info, connection_file, launch_options)
        self.process = process
        # The parent-death signal ends the kernel alone; the reaper ends its group.
        self.cancel_at_cleanup(undo_if_orphaned({"kill_group": process.pid}))
        self._output = output
        self._reader = _start_reader(process, output)
        self._respawn = respawn

    @property
    def pid(self) -> int:
        """The kernel's process id (also its process group id)."""
        return self.process.pid

    @property
    def output(self) -> str:
        """The kernel's stdout and stderr, interleaved, last 64 KiB."""
        return self._output.text()

    def poll(self) -> int | None:
        """The process's return code, ``None`` while it runs."""
        return self.process.returncode

    async def wait(self) -> int | None:
        """Wait for the process; negative status when a signal ended it."""
        return await self.process.wait()

    async def signal(self, signum: int) -> None:
        """Send ``signum`` to the kernel's whole process group."""
        if self.poll() is not None:
            return
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(self.pid, signum)

    async def wait_ready(self, timeout: float | None = None) -> dict:  # type: ignore[type-arg]
        """As the contract, restarting the kernel on new ports after a bind failure."""
        for attempt in range(_BIND_RETRIES + 1):
            watcher = asyncio.ensure_future(self._end_on_bind_failure())
            try:
                return await super().wait_ready(timeout)
            except KernelDied as died:
                if (attempt == _BIND_RETRIES or not _BIND_FAILURE.search(died.output)
                        or self.launch_options.connection_file):  # ports the caller chose
                    raise
            finally:
                watcher.cancel()
            await self._start_again()
        raise AssertionError("unreachable")

    async def _start_again(self) -> None:
        """Replace the dead process with a new one on new ports (after a bind failure)."""
        await self.free_resources()
        self.close_connection()
        remove_connection_file(self.connection_file)
        self.cancel_undos()  # that process and file are gone: never undo them again
        process, output, info, path = await self._respawn.start(first=False)
        self.process, self._output = process, output
        self.connection_info, self.connection_file = info, str(path)
        self.cancel_at_cleanup(undo_if_orphaned({"kill_group": process.pid}))
        self._guard_connection_file()
        self._reader = _start_reader(process, output)
        await _settle_ports(self, self._respawn)

    async def _end_on_bind_failure(self) -> None:
        # A kernel that failed to bind a port may hang instead of exiting (ipykernel's
        # threads keep it alive): end it, so the ready check fails fast and we retry.
        while self.poll() is None:
            if _BIND_FAILURE.search(self.output):
                await self.kill()
                return
            await asyncio.sleep(0.1)

    async def output_complete(self) -> None:
        """Wait (a little) for the output pipe to reach its end."""
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 5)

    async def free_resources(self) -> None:
        """Reap anything the kernel left in its process group; stop reading output."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, _signal.SIGKILL)
        if self._reader is not None and not self._reader.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
            except (asyncio.TimeoutError, TimeoutError):
                self._reader.cancel()


async def _read_output(stream: asyncio.StreamReader, buffer: OutputBuffer) -> None:
    while chunk := await stream.read(4096):
        buffer.append(chunk)


class _Spawner:
    """Starts (and, after a bind failure, restarts) one local kernel process."""

    def __init__(self, kernel_type: KernelType, argv: Sequence[str], env: dict[str, str],
                 cwd: str | None, resource_dir: str | None, options: LaunchOptions,
                 strategy: PortStrategy) -> None:
        self.kernel_type, self.argv, self.env, self.cwd = kernel_type, argv, env, cwd
        self.resource_dir, self.options, self.strategy = resource_dir, options, strategy

    def _connection_info(self, first: bool) -> ConnectionInfo:
        reuse = self.options.connection_info or {}
        # ipc names files after the address; tcp kernels always bind loopback.
        transport = reuse.get("transport", "tcp")
        ip = reuse.get("ip", "127.0.0.1") if transport == "ipc" else "127.0.0.1"
        name = self.kernel_type.name
        if first and reuse and all(reuse.get(p) for p in PORT_NAMES):
            info = new_connection_info({p: reuse[p] for p in PORT_NAMES},  # type: ignore[literal-required]
                                       ip, name, transport)
        elif self.strategy == "allocate":
            ports = (allocate_ports() if transport == "tcp"
                     else {p: i for i, p in enumerate(PORT_NAMES, 1)})
            info = new_connection_info(ports, ip, name, transport)
        else:
            info = new_connection_info(None, ip, name, transport)
        keep_key(info, reuse, dictated=False)  # type: ignore[arg-type]
        return info

    def _argv(self, connection_file: str) -> list[str]:
        return substitute_argv(self.argv, connection_file, self.resource_dir)

    async def start(self, first: bool = True
                    ) -> tuple[asyncio.subprocess.Process, OutputBuffer, ConnectionInfo, Path]:
        dictated = dictated_connection(self.options, self.kernel_type.id)
        if dictated is not None:  # the caller's file, read by the kernel as it is
            info, path = dictated, Path(str(self.options.connection_file))
        else:
            info = self._connection_info(first)
            path = write_connection_file(info)
        argv = self._argv(str(path))
        output = OutputBuffer()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, env=self.env, cwd=self.cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True, preexec_fn=_parent_watch(os.getpid()),
            )
        except (OSError, ValueError) as exc:  # ValueError: a NUL in argv, env or cwd
            if dictated is None:
                remove_connection_file(path)
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise LaunchFailed(
                f"cannot start kernel {self.kernel_type.id!r}: {argv[0]!r}: {why};"
                " check the kernel's argv and env (is the program installed?)") from None
        return process, output, info, path

    def replace_process(self) -> NoReturn:
        """Become the kernel (``exec``), on the caller's connection file; recorded as an
        exec plan when the launch names its inputs (see :mod:`kernel_providers.exec_plans`)."""
        connection_file = str(self.options.connection_file)
        argv = self._argv(connection_file)
        inputs = exec_plan_inputs.get()
        if inputs is not None:
            exec_plans.record(self.kernel_type.id, argv, self.env, self.cwd, connection_file,
                              inputs)
        try:
            exec_plans.become(argv, self.env, self.cwd)
        except OSError as exc:
            raise LaunchFailed(
                f"cannot start kernel {self.kernel_type.id!r}: {argv[0]!r}: {exc.strerror};"
                " check the kernel's argv (is the program installed?)") from None



def _parent_watch(parent_pid: int) -> Callable[[], None]:
    prctl = _libc_prctl()
    return lambda: _die_with_parent(parent_pid, prctl)


def _start_reader(process: asyncio.subprocess.Process,
                  output: OutputBuffer) -> asyncio.Task[None] | None:
    if process.stdout is None:
        return None
    return asyncio.ensure_future(_read_output(process.stdout, output))


async def _settle_ports(launcher: LocalLauncher, spawner: _Spawner) -> None:
    """For kernels that bind their own ports: wait until the file shows them."""
    if all(launcher.connection_info.get(p) for p in PORT_NAMES):
        return
    path = Path(launcher.connection_file)

    async def read() -> ConnectionInfo | None:
        return read_connection_file(path)

    async def check_alive() -> None:
        if launcher.poll() is not None:
            await launcher.output_complete()
            raise KernelDied(
                f"kernel {launcher.kernel_type.id!r} ended while starting"
                f" (exit status {launcher.poll()})", launcher.output, launcher.poll())

    launcher.connection_info = await wait_for_ports(
        read, check_alive,
        key=launcher.connection_info["key"], where=str(path),
        timeout=ready_seconds(spawner.options), output=lambda: launcher.output,
        kernel_id=launcher.kernel_type.id)


async def launch_local(kernel_type: KernelType, argv: Sequence[str], options: LaunchOptions,
                       *, env: Mapping[str, str | None] | None = None,
                       cwd: str | None = None,
                       resource_dir: str | None = None,
                       port_strategy: PortStrategy | None = None) -> LocalLauncher:
    """Start ``argv`` as a local kernel and return its launcher.

    ``env`` (the kernel's own, e.g. from kernel.json) and then ``options.env`` are merged
    over this process's environment; ``options.parameters`` fill ``{parameter:<name>}``
    in ``argv`` and set ``KERNEL_PARAMETER_<NAME>``. The kernel runs in its own session
    and process group and dies with this process (Linux). On return, ``connection_info`` holds the
    kernel's real ports; the kernel may still be starting (``wait_ready`` tells).
    Nothing is left behind if this raises. With ``options.connection_file`` the kernel
    reads the caller's file; with ``options.replace_process`` as well, the kernel
    replaces this process and this never returns.
    """
    if not argv:
        raise LaunchFailed(f"kernel {kernel_type.id!r} has an empty argv")
    strategy = port_strategy or ("kernel-binds" if binds_own_ports(argv) else "allocate")
    replace = options.replace_process and options.connection_file
    # A replacing kernel keeps the parent its caller gave it (and JPY_PARENT_PID).
    full_env = build_env(env, options.env,
                         None if replace else {"JPY_PARENT_PID": str(os.getpid())})
    if options.parameters:  # (set as they are: no ${NAME} expansion of a value)
        argv = substitute_parameters(list(argv), options.parameters, kernel_type.id)
        full_env.update(parameter_variables(options.parameters))
    spawner = _Spawner(kernel_type, [*argv, *options.extra_argv], full_env,
                       options.cwd or cwd, resource_dir, options, strategy)
    if replace:
        dictated_connection(options, kernel_type.id)  # fail here, not in the kernel
        spawner.replace_process()
    process, output, info, path = await spawner.start()
    launcher = LocalLauncher(kernel_type, info, str(path), options, process, output, spawner)
    try:
        await _settle_ports(launcher, spawner)
    except BaseException:
        await launcher.cleanup()
        raise
    return launcher
