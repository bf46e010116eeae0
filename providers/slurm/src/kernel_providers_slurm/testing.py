"""Test support: a real Slurm cluster on this machine for a test session
(``scripts/slurm-cluster`` of the repository: munged, slurmctld, one slurmd; with
``nodes``, two compute nodes and a login host in containers). Not shipped in the
wheel: it serves this repository's tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kernel_providers.testing import unavailable

__all__ = ["detached_elsewhere", "launching_process", "slurm_cluster"]

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


def detached_elsewhere(config: dict[str, Any], kernel_id: str
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """As a Jupyter server that persists its kernels, in a process of its own: launch
    ``kernel_id`` with ``[providers.slurm]`` = ``config``, run ``x = 41``, detach and
    end. The launcher's attach state and connection info."""
    script = textwrap.dedent(f"""
        import asyncio, json
        from kernel_providers import Config, KernelFinder
        async def main():
            finder = KernelFinder(Config(providers={{"slurm": json.loads({json.dumps(config)!r})}}))
            launcher = await finder.launch({kernel_id!r})
            await launcher.execute("x = 41")
            launcher.detach()
            print(json.dumps([launcher.attach_state(), dict(launcher.connection_info)]))
        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"the detaching process failed: {done.stderr[-3000:]}")
    state, info = json.loads(done.stdout)
    return dict(state), dict(info)


def launching_process(config: dict[str, Any], kernel_id: str, reaper: bool = True
                      ) -> tuple[subprocess.Popen[str], str]:
    """A process that launches ``kernel_id`` with ``[providers.slurm]`` = ``config``
    and sleeps (KERNEL_PROVIDERS_NO_REAPER unless ``reaper``); it and its kernel's job
    id. The caller ends it."""
    script = textwrap.dedent(f"""
        import asyncio, json
        from kernel_providers import Config, KernelFinder
        async def main():
            finder = KernelFinder(Config(providers={{"slurm": json.loads({json.dumps(config)!r})}}))
            launcher = await finder.launch({kernel_id!r})
            print(launcher.job.job_id, flush=True)
            await asyncio.sleep(3600)
        asyncio.run(main())
    """)
    env = {**os.environ, **({} if reaper else {"KERNEL_PROVIDERS_NO_REAPER": "1"})}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()
