"""Slurm's commands on a cluster (this machine's, or a login host's): submit, look at
and cancel a job, with errors that say what Slurm said and what to do."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from kernel_providers.sdk import LaunchFailed, one_line

from .cluster import COMMAND_SECONDS, Cluster, LocalCluster, LoginCluster, ssh_pool

__all__ = ["JobState", "cancel_job", "job_state", "submit"]

#: states of a job that has not ended (squeue's %T)
LIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
        "RESIZING", "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}


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


async def submit(cluster: Cluster, options: list[str], script: str, kernel_id: str) -> str:
    """``sbatch --parsable OPTIONS`` with ``script`` on stdin; the job id."""
    try:
        status, out, err = await cluster.run("sbatch", "--parsable", *options, stdin=script)
    except (asyncio.TimeoutError, TimeoutError):
        raise LaunchFailed(f"sbatch on {cluster.where} did not answer within"
                           f" {COMMAND_SECONDS:g} s while submitting {kernel_id}: is"
                           " slurmctld up? (`sinfo`)") from None
    if status != 0:
        raise LaunchFailed(f"Slurm refused the job of {kernel_id}: {one_line(err.strip())};"
                           " check the profile's partition, time, cpus, mem, gres, account,"
                           " qos, constraint and sbatch_args (`sinfo` lists the"
                           " partitions)", err)
    return out.strip().split(";")[0]


async def job_state(cluster: Cluster, job_id: str) -> JobState | None:
    """The job's state, from the queue or (once ended) from scontrol; None if Slurm no
    longer knows the job."""
    status, out, _ = await cluster.run("squeue", "-h", "-j", job_id, "-o", "%T|%r|%S|%N")
    line = out.strip().splitlines()[0] if status == 0 and out.strip() else ""
    if line:
        state, reason, start, node = [*line.split("|"), "", "", ""][:4]
        return JobState(state, reason, start, node)
    status, out, _ = await cluster.run("scontrol", "show", "job", "-o", job_id)
    if status != 0 or not out.strip():
        return None
    fields = dict(part.partition("=")[::2] for part in out.split() if "=" in part)
    return JobState(fields.get("JobState", "UNKNOWN"), fields.get("Reason", ""),
                    fields.get("StartTime", ""), fields.get("NodeList", ""),
                    fields.get("ExitCode", ""))


def cancel_job(job_id: str | None = None, job_dir: str | None = None,
               name: str | None = None, login: str | None = None,
               **ssh: Any) -> None:
    """Cancel the job, by id or by its (unique) name, if Slurm still has it, and
    remove its folder (on login host ``login`` if given, reached with the ``ssh``
    client files): the reaper's undo when the process that launched it ended without
    cleaning up, and ``cleanup``'s."""
    async def cancel() -> None:
        cluster = LoginCluster(ssh_pool(**ssh), login) if login else LocalCluster()
        try:
            await cancel_on(cluster, job_id, job_dir, name)
        finally:
            await cluster.close()

    asyncio.run(cancel())


async def cancel_on(cluster: Cluster, job_id: str | None = None,
                    job_dir: str | None = None, name: str | None = None) -> None:
    """``cancel_job`` on ``cluster``, within this event loop; errors are swallowed
    (what cannot be cancelled now is ``cleanup``'s, or ends with its lease)."""
    target = [job_id] if job_id else [f"--name={name}"] if name else []
    if target:
        with contextlib.suppress(Exception):
            await cluster.run("scancel", *target)
    if job_dir:
        with contextlib.suppress(Exception):
            await cluster.remove_tree(job_dir)
