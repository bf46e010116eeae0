"""A real Slurm cluster on this machine for the whole test session (see
kernel_providers_slurm.testing), with its containerised nodes and login host where
Docker runs (always in CI); its SLURM_CONF in the environment of every test."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """The cluster's slurm.conf (started here, stopped at the end of the session)."""
    from kernel_providers_slurm.testing import slurm_cluster

    with slurm_cluster(nodes=_docker_runs()) as conf:
        yield conf


def _docker_runs() -> bool:
    if os.environ.get("CI"):
        return True  # required there: a missing engine fails the run
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True, check=False).returncode == 0
