"""Launch-to-ready of a local ipykernel: kernel-providers vs jupyter_client's
start_new_kernel, interleaved in one run (median of each). Target (issue 13): <= 0.6.

    python bench/bench_launch.py [--quick] [--json FILE]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    reps = 3 if args.quick else 12
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Path(tmp) / "runtime"
        runtime.mkdir(mode=0o700)
        (Path(tmp) / "config.toml").write_text("")
        os.environ.update({"JUPYTER_RUNTIME_DIR": str(runtime),
                           "KERNEL_PROVIDERS_CONFIG": str(Path(tmp) / "config.toml")})
        from jupyter_client.manager import start_new_kernel

        from kernel_providers import KernelFinder

        finder = KernelFinder()
        loop = asyncio.new_event_loop()

        def ours() -> float:
            start = time.perf_counter()
            launcher = loop.run_until_complete(finder.launch("spec/python3"))
            elapsed = time.perf_counter() - start
            loop.run_until_complete(launcher.shutdown())
            return elapsed

        def theirs() -> float:
            start = time.perf_counter()
            manager, client = start_new_kernel(kernel_name="python3",
                                               stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
            elapsed = time.perf_counter() - start
            client.stop_channels()
            manager.shutdown_kernel(now=True)
            return elapsed

        ours(), theirs()  # warm-up: imports and the page cache
        a, b = [], []
        for _ in range(reps):
            a.append(ours())
            b.append(theirs())
        loop.close()
    ours_ms, theirs_ms = statistics.median(a) * 1000, statistics.median(b) * 1000
    print(f"launch-to-ready of spec/python3, median of {reps}, interleaved:")
    print(f"  kernel-providers KernelFinder.launch:   {ours_ms:.0f} ms")
    print(f"  jupyter_client start_new_kernel:        {theirs_ms:.0f} ms")
    print(f"RATIO launch_to_ready ours/jupyter_client = {ours_ms / theirs_ms:.2f}"
          " (target <= 0.6, issue 13)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"ours_ms": ours_ms, "jupyter_client_ms": theirs_ms, "repetitions": reps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
