"""16 local kernels started at once, until every one answered kernel_info:
kernel-providers (asyncio.gather of KernelFinder.launch) vs jupyter_client's
AsyncMultiKernelManager (gather of start_kernel, then each kernel's kernel_info reply),
alternating in one run. Target (issue 13): ratio <= 0.7, zero failures.

    python bench/bench_concurrent.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COUNT = 16


async def ours(finder: Any) -> tuple[float, int]:
    start = time.perf_counter()
    results = await asyncio.gather(*(finder.launch("spec/python3") for _ in range(COUNT)),
                                   return_exceptions=True)
    elapsed = time.perf_counter() - start
    launchers = [r for r in results if not isinstance(r, BaseException)]
    await asyncio.gather(*(launcher.shutdown() for launcher in launchers))
    return elapsed, COUNT - len(launchers)


async def theirs() -> tuple[float, int]:
    from jupyter_client.multikernelmanager import AsyncMultiKernelManager

    manager = AsyncMultiKernelManager()

    async def one() -> None:
        kernel_id = await manager.start_kernel(kernel_name="python3")
        client = manager.get_kernel(kernel_id).client()
        client.start_channels()
        try:
            msg_id = client.kernel_info()
            while (await client.get_shell_msg(timeout=120))["parent_header"].get(
                    "msg_id") != msg_id:
                pass
        finally:
            client.stop_channels()

    start = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(COUNT)), return_exceptions=True)
    elapsed = time.perf_counter() - start
    await manager.shutdown_all(now=False)
    return elapsed, sum(isinstance(r, BaseException) for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    reps = 2 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Path(tmp) / "runtime"
        runtime.mkdir(mode=0o700)
        (Path(tmp) / "config.toml").write_text("")
        os.environ.update({"JUPYTER_RUNTIME_DIR": str(runtime),
                           "KERNEL_PROVIDERS_CONFIG": str(Path(tmp) / "config.toml"),
                           "KERNEL_PROVIDERS_POOL": "0"})
        from kernel_providers import KernelFinder

        finder = KernelFinder()
        a: list[float] = []
        b: list[float] = []
        failures = [0, 0]

        async def run() -> None:
            await ours(finder)  # warm-up: imports and the page cache
            for _ in range(reps):
                elapsed, failed = await ours(finder)
                a.append(elapsed)
                failures[0] += failed
                elapsed, failed = await theirs()
                b.append(elapsed)
                failures[1] += failed

        asyncio.run(run())
    ours_ms, theirs_ms = statistics.median(a) * 1000, statistics.median(b) * 1000
    print(f"{COUNT} local kernels started at once until all answered, median of {reps}:")
    print(f"  kernel-providers:                 {ours_ms:.0f} ms ({failures[0]} failures)")
    print(f"  jupyter_client MultiKernelManager: {theirs_ms:.0f} ms ({failures[1]} failures)")
    print(f"RATIO concurrent {COUNT} ours/jupyter_client = {ours_ms / theirs_ms:.2f}"
          " (target <= 0.7, zero failures)")
    if args.json:
        Path(args.json).write_text(json.dumps({"ours_ms": ours_ms, "theirs_ms": theirs_ms,
                                               "failures": failures}))
    return 1 if failures[0] else 0


if __name__ == "__main__":
    sys.exit(main())
