"""The ``slurm`` provider: one kernel type per configured profile."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import posixpath
import shlex
import shutil
from typing import Any, ClassVar, cast

from kernel_providers.sdk import (
    ConnectionInfo,
    KernelLauncher,
    KernelProvider,
    KernelProviderError,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    ProviderUnavailable,
    claim,
    claimed,
    one_line,
    report_problem,
    stamp_alive,
    undo_if_orphaned,
    verify_tag,
    write_connection_file,
)
from kernel_providers_ssh.hosts import HostPool

from .cluster import Cluster, LocalCluster, LoginCluster, ssh_pool
from .config import SlurmConfig, SlurmProfile, parse_profiles
from .jobs import cancel_on, job_state
from .launcher import COMMENT_PREFIX, start_job
from .parameters import apply_parameters, declared_parameters

__all__ = ["SlurmProvider"]

# Run with the cluster's Python (stdlib + jupyter_client): the kernelspecs it sees.
LIST_SPECS = """
import json
try:
    from jupyter_client.kernelspec import KernelSpecManager
except ImportError:
    raise SystemExit("jupyter_client is not installed for this python")
specs = KernelSpecManager().get_all_specs()
print(json.dumps({name: {"display_name": s["spec"].get("display_name", name),
                         "language": s["spec"].get("language", "")}
                  for name, s in specs.items()}))
