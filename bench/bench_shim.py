"""Shim overhead: a venv kernel started through the kernelspec that
``kernel-providers jupyter sync`` writes (argv = our shim, which execs the kernel) vs the
kernel's own argv, both on a connection file the "client" wrote, measured from Popen to
the first kernel_info reply, interleaved in one run. Target (issue 10): <= 50 ms more.

    python bench/bench_shim.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kernel_providers.connection import allocate_ports, new_connection_info, write_connection_file
from kernel_providers.protocol import KernelConnection
from kernel_providers.testing.environments import ipykernel_wheel, make_venv


async def _ready(argv: list[str], folder: Path) -> float:
    """Seconds from Popen to the kernel's first kernel_info reply (and iopub)."""
    info = new_connection_info(allocate_ports(), kernel_name="bench")
    path = write_connection_file(info, folder)
    argv = [a.replace("{connection_file}", str(path)) for a in argv]
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        async with KernelConnection(info) as conn:
            await conn.wait_ready(60, lambda: process.poll() is None)
        return time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(30)
        path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    reps = 3 if args.quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "runtime").mkdir(mode=0o700)
        venvs = base / "venvs"
        prefix = make_venv(venvs / "benchenv", ipykernel_wheel(base))
        config = base / "config.toml"
        config.write_text(f'[providers.venv]\ndirs = ["{venvs}"]\ninclude_cwd = false\n')
        os.environ.update({
            "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "JUPYTER_DATA_DIR": str(base / "data"),
            "KERNEL_PROVIDERS_CONFIG": str(config),
            "KERNEL_PROVIDERS_DISABLE": "conda,docker,ssh,example"})
        subprocess.run([sys.executable, "-m", "kernel_providers", "jupyter", "sync"],
                       check=True, stdout=subprocess.DEVNULL)
        spec = json.loads((base / "data" / "kernels" / "venv-benchenv" / "kernel.json")
                          .read_text())
        shim = spec["argv"]
        own = [str(prefix / "bin" / "python"), "-m", "ipykernel_launcher", "-f",
               "{connection_file}"]
        loop = asyncio.new_event_loop()
        loop.run_until_complete(_ready(own, base))  # warm-up: the page cache
        loop.run_until_complete(_ready(shim, base))
        a, b = [], []
        for _ in range(reps):
            a.append(loop.run_until_complete(_ready(shim, base)))
            b.append(loop.run_until_complete(_ready(own, base)))
        loop.close()
    shim_ms, own_ms = statistics.median(a) * 1000, statistics.median(b) * 1000
    print(f"Popen to ready of a venv kernel, median of {reps}, interleaved:")
    print(f"  synced kernelspec (shim, exec):   {shim_ms:.0f} ms")
    print(f"  the kernel's own argv:            {own_ms:.0f} ms")
    print(f"  shim overhead:                    {shim_ms - own_ms:+.0f} ms (target <= 50)")
    print(f"RATIO shim/own_argv = {shim_ms / own_ms:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"shim_ms": shim_ms, "own_argv_ms": own_ms, "repetitions": reps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
