"""A kernel in a Slurm job: submit it, follow it through the queue to its start, reach
it (on this machine's loopback, or through an SSH tunnel to its node's), and the
launcher contract on top of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import posixpath
import shlex
import signal as _signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_providers.sdk import (
    PORT_NAMES,
    KernelDied,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    WatchedLauncher,
    client_connection,
    kernel_connection,
    owner_tag,
    process_stamp,
    ready_seconds,
    remove_connection_file,
    report_progress,
    undo_if_orphaned,
)
from kernel_providers_ssh.launcher import forward_ports

from .cluster import Cluster
from .config import SlurmConfig, SlurmProfile
from .jobs import JobState, cancel_on, job_state, submit
from .lease import Lease

if TYPE_CHECKING:
    import asyncssh

    from kernel_providers_ssh.hosts import HostPool

__all__ = ["COMMENT_PREFIX", "Job", "SlurmLauncher", "Tunnel", "reach", "start_job"]

log = logging.getLogger("kernel_providers_slurm")

#: how every job of ours is tagged: its comment starts so, then key=value fields
COMMENT_PREFIX = "kernel-providers"
NANNY = Path(__file__).with_name("nanny.py")


@dataclass
class Job:
    """A submitted job: its id, its folder (shared with the node) and the cluster it
    was submitted to (where its folder is read)."""

    job_id: str
    folder: str
    cluster: Cluster

    def path(self, name: str) -> str:
        """``name`` in the job's folder."""
        return posixpath.join(self.folder, name)

    async def read(self, name: str) -> dict[str, Any] | None:
        """``folder/name`` as JSON, or None while it is not there (or half written)."""
        data = await self.cluster.read(self.path(name))
        try:
            return dict(json.loads(data)) if data is not None else None
        except ValueError:
            return None

    async def output(self) -> str:
        """The job's output so far."""
        return (await self.cluster.read(self.path("output.log")) or b"").decode(
            errors="replace")


@dataclass
class Tunnel:
    """The SSH connection to a kernel's node (through the login host, if any) and the
    local forwards to the kernel's ports on the node's loopback."""

    pool: HostPool
    address: str
    via: str | None
    conn: asyncssh.SSHClientConnection
    listeners: list[asyncssh.SSHListener] = field(default_factory=list)

    async def close(self) -> None:
        """Close the forwards and release the connection."""
        for listener in self.listeners:
            listener.close()
        await self.pool.release(self.address, self.conn, self.via)