"""


def _summary(profile: SlurmProfile) -> dict[str, Any]:
    """What a profile asks Slurm for, for clients to show."""
    return {k: v for k, v in (("partition", profile.partition), ("time", profile.time),
                              ("cpus", profile.cpus), ("mem", profile.mem),
                              ("gres", profile.gres)) if v is not None}


class SlurmProvider(KernelProvider[SlurmConfig]):
    """Every profile of ``[providers.slurm.profiles]`` as ``slurm/<profile>``: a kernel
    that runs as a batch job on a compute node."""

    id: ClassVar[str] = "slurm"
    config_class: ClassVar[type[Any] | None] = SlurmConfig

    def __init__(self) -> None:
        self.config = SlurmConfig()
        self._profiles: dict[str, SlurmProfile] = {}
        self._pool: HostPool | None = None
        self._pool_config: SlurmConfig | None = None

    @property
    def pool(self) -> HostPool:
        """SSH connections to login hosts and compute nodes (made with the current
        config: its ssh_config and known_hosts)."""
        if self._pool is None or self._pool_config is not self.config:
            self._pool = ssh_pool(self.config.ssh_config, self.config.known_hosts)
            self._pool_config = self.config
        return self._pool

    def cluster(self, login: str | None) -> Cluster:
        """The cluster as seen from login host ``login`` (None: this machine)."""
        return LocalCluster() if login is None else LoginCluster(self.pool, login)

    async def find_kernels(self) -> list[KernelType]:
        """The configured profiles (those submitting from this machine need Slurm's
        commands on PATH; a login host is not asked until a launch, except by profiles
        that list the cluster's kernelspecs)."""
        profiles = parse_profiles(self.config.profiles)
        no_sbatch = shutil.which("sbatch") is None
        if no_sbatch and profiles and all(p.login is None for p in profiles.values()):
            raise ProviderUnavailable(
                "Slurm's sbatch is not on PATH: install Slurm's client commands (Debian:"
                " slurm-client) with the cluster's configuration, or leave the provider"
                " out with KERNEL_PROVIDERS_DISABLE=slurm")
        self._profiles = {}
        kernels = []
        for name, profile in profiles.items():
            if profile.login is None and no_sbatch:
                report_problem(
                    f"slurm/{name}: Slurm's sbatch is not on PATH: install Slurm's client"
                    " commands (Debian: slurm-client) with the cluster's configuration,"
                    f" or set login = \"<ssh alias>\" in [providers.slurm.profiles.{name}]")
                continue
            kernel = KernelType(
                id=f"slurm/{name}", provider=self.id,
                display_name=profile.display_name or f"Slurm {name}",
                language=profile.language,
                metadata={"slurm": _summary(profile), "poolable": profile.pool},
                parameters=declared_parameters(profile))
            self._profiles[kernel.id] = profile
            kernels.append(kernel)
            if profile.kernelspecs:
                for spec_kernel, spec_profile in await self._cluster_specs(name, profile):
                    self._profiles[spec_kernel.id] = spec_profile
                    kernels.append(spec_kernel)
        return kernels

    async def _cluster_specs(self, name: str, profile: SlurmProfile
                             ) -> list[tuple[KernelType, SlurmProfile]]:
        """``slurm/<name>/<spec>`` for each kernelspec the cluster lists (run where
        the profile submits, after its setup lines); problems are reported."""
        cluster = self.cluster(profile.login)
        script = "\n".join([*profile.setup, shlex.join([profile.python or self.config.python, "-c",
                                                         LIST_SPECS])])
        try:
            status, out, err = await cluster.run("sh", "-c", script)
            specs = json.loads(out.strip().splitlines()[-1]) if status == 0 else None
        except (KernelProviderError, OSError, ValueError, IndexError,
                asyncio.TimeoutError, TimeoutError) as exc:
            status, specs, err = -1, None, str(exc)
        finally:
            await cluster.close()
        if not isinstance(specs, dict):
            report_problem(f"slurm/{name}: could not list the cluster's kernelspecs on"
                           f" {cluster.where}: {one_line(err.strip()) or 'no answer'};"
                           " is jupyter_client installed for the profile's python there?")
            return []
        found = []
        for spec, about in sorted(specs.items()):
            if not isinstance(about, dict):
                continue
            kernel = KernelType(
                id=f"slurm/{name}/{spec}", provider=self.id,
                display_name=f"{about.get('display_name') or spec} (Slurm {name})",
                language=str(about.get("language") or profile.language),
                metadata={"slurm": {**_summary(profile), "kernelspec": spec},
                          "poolable": profile.pool},
                parameters=declared_parameters(profile))
            found.append((kernel, dataclasses.replace(profile, kernel=spec)))
        return found

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Submit the kernel's job and return once the kernel listens on its node."""
        profile = apply_parameters(kernel_type.id, self.listed(self._profiles, kernel_type),
                                   options.parameters)
        return await start_job(kernel_type, profile, self.config, options,
                               self.cluster(profile.login), self.pool)

    async def attach(self, kernel_type: KernelType, state: dict[str, Any],
                     connection_info: ConnectionInfo) -> KernelLauncher:
        """Re-attach to a running job (``state`` from SlurmLauncher.attach_state)."""
        from .launcher import Job, SlurmLauncher, reach

        login = state.get("login")
        cluster = self.cluster(str(login) if login else None)
        job = Job(str(state.get("job_id", "")), str(state.get("job_dir", "")), cluster)
        status = await job_state(cluster, job.job_id)
        if status is None or not status.live or await job.read("exit.json") is not None \
                or await job.read("started.json") is None:
            await cluster.close()
            raise LaunchFailed(f"Slurm job {job.job_id} of {kernel_type.id} is"
                               f" {status.state if status else 'gone'}; start the kernel"
                               " again")
        started = await job.read("started.json") or {}
        try:
            reachable, tunnel = await reach(job, started, dict(connection_info),
                                            dict(connection_info), self.pool,
                                            kernel_type.id)
        except BaseException:
            await cluster.close()
            raise
        path = write_connection_file(cast(ConnectionInfo, reachable))
        launcher = SlurmLauncher(kernel_type, reachable, str(path), LaunchOptions(),
                                 job, self.config, tunnel)
        # Its comment names the launcher that submitted it: say that we own it now.
        launcher.hold_claim(claim(f"slurm:{job.job_id}"))
        launcher.cancel_at_cleanup(undo_if_orphaned({
            "call": "kernel_providers_slurm.jobs:cancel_job",
            "kwargs": {"job_id": job.job_id, "job_dir": job.folder,
                       **cluster.reaper_kwargs()}}))
        return launcher

    async def cleanup_orphans(self) -> list[str]:
        """Cancel this user's jobs of ours whose launching process is gone, on this
        machine's cluster and on every profile's login host."""
        logins = sorted({p.login for p in parse_profiles(self.config.profiles).values()
                         if p.login is not None})
        places: list[str | None] = [None] if shutil.which("squeue") else []
        removed = []
        for login in [*places, *logins]:
            cluster = self.cluster(login)
            try:
                removed += await self._orphans_on(cluster)
            except ProviderUnavailable as exc:
                report_problem(f"cleanup of Slurm jobs on {cluster.where}: {exc}")
            finally:
                await cluster.close()
        return removed

    async def _orphans_on(self, cluster: Cluster) -> list[str]:
        import getpass

        status, out, _ = await cluster.run("squeue", "-h", "-u", getpass.getuser(), "-o",
                                           "%i|%j|%Z|%k")
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
                # Its folder goes too, if it is the one made for it: its name carries
                # the token that ends the job's (verified) name.
                ours = posixpath.basename(folder.rstrip("/")) == \
                    "job-" + name.rsplit("-", 1)[-1]
                await cancel_on(cluster, job_id, folder if ours else None)
                where = f" on {cluster.where}" if cluster.login else ""
                removed.append(f"Slurm job {job_id} ({kernel_id}){where}")
        return removed
