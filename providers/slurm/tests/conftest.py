"""A real Slurm cluster on this machine (scripts/slurm-cluster: munged, slurmctld, one
slurmd) for the whole test session; its SLURM_CONF in the environment of every test."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel_providers.testing import unavailable

REPO = Path(__file__).resolve().parents[3]
CLUSTER = Path("/tmp/kp-slurm-tests")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """The cluster's slurm.conf (started here, stopped at the end of the session)."""
    if os.geteuid() != 0 or not all(map(shutil.which, ("slurmctld", "slurmd", "sbatch",
                                                       "munged"))):
        unavailable("a Slurm cluster needs root and Debian's slurmctld, slurmd,"
                    " slurm-client and munge")
    script = REPO / "scripts" / "slurm-cluster"
    done = subprocess.run(["bash", str(script), "start", str(CLUSTER)], capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"the Slurm cluster did not start: {done.stderr}")
    conf = done.stdout.strip().splitlines()[-1]
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield Path(conf)
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        subprocess.run(["bash", str(script), "stop", str(CLUSTER)], capture_output=True,
                       timeout=60, check=False)