class SlurmLauncher(WatchedLauncher):
    """A kernel running as Slurm job ``job.job_id`` (its nanny reports through
    ``job.folder``); ``tunnel`` is how its ports are reached when it runs on another
    host (None: on this machine's loopback)."""

    def __init__(self, kernel_type: KernelType, connection_info: Any, connection_file: str,
                 options: LaunchOptions, job: Job, config: SlurmConfig,
                 tunnel: Tunnel | None = None) -> None:
        super().__init__(kernel_type, connection_info, connection_file, options)
        self.job, self.config, self.tunnel = job, config, tunnel
        self._tail = 0
        self._claim_file: Path | None = None
        self._watch = asyncio.ensure_future(self._follow())
        self._lease = Lease(job.cluster, job.path("lease"), config.lease_seconds)

    async def _follow(self) -> None:
        # The nanny's exit.json says how the kernel ended; Slurm's state says when the
        # job ended without one (cancelled, time limit, node failure). A folder read
        # over SFTP (a login host) costs a round trip: looked at less often.
        every = 0.1 if self.job.cluster.login is None else 0.3
        checked = time.monotonic()
        while True:
            await self._read_output()
            ended = await self.job.read("exit.json")
            if ended is not None:
                await self._read_output()
                if ended.get("terminated"):  # Slurm sent TERM: say why, if it was Slurm's
                    await self._note_slurms_end()
                self.ended_with(int(ended.get("status", -1)))
                return
            if time.monotonic() - checked > 2.0:
                checked = time.monotonic()
                with contextlib.suppress(Exception):
                    state = await job_state(self.job.cluster, self.job.job_id)
                    if state is None or not state.live:
                        await asyncio.sleep(1.0)  # the nanny's last write, if any
                        if await self.job.read("exit.json") is None:
                            await self._read_output()
                            self._note(_ended_by_slurm(self.job.job_id, state))
                            self.ended_with(_status_of(state))
                            return
            await asyncio.sleep(every)

    async def _note_slurms_end(self) -> None:
        """Once the job has left the queue (moments after the kernel's end), note why
        when Slurm ended it: a time limit, preemption, someone's scancel."""
        with contextlib.suppress(Exception):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                state = await job_state(self.job.cluster, self.job.job_id)
                if state is None or not state.live:
                    if state is not None and state.state.split()[0] in SLURMS_ENDS:
                        self._note(_ended_by_slurm(self.job.job_id, state))
                    return
                await asyncio.sleep(0.2)

    async def _read_output(self) -> None:
        data = await self.job.cluster.read(self.job.path("output.log"), self._tail)
        if data:
            self._tail += len(data)
            self.collected.append(data)

    def _note(self, text: str) -> None:
        self.collected.append(f"\n[kernel-providers] {text}\n".encode())

    async def signal(self, signum: int) -> None:
        """Deliver ``signum`` to the kernel: Slurm signals the job's nanny, which
        forwards it to the kernel's process group. SIGKILL, which no process can catch
        to forward, is asked for with a ``kill`` file the nanny looks for."""
        if self.poll() is not None:
            return
        if signum == _signal.SIGKILL:
            with contextlib.suppress(Exception):  # (there already, or the folder is gone)
                await self.job.cluster.write(self.job.path("kill"), "", new=True)
            return
        name = _signal.Signals(signum).name.removeprefix("SIG")
        await self.job.cluster.run("scancel", "--batch", f"--signal={name}", self.job.job_id)

    def attach_state(self) -> dict[str, Any] | None:
        """The job id, folder and login host: a job outlives the process that
        submitted it."""
        return {"job_id": self.job.job_id, "job_dir": self.job.folder,
                "login": self.job.cluster.login}

    def detach(self) -> None:
        """Let the job outlive this process: the reaper leaves it, and the lease says
        "detached" (the nanny no longer ends the kernel when renewals stop) until a
        process re-attaches; `kernel-providers cleanup` ends it if none does."""
        super().detach()
        self._lease.detach()

    def hold_claim(self, claim_file: Path) -> None:
        """Keep ``claim_file`` (this process re-attached to the job) until cleanup."""
        self._claim_file = claim_file
        self.cancel_at_cleanup(undo_if_orphaned({"remove_file": str(claim_file)}))

    async def free_resources(self) -> None:
        """Cancel the job (if it still runs), wait until it left the queue (it may be
        completing for a moment), and remove its folder."""
        self._lease.release()
        self._watch.cancel()
        if self._claim_file is not None:
            self._claim_file.unlink(missing_ok=True)
        cluster = self.job.cluster
        try:
            with contextlib.suppress(Exception):
                await cluster.run("scancel", self.job.job_id)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    state = await job_state(cluster, self.job.job_id)
                    if state is None or not state.live:
                        break
                    await asyncio.sleep(0.1)
            if self.tunnel is not None:
                await self.tunnel.close()
            await cluster.remove_tree(self.job.folder)
        finally:
            await cluster.close()


#: how a job ends when Slurm, not its kernel, ends it (by its final state)
SLURMS_ENDS = {"TIMEOUT": "its time limit was reached: raise `time` in the profile",
               "CANCELLED": "it was cancelled (scancel, or an administrator)",
               "NODE_FAIL": "its node failed", "PREEMPTED": "it was preempted",
               "OUT_OF_MEMORY": "it ran out of memory: raise `mem` in the profile"}


def _ended_by_slurm(job_id: str, state: JobState | None) -> str:
    if state is None:
        return f"Slurm no longer knows job {job_id}: it ended without its kernel's status"
    because = SLURMS_ENDS.get(state.state.split()[0], f"its state is {state.state}")
    return f"Slurm ended job {job_id}: {because} (reason: {state.reason or 'none'})"


def _status_of(state: JobState | None) -> int | None:
    # ExitCode is "<code>:<signal>"; a signal wins, as Popen reports it.
    if state is None or ":" not in state.exit_code:
        return None
    code, _, sig = state.exit_code.partition(":")
    return -int(sig) if sig.isdigit() and int(sig) else int(code) if code.isdigit() else None


