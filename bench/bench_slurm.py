"""Launch-to-ready of a Slurm kernel on an idle cluster: ours (`slurm/<profile>`) vs
what people write by hand — `sbatch --wrap "python -m ipykernel_launcher -f FILE"`,
then polling for the connection file ipykernel writes and waiting for the first
kernel_info reply. Interleaved in one run on the cluster scripts/slurm-cluster starts
(as root). Target (issue 12): ratio <= 1.2.

With Docker, the same on a containerised compute node (another host): ours through
its SSH tunnel vs by hand with `ssh -N -L` (five forwards) to the node once the
connection file appears.

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


async def written(path: Path) -> Any:
    """The connection file ipykernel writes, polled for as people do."""
    while True:
        try:
            info: Any = json.loads(path.read_text())
            if all(info.get(n) for n in NAMES):
                return info
        except (OSError, ValueError):
            pass
        await asyncio.sleep(0.05)


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
        info = await written(path)
        async with KernelConnection(info) as conn:
            await conn.wait_ready(120, lambda: True)
            elapsed = time.perf_counter() - start
    finally:
        subprocess.run(["scancel", job], check=False)
        path.unlink(missing_ok=True)
    return elapsed


async def by_hand_remote(folder: Path, ssh: Path) -> float:
    """The same on partition "remote", plus `ssh -N -L` to the node for the ports."""
    path = folder / f"kernel-{time.monotonic_ns()}.json"
    start = time.perf_counter()
    done = subprocess.run(
        ["sbatch", "--parsable", "-p", "remote", "-c", "1", "-o", "/dev/null", "--wrap",
         f"exec python3 -m ipykernel_launcher -f {path}"],
        capture_output=True, text=True, check=True)
    job = done.stdout.strip().split(";")[0]
    tunnel = None
    try:
        info = await written(path)
        node = subprocess.run(["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True,
                              text=True, check=True).stdout.strip()
        shown = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True,
                               text=True, check=True).stdout
        address = next(p.split("=", 1)[1] for p in shown.split() if p.startswith("NodeAddr="))
        local = dict(zip(NAMES, free_ports(5), strict=True))
        forwards = [a for n in NAMES for a in ("-L", f"{local[n]}:127.0.0.1:{info[n]}")]
        tunnel = subprocess.Popen(["ssh", "-F", str(ssh / "config"), "-o",
                                   f"UserKnownHostsFile={ssh / 'known_hosts'}", "-o",
                                   "ExitOnForwardFailure=yes", "-N", *forwards, address])
        async with KernelConnection({**info, **local, "ip": "127.0.0.1"}) as conn:
            await conn.wait_ready(120, lambda: True)
            elapsed = time.perf_counter() - start
    finally:
        if tunnel is not None:
            tunnel.terminate()
            tunnel.wait()
        subprocess.run(["scancel", job], check=False)
        path.unlink(missing_ok=True)
    return elapsed


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


async def ours(finder: KernelFinder, kernel_id: str = "slurm/bench") -> float:
    start = time.perf_counter()
    launcher = await finder.launch(kernel_id)
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
    nodes = bool(os.environ.get("CI")) or subprocess.run(
        ["docker", "info"], capture_output=True, check=False).returncode == 0 \
        if shutil.which("docker") else False
    conf = subprocess.run(["bash", str(script), "start", str(cluster),
                           *(["--nodes"] if nodes else [])], capture_output=True,
                          text=True, check=True).stdout.strip().splitlines()[-1]
    os.environ["SLURM_CONF"] = conf
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "runtime").mkdir(mode=0o700)
            os.environ["JUPYTER_RUNTIME_DIR"] = str(folder / "runtime")
            shared = cluster / "jobs" / f"bench-{os.getpid()}"  # seen by the nodes too
            shared.mkdir(parents=True, exist_ok=True)
            finder = KernelFinder(Config(providers={"slurm": {
                "job_dir": str(folder / "jobs"), "python": sys.executable,
                "poll_interval": 0.2, "ssh_config": str(cluster / "ssh" / "config"),
                "known_hosts": str(cluster / "ssh" / "known_hosts"), "profiles": {
                    "bench": {"cpus": 1},
                    "remote": {"cpus": 1, "partition": "remote", "python": "python3",
                               "kernel": [
                        "python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                        "job_dir": str(shared)}}}}))
            mine: list[float] = []
            hand: list[float] = []
            mine_remote: list[float] = []
            hand_remote: list[float] = []

            async def run() -> None:
                await finder.find_kernels()
                await ours(finder)  # warm-up
                await by_hand(folder)
                for _ in range(reps):
                    mine.append(await ours(finder))
                    hand.append(await by_hand(folder))
                if nodes:
                    await ours(finder, "slurm/remote")
                    await by_hand_remote(shared, cluster / "ssh")
                    for _ in range(reps):
                        mine_remote.append(await ours(finder, "slurm/remote"))
                        hand_remote.append(await by_hand_remote(shared, cluster / "ssh"))

            try:
                asyncio.run(run())
            finally:
                shutil.rmtree(shared, ignore_errors=True)
    finally:
        subprocess.run(["bash", str(script), "stop", str(cluster)], check=False)
    m, h = (statistics.median(x) * 1000 for x in (mine, hand))
    print(f"launch-to-ready of a Slurm kernel (idle one-node cluster), median of {reps},"
          " interleaved:")
    print(f"  ours (slurm/<profile>):                          {m:.0f} ms")
    print(f"  sbatch --wrap ipykernel + polling its file:       {h:.0f} ms")
    print(f"RATIO slurm launch_to_ready ours/by-hand = {m / h:.2f} (target <= 1.2)")
    figures: dict[str, float] = {"ours_ms": m, "by_hand_ms": h, "repetitions": reps}
    if mine_remote:
        mr, hr = (statistics.median(x) * 1000 for x in (mine_remote, hand_remote))
        print("on a containerised compute node (another host), through SSH:")
        print(f"  ours (SSH tunnel opened by the launcher):        {mr:.0f} ms")
        print(f"  sbatch --wrap + polling + ssh -N -L (5 ports):   {hr:.0f} ms")
        print(f"RATIO slurm remote launch_to_ready ours/by-hand = {mr / hr:.2f}"
              " (target <= 1.2)")
        figures.update(ours_remote_ms=mr, by_hand_remote_ms=hr)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
