"""Test support: a real Slurm cluster on this machine for a test session
(``scripts/slurm-cluster`` of the repository: munged, slurmctld, one slurmd; with
``nodes``, two compute nodes and a login host in containers). Not shipped in the
wheel: it serves this repository's tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from kernel_providers.testing import unavailable

__all__ = ["slurm_cluster"]

REPO = Path(__file__).resolve().parents[4]


@contextlib.contextmanager
def slurm_cluster(folder: Path = Path("/tmp/kp-slurm-tests"),
                  nodes: bool = False) -> Iterator[Path]:
    """Start the cluster in ``folder`` (or find it running), set SLURM_CONF while the
    block runs, stop it after (if it started it); yields its slurm.conf. Fails in CI,
    skips elsewhere, where root or Slurm's packages are missing. ``nodes``: also the
    containerised nodes kpnode2 and kpnode3 (partition "remote") and login host
    kplogin, their ssh client files in ``folder/ssh``."""
    if os.geteuid() != 0 or not all(map(shutil.which, ("slurmctld", "slurmd", "sbatch",
                                                       "munged"))):
        unavailable("a Slurm cluster needs root and Debian's slurmctld, slurmd,"
                    " slurm-client and munge")
    script = REPO / "scripts" / "slurm-cluster"
    running = _alive(folder / "slurmctld.pid")  # another user of it stops it
    done = subprocess.run(["bash", str(script), "start", str(folder),
                           *(["--nodes"] if nodes else [])], capture_output=True,
                          text=True, timeout=900)  # (the first --nodes builds an image)
    if done.returncode != 0:
        raise RuntimeError(f"the Slurm cluster did not start: {done.stderr}")
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
        if not running:
            subprocess.run(["bash", str(script), "stop", str(folder)], capture_output=True,
                           timeout=60, check=False)


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True