def sbatch_options(profile: SlurmProfile, name: str, comment: str, folder: str) -> list[str]:
    """The sbatch options of a profile (argv items, each quoted on a login host: nothing
    here is interpreted by a shell)."""
    options = [f"--job-name={name}", f"--comment={comment}",
               f"--output={posixpath.join(folder, 'output.log')}", f"--chdir={folder}",
               "--no-requeue"]
    for flag, value in (("--partition", profile.partition), ("--time", profile.time),
                        ("--cpus-per-task", profile.cpus), ("--mem", profile.mem),
                        ("--gres", profile.gres), ("--account", profile.account),
                        ("--qos", profile.qos), ("--constraint", profile.constraint)):
        if value is not None:
            options.append(f"{flag}={value}")
    return [*options, *profile.sbatch_args]


def batch_script(profile: SlurmProfile, python: str, folder: str) -> str:
    """The job's script: the profile's setup lines as written (its author's commands),
    then the nanny, every value quoted."""
    setup = "\n".join(profile.setup)
    nanny = shlex.join((python, "-u", posixpath.join(folder, "nanny.py"), folder))
    return f"#!/bin/sh\n{setup}\nexec {nanny}\n"


async def start_job(kernel_type: KernelType, profile: SlurmProfile, config: SlurmConfig,
                    options: LaunchOptions, cluster: Cluster, pool: HostPool) -> SlurmLauncher:
    """Submit the kernel's job to ``cluster``, wait for it in the queue (its progress
    told with ``report_progress``), then for its nanny to report, tunnel to its
    node over SSH (``pool``) unless it runs here, and wait for the kernel to listen.
    Nothing is left behind if this raises, Ctrl-C included: the job is cancelled, the
    tunnel closed, the folder removed."""
    info, dictated = kernel_connection(kernel_type, options)
    reuse: dict[str, Any] = dict(dictated or options.connection_info or {})
    folder = await _job_folder(cluster, profile.job_dir or config.job_dir)
    job: Job | None = None
    tunnel: Tunnel | None = None
    undo = None
    try:
        request = {"kernel": profile.kernel, "key": info["key"], "env": dict(options.env),
                   "cwd": options.cwd, "kernel_name": kernel_type.name,
                   "lease_seconds": config.lease_seconds,
                   # a client's own file, or a restart (its clients stay connected)
                   "ports": {p: int(reuse[p]) for p in PORT_NAMES if reuse.get(p)}}
        for name, text in (("request.json", json.dumps(request)),
                           ("nanny.py", NANNY.read_text()), ("lease", "")):
            await cluster.write(posixpath.join(folder, name), text, new=True)
        stamp = process_stamp()
        # Unique (the folder's token): the reaper can cancel it by name, registered
        # before the job exists, so a process killed right after sbatch leaves nothing.
        name = f"kp-{kernel_type.name}-{posixpath.basename(folder).removeprefix('job-')}"
        undo = undo_if_orphaned({"call": "kernel_providers_slurm.jobs:cancel_job",
                                 "kwargs": {"name": name, "job_dir": folder,
                                            **cluster.reaper_kwargs()}})
        tag = owner_tag(name, stamp, kernel_type.id)
        comment = f"{COMMENT_PREFIX} launcher={stamp} kernel={kernel_type.id} owner={tag}"
        script = batch_script(profile, profile.python or config.python, folder)
        job_id = await submit(cluster, sbatch_options(profile, name, comment, folder),
                              script, kernel_type.id)
        job = Job(job_id, folder, cluster)
        started = await _until_started(kernel_type, job, config)
        wanted = reuse if all(reuse.get(p) for p in PORT_NAMES) else None
        reachable, tunnel = await reach(job, started, info, wanted, pool, kernel_type.id)
        client_info, path, owned = client_connection(kernel_type, options, reachable,
                                                     dictated)
        try:
            launcher = SlurmLauncher(kernel_type, client_info, path, options, job, config,
                                     tunnel)
        except BaseException:
            if owned:
                remove_connection_file(path)
            raise
        launcher.cancel_at_cleanup(undo)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(cancel_on(cluster, job.job_id if job else None, folder))
        if tunnel is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(tunnel.close())
        with contextlib.suppress(Exception):
            await asyncio.shield(cluster.close())
        if undo is not None:
            undo.cancel()
        raise
    await launcher.listening_or_cleaned_up(ready_seconds(options))
    return launcher


