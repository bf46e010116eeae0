"""``[providers.slurm]`` options and its profiles (one kernel type each)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from kernel_providers.sdk import ConfigError, build_options

__all__ = ["SlurmConfig", "SlurmProfile", "parse_profiles"]


@dataclass
class SlurmProfile:
    """``[providers.slurm.profiles.<name>]``: what to ask Slurm for and what to run."""

    #: sbatch --partition (default: the cluster's default partition)
    partition: str | None = None
    #: sbatch --time, Slurm's format: "30" (minutes), "2:00:00", "1-00:00:00"
    time: str | None = None
    #: sbatch --cpus-per-task
    cpus: int | None = None
    #: sbatch --mem, e.g. "4G"
    mem: str | None = None
    #: sbatch --gres, e.g. "gpu:1"
    gres: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    #: more sbatch options, one list item each (e.g. ["--exclusive"])
    sbatch_args: list[str] = field(default_factory=list)
    #: what runs on the node: a kernelspec name there ("python3"), an environment's
    #: folder (its bin/python runs ipykernel), or an argv with "{connection_file}"
    kernel: str | list[str] = "python3"
    #: shell lines run before the kernel on the node ("module load python/3.11", an
    #: activation): the profile's author's own commands, run as written
    setup: list[str] = field(default_factory=list)
    #: an SSH host alias to submit from (absent: this machine's Slurm commands); the
    #: compute nodes are then reached through it, and job_dir is a folder there
    login: str | None = None
    #: the jobs' folder for this profile (default: [providers.slurm] job_dir); with
    #: login, a path on the cluster ("~/..." is the home there)
    job_dir: str | None = None
    #: the nodes' Python that runs our nanny (default: [providers.slurm] python)
    python: str | None = None
    #: also list the cluster's kernelspecs (as the login host, or this machine, sees
    #: them after the setup lines) as slurm/<profile>/<spec>, each run on a node
    kernelspecs: bool = False
    #: may a warm pool ([pool]) hold this profile's kernel, and so its allocation,
    #: idle? (default: no)
    pool: bool = False
    #: partitions a launch may pick with its ``partition`` parameter
    partitions: list[str] = field(default_factory=list)
    #: the most a launch's ``time`` / ``cpus`` / ``mem`` parameters may ask for
    max_time: str | None = None
    max_cpus: int | None = None
    max_mem: str | None = None
    #: --gres values a launch may pick with its ``gres`` parameter
    gres_choices: list[str] = field(default_factory=list)
    #: the name clients show (default: "Slurm <name>")
    display_name: str | None = None
    #: the kernel's language (for clients)
    language: str = "python"


@dataclass
class SlurmConfig:
    """``[providers.slurm]``: profiles, and where jobs keep their files."""

    #: profile name -> its table (see SlurmProfile)
    profiles: dict[str, Any] = field(default_factory=dict)
    #: a folder the compute nodes see at the same path (home directories usually are):
    #: each job gets a 0700 folder there for its request, ports and output
    job_dir: str = "~/.local/share/kernel-providers/slurm"
    #: the Python on the nodes that runs our nanny (stdlib only)
    python: str = "python3"
    #: seconds a job may wait in the queue before the launch gives up and cancels it
    #: (0: wait as long as it takes)
    queue_wait: float = 0.0
    #: seconds between two looks at the queue
    poll_interval: float = 1.0
    #: seconds after which the nanny ends a kernel whose launcher stopped renewing its
    #: lease (the launching process is gone)
    lease_seconds: float = 20.0
    #: the OpenSSH client config for login hosts and compute nodes (default
    #: ~/.ssh/config: HostName, User, IdentityFile, ProxyJump per host)
    ssh_config: str | None = None
    #: the known_hosts file their host keys are verified against (default
    #: ~/.ssh/known_hosts); a node is looked up by its Slurm address (NodeAddr)
    known_hosts: str | None = None


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_profiles(profiles: dict[str, Any]) -> dict[str, SlurmProfile]:
    """Every profile, checked: an unknown key or a value of the wrong type is a
    ConfigError naming the profile and the key."""
    known = {f.name for f in dataclasses.fields(SlurmProfile)}
    parsed = {}
    for name, table in profiles.items():
        where = f"[providers.slurm.profiles.{name}]"
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: a profile name is letters, digits, '.', '_' and"
                              " '-' (it becomes the kernel id slurm/<name>)")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table of options, got {table!r}")
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: "
                              f"{', '.join(sorted(known))})")
        profile: SlurmProfile = build_options(SlurmProfile, table, where)
        if isinstance(profile.kernel, list) and not profile.kernel:
            raise ConfigError(f"{where}: kernel must not be an empty list")
        parsed[name] = profile
    return parsed
