"""Launch-to-ready of a Docker kernel: ours vs a plain `docker run` of the same image and
argv, both timed to the kernel's first kernel_info reply (and iopub), interleaved in one
run. Target (issue 4): overhead <= 15 %. And a hand-out from a warm pool of the image's
kernel (issue 13: <= 50 ms).

    python bench/bench_docker.py [--quick] [--json FILE] [--image IMAGE]
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
from kernel_providers.connection import new_connection_info
from kernel_providers.protocol import KernelConnection

PORTS = {"shell_port": 50001, "iopub_port": 50002, "stdin_port": 50003,
         "control_port": 50004, "hb_port": 50005}


async def ours(finder: KernelFinder, kernel_id: str) -> float:
    start = time.perf_counter()
    launcher = await finder.launch(kernel_id)
    elapsed = time.perf_counter() - start
    await launcher.shutdown()
    return elapsed


async def pooled(finder: KernelFinder, kernel_id: str) -> float:
    """From the finder's warm pool (refilled, not timed): launch + kernel_info reply."""
    assert finder.pool is not None
    await finder.pool.filled()
    start = time.perf_counter()
    launcher = await finder.launch(kernel_id)
    await launcher.wait_ready(30)
    elapsed = time.perf_counter() - start
    await launcher.shutdown()
    return elapsed


async def plain_docker_run(image: str, folder: Path) -> float:
    """`docker run` with the connection file mounted, then the same ready check."""
    inner: dict[str, Any] = dict(new_connection_info(PORTS, ip="0.0.0.0"))
    run_dir = folder / f"run-{time.monotonic_ns()}"
    run_dir.mkdir()
    (run_dir / "c.json").write_text(json.dumps(inner))
    (run_dir / "c.json").chmod(0o600)
    start = time.perf_counter()
    argv = ["docker", "run", "-d", "--rm", "--init", "-v", f"{run_dir}:/kp"]
    for port in PORTS.values():
        argv += ["-p", f"127.0.0.1::{port}"]
    argv += [image, "python3", "-m", "ipykernel_launcher", "-f", "/kp/c.json"]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    container = (await proc.communicate())[0].decode().strip()
    proc = await asyncio.create_subprocess_exec(
        "docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}", container,
        stdout=asyncio.subprocess.PIPE)
    ports = json.loads((await proc.communicate())[0])
    info: Any = {**inner, "ip": "127.0.0.1"}
    for name, port in PORTS.items():
        info[name] = int(ports[f"{port}/tcp"][0]["HostPort"])
    async with KernelConnection(info) as conn:
        await conn.wait_ready(120, lambda: True)
    elapsed = time.perf_counter() - start
    subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    shutil.rmtree(run_dir, ignore_errors=True)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--image", default="kernel-providers-test:bookworm")
    args = parser.parse_args()
    if shutil.which("docker") is None or subprocess.run(
            ["docker", "image", "inspect", args.image], capture_output=True).returncode:
        from _skip import skipped

        return skipped(f"no Docker engine or no image {args.image}"
                       " (scripts/build-test-image builds it)")
    reps = 3 if args.quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "runtime").mkdir(mode=0o700)
        (folder / "config.toml").write_text("")
        os.environ["JUPYTER_RUNTIME_DIR"] = str(folder / "runtime")
        finder = KernelFinder(Config())
        kernel_id = f"docker/{args.image}"
        pooling = KernelFinder(Config(pool={kernel_id: {"size": 1}}))
        ours_s, plain_s, pooled_s = [], [], []

        async def run() -> None:
            await ours(finder, kernel_id)  # warm-up: image layers in the page cache
            await plain_docker_run(args.image, folder)
            await pooled(pooling, kernel_id)
            for _ in range(reps):
                ours_s.append(await ours(finder, kernel_id))
                plain_s.append(await plain_docker_run(args.image, folder))
                pooled_s.append(await pooled(pooling, kernel_id))
            assert pooling.pool is not None
            await pooling.pool.close()

        asyncio.run(run())
    a, b = statistics.median(ours_s), statistics.median(plain_s)
    figures = {"ours_s": a, "docker_run_s": b, "ratio": a / b, "repetitions": reps}
    print(f"launch-to-ready, median of {reps}, interleaved:")
    print(f"  kernel-providers docker provider: {a * 1000:.0f} ms")
    print(f"  plain `docker run` + ready check: {b * 1000:.0f} ms")
    print(f"RATIO docker launch_to_ready ours/docker-run = {a / b:.2f} (target <= 1.15)")
    c = statistics.median(pooled_s)
    figures["pooled_s"] = c
    print(f"  from a warm pool (hand-out + kernel_info): {c * 1000:.1f} ms (target <= 50 ms)")
    print(f"RATIO docker pooled/cold launch = {c / a:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
