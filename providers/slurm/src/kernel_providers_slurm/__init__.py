"""kernel-providers plugin for Slurm clusters: kernels as batch jobs on compute nodes,
one kernel type per configured profile, as ``slurm/<profile>``."""

from __future__ import annotations

from .config import SlurmConfig, SlurmProfile
from .launcher import SlurmLauncher
from .provider import SlurmProvider

__all__ = ["SlurmConfig", "SlurmLauncher", "SlurmProfile", "SlurmProvider"]