async def reach(job: Job, started: dict[str, Any], info: dict[str, Any],
                wanted: dict[str, Any] | None, pool: HostPool, kernel_id: str
                ) -> tuple[dict[str, Any], Tunnel | None]:
    """The kernel's connection info as reachable from here, from its nanny's
    ``started`` report: its node's loopback ports if the node is this machine, else
    local forwards (on the ``wanted`` ports, if given) through an SSH tunnel to the
    node, opened through the login host if the job was submitted there."""
    ports = {p: int(v) for p, v in started["ports"].items()}
    host, node = str(started.get("host", "")), str(started.get("node") or "")
    if job.cluster.login is None and _is_this_machine(host):
        return {**info, **ports, "ip": "127.0.0.1"}, None
    address = await job.cluster.node_address(node or host)
    tunnel = Tunnel(pool, address, job.cluster.login,
                    await pool.acquire(address, via=job.cluster.login))
    try:
        forwarded = await forward_ports(tunnel.conn, ports, wanted,
                                        f"node {node or host} ({address})", kernel_id,
                                        tunnel.listeners)
    except BaseException:
        await tunnel.close()
        raise
    log.debug("%s: job %s on node %s, tunnelled over SSH to %s", kernel_id, job.job_id,
              node or host, address)
    return {**info, **forwarded}, tunnel


async def _job_folder(cluster: Cluster, root: str) -> str:
    try:
        return await cluster.make_folder(root)
    except Exception as exc:  # OSError here, an SFTP error on a login host
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise LaunchFailed(f"cannot make the job folder in {root} on"
                           f" {cluster.where} ({reason}): set job_dir in [providers.slurm]"
                           " to a folder you can write that the compute nodes see at the"
                           " same path") from None


async def _until_started(kernel_type: KernelType, job: Job,
                         config: SlurmConfig) -> dict[str, Any]:
    """Wait for the nanny's started.json, logging the queue's progress; raise if the
    job ends first or waits longer than queue_wait."""
    submitted = time.monotonic()
    last: tuple[str, str, str] | None = None
    while True:
        started = await job.read("started.json")
        if started is not None:
            return started
        ended = await job.read("exit.json")
        state = await job_state(job.cluster, job.job_id)
        if ended is not None or state is None or not state.live:
            output = await job.output()
            why = ended.get("error") if ended else _ended_by_slurm(job.job_id, state)
            raise KernelDied(f"kernel {kernel_type.id!r} (Slurm job {job.job_id}) ended"
                             f" while starting: {why}", output,
                             int(ended["status"]) if ended else _status_of(state))
        seen = (state.state, state.reason, state.start)
        if seen != last:
            last = seen
            reason = f" ({state.reason})" if state.reason not in ("", "None") else ""
            start = f", expected to start {state.start}" if state.state == "PENDING" \
                and state.start not in ("", "N/A", "Unknown") else ""
            report_progress(kernel_type.id, f"Slurm job {job.job_id}: {state.state}{reason}"
                            f"{start}", slurm_job=job.job_id, slurm_state=state.state,
                            slurm_reason=state.reason, slurm_start=state.start)
        waited = time.monotonic() - submitted
        if config.queue_wait and state.state == "PENDING" and waited > config.queue_wait:
            raise LaunchFailed(
                f"Slurm job {job.job_id} of {kernel_type.id} still waits in the queue after"
                f" {config.queue_wait:g} s ({state.reason or 'no reason given'}); it was"
                " cancelled: try again later, ask for less (cpus, mem, time) or another"
                " partition, or raise queue_wait in [providers.slurm] (0: no limit)")
        await asyncio.sleep(config.poll_interval if state.state == "PENDING" else 0.1)


def _is_this_machine(host: str) -> bool:
    names = {socket.gethostname(), socket.getfqdn(), "localhost"}
    return host in names or host.split(".")[0] == socket.gethostname().split(".")[0]
