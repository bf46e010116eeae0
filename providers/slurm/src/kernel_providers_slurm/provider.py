"""The ``slurm`` provider: one kernel type per configured profile."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

from kernel_providers.sdk import (
    ConnectionInfo,
    KernelLauncher,
    KernelProvider,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    ProviderUnavailable,
    claim,
    claimed,
    report_problem,
    stamp_alive,
    undo_if_orphaned,
    verify_tag,
    write_connection_file,
)

from .config import SlurmConfig, SlurmProfile, parse_profiles
from .jobs import cancel_job, job_state, run
from .launcher import COMMENT_PREFIX, start_job

__all__ = ["SlurmProvider"]


class SlurmProvider(KernelProvider[SlurmConfig]):
    """Every profile of ``[providers.slurm.profiles]`` as ``slurm/<profile>``: a kernel
    that runs as a batch job on a compute node."""

    id: ClassVar[str] = "slurm"
    config_class: ClassVar[type[Any] | None] = SlurmConfig

    def __init__(self) -> None:
        self.config = SlurmConfig()
        self._profiles: dict[str, SlurmProfile] = {}

    async def find_kernels(self) -> list[KernelType]:
        """The configured profiles (Slurm's commands must be on PATH to offer them)."""
        profiles = parse_profiles(self.config.profiles)
        if profiles and shutil.which("sbatch") is None:
            raise ProviderUnavailable(
                "Slurm's sbatch is not on PATH: install Slurm's client commands (Debian:"
                " slurm-client) with the cluster's configuration, or leave the provider"
                " out with KERNEL_PROVIDERS_DISABLE=slurm")
        self._profiles = {}
        kernels = []
        for name, profile in profiles.items():
            if profile.login is not None:
                report_problem(f"[providers.slurm.profiles.{name}]: login = "
                               f"{profile.login!r}: submitting through a login host is not"
                               " built yet; profile skipped")
                continue
            kernel = KernelType(
                id=f"slurm/{name}", provider=self.id,
                display_name=profile.display_name or f"Slurm {name}",
                language=profile.language,
                metadata={"slurm": {k: v for k, v in (
                    ("partition", profile.partition), ("time", profile.time),
                    ("cpus", profile.cpus), ("mem", profile.mem), ("gres", profile.gres))
                    if v is not None}})
            self._profiles[kernel.id] = profile
            kernels.append(kernel)
        return kernels

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Submit the kernel's job and return once the kernel listens on its node."""
        profile = self.listed(self._profiles, kernel_type)
        return await start_job(kernel_type, profile, self.config, options)

    async def attach(self, kernel_type: KernelType, state: dict[str, Any],
                     connection_info: ConnectionInfo) -> KernelLauncher:
        """Re-attach to a running job (``state`` from SlurmLauncher.attach_state)."""
        from .launcher import Job, SlurmLauncher

        job = Job(str(state.get("job_id", "")), Path(str(state.get("job_dir", ""))))
        status = await job_state(job.job_id)
        if status is None or not status.live or job.read("exit.json") is not None \
                or job.read("started.json") is None:
            raise LaunchFailed(f"Slurm job {job.job_id} of {kernel_type.id} is"
                               f" {status.state if status else 'gone'}; start the kernel"
                               " again")
        path = write_connection_file(connection_info)
        launcher = SlurmLauncher(kernel_type, connection_info, str(path), LaunchOptions(),
                                 job, self.config)
        # Its comment names the launcher that submitted it: say that we own it now.
        launcher.hold_claim(claim(f"slurm:{job.job_id}"))
        launcher.cancel_at_cleanup(undo_if_orphaned({
            "call": "kernel_providers_slurm.jobs:cancel_job",
            "kwargs": {"job_id": job.job_id, "job_dir": str(job.folder)}}))
        return launcher

    async def cleanup_orphans(self) -> list[str]:
        """Cancel this user's jobs of ours whose launching process is gone."""
        import getpass

        status, out, _ = await run("squeue", "-h", "-u", getpass.getuser(), "-o",
                                   "%i|%j|%Z|%k")
        root = Path(os.path.expanduser(self.config.job_dir)).resolve()
        removed = []
        for line in out.splitlines() if status == 0 else []:
            job_id, name, folder, comment = [*line.split("|", 3), "", "", ""][:4]
            fields = dict(part.partition("=")[::2] for part in comment.split()[1:])
            if not comment.startswith(COMMENT_PREFIX + " "):
                continue
            stamp, kernel_id = fields.get("launcher", ""), fields.get("kernel", "")
            if not verify_tag(fields.get("owner", ""), name, stamp, kernel_id):
                continue  # not ours: a look-alike comment, another user's or machine's
            if stamp_alive(stamp) is False and not claimed(f"slurm:{job_id}"):
                # Its folder goes too: the job's working dir, if it is one of ours.
                ours = Path(folder).resolve().parent == root
                await asyncio.to_thread(cancel_job, job_id, folder if ours else None)
                removed.append(f"Slurm job {job_id} ({kernel_id})")
        return removed
