"""Launch-to-ready of a Slurm kernel on an idle cluster: ours (`slurm/<profile>`) vs
what people write by hand — `sbatch --wrap "python -m ipykernel_launcher -f FILE"`,
then polling for the connection file ipykernel writes and waiting for the first
kernel_info reply. Interleaved in one run on the cluster scripts/slurm-cluster starts
(as root). Target (issue 12): ratio <= 1.2.

    python bench/bench_slurm.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kernel_providers import Config, KernelFinder
from kernel_providers.protocol import KernelConnection

REPO = Path(__file__).resolve().parents[1]
NAMES = ["shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"]


async def by_hand(folder: Path) -> float:
    """sbatch --wrap ipykernel, poll for its connection file, wait for kernel_info."""
    path = folder / f"kernel-{time.monotonic_ns()}.json"
    start = time.perf_counter()
    done = subprocess.run(
        ["sbatch", "--parsable", "-c", "1", "-o", "/dev/null", "--wrap",
         f"exec {sys.executable} -m ipykernel_launcher -f {path}"],
        capture_output=True, text=True, check=True)
    job = done.stdout.strip().split(";")[0]
    try:
        while True:
            try:
                info: Any = json.loads(path.read_text())
                if all(info.get(n) for n in NAMES):
                    break
            except (OSError, ValueError):
                pass
            await asyncio.sleep(0.05)
        async with KernelConnection(info) as conn:
            await conn.wait_ready(120, lambda: True)
            elapsed = time.perf_counter() - start
    finally:
        subprocess.run(["scancel", job], check=False)
        path.unlink(missing_ok=True)
    return elapsed


async def ours(finder: KernelFinder) -> float:
    start = time.perf_counter()
    launcher = await finder.launch("slurm/bench")
    elapsed = time.perf_counter() - start
    await launcher.shutdown()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0 or not all(map(shutil.which, ("slurmctld", "slurmd", "sbatch"))):
        from _skip import skipped

        return skipped("a Slurm cluster needs root and Debian's slurmctld, slurmd,"
                       " slurm-client and munge (.ci/run installs them)")
    reps = 3 if args.quick else 10
    cluster = Path("/tmp/kp-slurm-bench")
    script = REPO / "scripts" / "slurm-cluster"
    conf = subprocess.run(["bash", str(script), "start", str(cluster)], capture_output=True,
                          text=True, check=True).stdout.strip().splitlines()[-1]
    os.environ["SLURM_CONF"] = conf
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "runtime").mkdir(mode=0o700)
            os.environ["JUPYTER_RUNTIME_DIR"] = str(folder / "runtime")
            finder = KernelFinder(Config(providers={"slurm": {
                "job_dir": str(folder / "jobs"), "python": sys.executable,
                "poll_interval": 0.2, "profiles": {"bench": {"cpus": 1}}}}))
            mine: list[float] = []
            hand: list[float] = []

            async def run() -> None:
                await finder.find_kernels()
                await ours(finder)  # warm-up
                await by_hand(folder)
                for _ in range(reps):
                    mine.append(await ours(finder))
                    hand.append(await by_hand(folder))

            asyncio.run(run())
    finally:
        subprocess.run(["bash", str(script), "stop", str(cluster)], check=False)
    m, h = (statistics.median(x) * 1000 for x in (mine, hand))
    print(f"launch-to-ready of a Slurm kernel (idle one-node cluster), median of {reps},"
          " interleaved:")
    print(f"  ours (slurm/<profile>):                          {m:.0f} ms")
    print(f"  sbatch --wrap ipykernel + polling its file:       {h:.0f} ms")
    print(f"RATIO slurm launch_to_ready ours/by-hand = {m / h:.2f} (target <= 1.2)")
    if args.json:
        Path(args.json).write_text(json.dumps({"ours_ms": m, "by_hand_ms": h,
                                               "repetitions": reps}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
