"""Slurm's commands, run on this machine: submit, look at, signal and cancel a job.
Every call is an argv (never a shell line), bounded in time, with errors that say what
Slurm said and what to do."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from dataclasses import dataclass

from kernel_providers.sdk import LaunchFailed, ProviderUnavailable, one_line

__all__ = ["JobState", "cancel_job", "job_state", "run", "submit"]

#: states of a job that has not ended (squeue's %T)
LIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
        "RESIZING", "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
COMMAND_SECONDS = 30.0


@dataclass
class JobState:
    """What Slurm says of a job: its state, the reason it waits (or ended), the
    estimated start ("N/A" if unknown), its node and its exit code."""

    state: str
    reason: str = ""
    start: str = ""
    node: str = ""
    exit_code: str = ""

    @property
    def live(self) -> bool:
        return self.state in LIVE


async def run(*argv: str, stdin: str | None = None,
              timeout: float = COMMAND_SECONDS) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a Slurm command."""
    if shutil.which(argv[0]) is None:
        raise ProviderUnavailable(
            f"Slurm's {argv[0]} is not on PATH: install Slurm's client commands (Debian:"
            " slurm-client) and its configuration (SLURM_CONF), or submit from a login"
            " host with `login = \"<ssh alias>\"` in the profile")
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


async def submit(options: list[str], script: str, kernel_id: str) -> str:
    """``sbatch --parsable OPTIONS`` with ``script`` on stdin; the job id."""
    try:
        status, out, err = await run("sbatch", "--parsable", *options, stdin=script)
    except asyncio.TimeoutError:
        raise LaunchFailed(f"sbatch did not answer within {COMMAND_SECONDS:g} s while"
                           f" submitting {kernel_id}: is slurmctld up? (`sinfo`)") from None
    if status != 0:
        raise LaunchFailed(f"Slurm refused the job of {kernel_id}: {one_line(err.strip())};"
                           " check the profile's partition, time, cpus, mem, gres, account,"
                           " qos, constraint and sbatch_args (`sinfo` lists the"
                           " partitions)", err)
    return out.strip().split(";")[0]


async def job_state(job_id: str) -> JobState | None:
    """The job's state, from the queue or (once ended) from scontrol; None if Slurm no
    longer knows the job."""
    status, out, _ = await run("squeue", "-h", "-j", job_id, "-o", "%T|%r|%S|%N")
    line = out.strip().splitlines()[0] if status == 0 and out.strip() else ""
    if line:
        state, reason, start, node = [*line.split("|"), "", "", ""][:4]
        return JobState(state, reason, start, node)
    status, out, _ = await run("scontrol", "show", "job", "-o", job_id)
    if status != 0 or not out.strip():
        return None
    fields = dict(part.partition("=")[::2] for part in out.split() if "=" in part)
    return JobState(fields.get("JobState", "UNKNOWN"), fields.get("Reason", ""),
                    fields.get("StartTime", ""), fields.get("NodeList", ""),
                    fields.get("ExitCode", ""))


def cancel_job(job_id: str | None = None, job_dir: str | None = None,
               name: str | None = None) -> None:
    """Cancel the job, by id or by its (unique) name, if Slurm still has it, and
    remove its folder: the reaper's undo when the process that launched it ended
    without cleaning up, and ``cleanup``'s."""
    target = [job_id] if job_id else [f"--name={name}"] if name else []
    if target:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["scancel", *target], capture_output=True,
                           timeout=COMMAND_SECONDS, check=False)
    if job_dir:
        shutil.rmtree(job_dir, ignore_errors=True)
