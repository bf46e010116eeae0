"""A kernel in a Slurm job: submit it, follow it through the queue to its start, and the
launcher contract on top of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shlex
import shutil
import signal as _signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    undo_if_orphaned,
)

from .config import SlurmConfig, SlurmProfile
from .jobs import JobState, job_state, run, submit

__all__ = ["COMMENT_PREFIX", "Job", "SlurmLauncher", "start_job"]

log = logging.getLogger("kernel_providers_slurm")

#: how every job of ours is tagged: its comment starts so, then key=value fields
COMMENT_PREFIX = "kernel-providers"
#: what the lease file holds while no process holds the job (see SlurmLauncher.detach)
DETACHED = "detached"
NANNY = Path(__file__).with_name("nanny.py")


@dataclass
class Job:
    """A submitted job: its id and its folder (shared with the node)."""

    job_id: str
    folder: Path

    def read(self, name: str) -> dict[str, Any] | None:
        """``folder/name`` as JSON, or None while it is not there."""
        try:
            return dict(json.loads((self.folder / name).read_text()))
        except (OSError, ValueError):
            return None


class SlurmLauncher(WatchedLauncher):
    """A kernel running as Slurm job ``job.job_id`` (its nanny reports through
    ``job.folder``)."""

    def __init__(self, kernel_type: KernelType, connection_info: Any, connection_file: str,
                 options: LaunchOptions, job: Job, config: SlurmConfig) -> None:
        super().__init__(kernel_type, connection_info, connection_file, options)
        self.job, self.config = job, config
        self._tail = 0
        self._claim_file: Path | None = None
        self._watch = asyncio.ensure_future(self._follow())
        self._lease = asyncio.ensure_future(_renew_lease(job.folder, config.lease_seconds))

    async def _follow(self) -> None:
        # The nanny's exit.json says how the kernel ended; Slurm's state says when the
        # job ended without one (cancelled, time limit, node failure).
        checked = time.monotonic()
        while True:
            self._read_output()
            ended = self.job.read("exit.json")
            if ended is not None:
                self._read_output()
                self.ended_with(int(ended.get("status", -1)))
                return
            if time.monotonic() - checked > 2.0:
                checked = time.monotonic()
                with contextlib.suppress(Exception):
                    state = await job_state(self.job.job_id)
                    if state is None or not state.live:
                        await asyncio.sleep(1.0)  # the nanny's last write, if any
                        if self.job.read("exit.json") is None:
                            self._read_output()
                            self._note(_ended_by_slurm(self.job.job_id, state))
                            self.ended_with(_status_of(state))
                            return
            await asyncio.sleep(0.1)

    def _read_output(self) -> None:
        try:
            with open(self.job.folder / "output.log", "rb") as f:
                f.seek(self._tail)
                data = f.read()
        except OSError:
            return
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
            with contextlib.suppress(FileNotFoundError):  # (the job's folder is gone)
                _write_private(self.job.folder / "kill", "")
            return
        name = _signal.Signals(signum).name.removeprefix("SIG")
        await run("scancel", "--batch", f"--signal={name}", self.job.job_id)

    def attach_state(self) -> dict[str, Any] | None:
        """The job id and folder: a job outlives the process that submitted it."""
        return {"job_id": self.job.job_id, "job_dir": str(self.job.folder)}

    def detach(self) -> None:
        """Let the job outlive this process: the reaper leaves it, and the lease says
        "detached" (the nanny no longer ends the kernel when renewals stop) until a
        process re-attaches; `kernel-providers cleanup` ends it if none does."""
        super().detach()
        self._lease.cancel()
        with contextlib.suppress(OSError):
            (self.job.folder / "lease").write_text(DETACHED)

    def hold_claim(self, claim_file: Path) -> None:
        """Keep ``claim_file`` (this process re-attached to the job) until cleanup."""
        self._claim_file = claim_file
        self.cancel_at_cleanup(undo_if_orphaned({"remove_file": str(claim_file)}))

    async def free_resources(self) -> None:
        """Cancel the job (if it still runs), wait until it left the queue (it may be
        completing for a moment), and remove its folder."""
        self._lease.cancel()
        self._watch.cancel()
        if self._claim_file is not None:
            self._claim_file.unlink(missing_ok=True)
        await run("scancel", self.job.job_id)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            state = await job_state(self.job.job_id)
            if state is None or not state.live:
                break
            await asyncio.sleep(0.1)
        await asyncio.to_thread(shutil.rmtree, self.job.folder, True)


async def _renew_lease(folder: Path, seconds: float) -> None:
    """Renew ``folder/lease`` while this process runs: the nanny ends the kernel once
    it is ``seconds`` old (this process is gone)."""
    lease = folder / "lease"
    with contextlib.suppress(OSError):
        lease.write_text("")  # held (again): not detached
    while True:
        with contextlib.suppress(OSError):
            os.utime(lease)
        await asyncio.sleep(max(seconds / 4, 0.5))


def _ended_by_slurm(job_id: str, state: JobState | None) -> str:
    if state is None:
        return f"Slurm no longer knows job {job_id}: it ended without its kernel's status"
    what = {"TIMEOUT": "its time limit was reached: raise `time` in the profile",
            "CANCELLED": "it was cancelled (scancel, or an administrator)",
            "NODE_FAIL": "its node failed", "PREEMPTED": "it was preempted",
            "OUT_OF_MEMORY": "it ran out of memory: raise `mem` in the profile"}
    because = what.get(state.state.split()[0], f"its state is {state.state}")
    return f"Slurm ended job {job_id}: {because} (reason: {state.reason or 'none'})"


def _status_of(state: JobState | None) -> int | None:
    # ExitCode is "<code>:<signal>"; a signal wins, as Popen reports it.
    if state is None or ":" not in state.exit_code:
        return None
    code, _, sig = state.exit_code.partition(":")
    return -int(sig) if sig.isdigit() and int(sig) else int(code) if code.isdigit() else None


def sbatch_options(profile: SlurmProfile, name: str, comment: str, folder: Path) -> list[str]:
    """The sbatch options of a profile (argv items: nothing here meets a shell)."""
    options = [f"--job-name={name}", f"--comment={comment}",
               f"--output={folder / 'output.log'}", f"--chdir={folder}", "--no-requeue"]
    for flag, value in (("--partition", profile.partition), ("--time", profile.time),
                        ("--cpus-per-task", profile.cpus), ("--mem", profile.mem),
                        ("--gres", profile.gres), ("--account", profile.account),
                        ("--qos", profile.qos), ("--constraint", profile.constraint)):
        if value is not None:
            options.append(f"{flag}={value}")
    return [*options, *profile.sbatch_args]


def batch_script(profile: SlurmProfile, python: str, folder: Path) -> str:
    """The job's script: the profile's setup lines as written (its author's commands),
    then the nanny, every value quoted."""
    setup = "\n".join(profile.setup)
    nanny = " ".join(shlex.quote(p) for p in (python, "-u", str(folder / "nanny.py"),
                                              str(folder)))
    return f"#!/bin/sh\n{setup}\nexec {nanny}\n"


def _job_folder(config: SlurmConfig) -> Path:
    root = Path(os.path.expanduser(config.job_dir))
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = root / f"job-{secrets.token_hex(6)}"
        folder.mkdir(mode=0o700)
    except OSError as exc:
        raise LaunchFailed(f"cannot make the job folder in {root} ({exc.strerror}): set"
                           " job_dir in [providers.slurm] to a folder you can write that"
                           " the compute nodes see at the same path") from None
    return folder


def _write_private(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)


async def start_job(kernel_type: KernelType, profile: SlurmProfile, config: SlurmConfig,
                    options: LaunchOptions) -> SlurmLauncher:
    """Submit the kernel's job, wait for it in the queue (progress as log records on
    ``kernel_providers_slurm``), then for its nanny to report and the kernel to listen.
    Nothing is left behind if this raises, Ctrl-C included: the job is cancelled."""
    info, dictated = kernel_connection(kernel_type, options)
    reuse: dict[str, Any] = dict(dictated or options.connection_info or {})
    folder = await asyncio.to_thread(_job_folder, config)
    job: Job | None = None
    undo = None
    try:
        request = {"kernel": profile.kernel, "key": info["key"], "env": dict(options.env),
                   "cwd": options.cwd, "kernel_name": kernel_type.name,
                   "lease_seconds": config.lease_seconds,
                   # a client's own file, or a restart (its clients stay connected)
                   "ports": {p: int(reuse[p]) for p in PORT_NAMES if reuse.get(p)}}
        _write_private(folder / "request.json", json.dumps(request))
        _write_private(folder / "nanny.py", NANNY.read_text())
        _write_private(folder / "lease", "")
        stamp = process_stamp()
        # Unique (the folder's token): the reaper can cancel it by name, registered
        # before the job exists, so a process killed right after sbatch leaves nothing.
        name = f"kp-{kernel_type.name}-{folder.name.removeprefix('job-')}"
        undo = undo_if_orphaned({"call": "kernel_providers_slurm.jobs:cancel_job",
                                 "kwargs": {"name": name, "job_dir": str(folder)}})
        tag = owner_tag(name, stamp, kernel_type.id)
        comment = f"{COMMENT_PREFIX} launcher={stamp} kernel={kernel_type.id} owner={tag}"
        job_id = await submit(sbatch_options(profile, name, comment, folder),
                              batch_script(profile, config.python, folder), kernel_type.id)
        job = Job(job_id, folder)
        started = await _until_started(kernel_type, job, config)
        host = str(started.get("host", ""))
        if not _is_this_machine(host):
            raise LaunchFailed(
                f"job {job_id} of {kernel_type.id} runs on node {host}: reaching a kernel"
                " on another node (an SSH tunnel through the login host) is not built yet;"
                " run the provider on a machine that is the node, or see the HPC guide")
        reachable = {**info, **{p: int(v) for p, v in started["ports"].items()},
                     "ip": "127.0.0.1"}
        client_info, path, owned = client_connection(kernel_type, options, reachable,
                                                     dictated)
        try:
            launcher = SlurmLauncher(kernel_type, client_info, path, options, job, config)
        except BaseException:
            if owned:
                remove_connection_file(path)
            raise
        launcher.cancel_at_cleanup(undo)
    except BaseException:
        if job is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(run("scancel", job.job_id))
        await asyncio.to_thread(shutil.rmtree, folder, True)
        if undo is not None:
            undo.cancel()
        raise
    await launcher.listening_or_cleaned_up(ready_seconds(options))
    return launcher


async def _until_started(kernel_type: KernelType, job: Job,
                         config: SlurmConfig) -> dict[str, Any]:
    """Wait for the nanny's started.json, logging the queue's progress; raise if the
    job ends first or waits longer than queue_wait."""
    submitted = time.monotonic()
    last: tuple[str, str, str] | None = None
    while True:
        started = job.read("started.json")
        if started is not None:
            return started
        ended = job.read("exit.json")
        state = await job_state(job.job_id)
        if ended is not None or state is None or not state.live:
            output = _output(job)
            why = ended.get("error") if ended else _ended_by_slurm(job.job_id, state)
            raise KernelDied(f"kernel {kernel_type.id!r} (Slurm job {job.job_id}) ended"
                             f" while starting: {why}", output,
                             int(ended["status"]) if ended else _status_of(state))
        seen = (state.state, state.reason, state.start)
        if seen != last:
            last = seen
            log.info("Slurm job %s of %s: %s%s%s", job.job_id, kernel_type.id, state.state,
                     f" ({state.reason})" if state.reason and state.reason != "None" else "",
                     f", expected to start {state.start}"
                     if state.state == "PENDING" and state.start not in ("", "N/A") else "",
                     extra={"slurm_job": job.job_id, "slurm_state": state.state,
                            "slurm_reason": state.reason, "slurm_start": state.start})
        waited = time.monotonic() - submitted
        if config.queue_wait and state.state == "PENDING" and waited > config.queue_wait:
            raise LaunchFailed(
                f"Slurm job {job.job_id} of {kernel_type.id} still waits in the queue after"
                f" {config.queue_wait:g} s ({state.reason or 'no reason given'}); it was"
                " cancelled: try again later, ask for less (cpus, mem, time) or another"
                " partition, or raise queue_wait in [providers.slurm] (0: no limit)")
        await asyncio.sleep(config.poll_interval if state.state == "PENDING" else 0.1)


def _output(job: Job) -> str:
    try:
        return (job.folder / "output.log").read_text(errors="replace")
    except OSError:
        return ""


def _is_this_machine(host: str) -> bool:
    names = {socket.gethostname(), socket.getfqdn(), "localhost"}
    return host in names or host.split(".")[0] == socket.gethostname().split(".")[0]
