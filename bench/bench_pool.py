"""The warm pool (issue 13), each figure against the cold path in the same run:

- Python API: KernelFinder.launch + a kernel_info round trip, from the finder's own pool
  (plain, and with a cwd and env to apply) vs a cold launch. Targets: p50 <= 20 ms,
  p95 <= 50 ms.
- Whole process: `kernel-providers run spec/python3 --code ...` with the pool service
  running vs the same command with KERNEL_PROVIDERS_POOL=0. Target: ratio <= 0.3.
- Memory: resident size of a pooled kernel and of the service.

    python bench/bench_pool.py [--quick] [--json FILE]
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
from typing import Any

KERNEL = "spec/python3"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def api(reps: int, folder: Path) -> dict[str, Any]:
    from kernel_providers import Config, KernelFinder, LaunchOptions

    pooled_finder = KernelFinder(Config(pool={KERNEL: {"size": 1}}))
    cold_finder = KernelFinder(Config())
    pool = pooled_finder.pool
    assert pool is not None
    asked = LaunchOptions(cwd=str(folder), env={"BENCH_MARK": "1"})

    async def timed(finder: Any, options: Any = None) -> float:
        start = time.perf_counter()
        launcher = await finder.launch(KERNEL, options)
        await launcher.wait_ready(30)  # a kernel_info round trip on a fresh connection
        elapsed = time.perf_counter() - start
        await launcher.shutdown()
        return elapsed

    plain: list[float] = []
    adapted: list[float] = []
    cold: list[float] = []
    try:
        await pool.filled()
        await timed(pooled_finder), await timed(cold_finder)  # warm-up
        for _ in range(reps):
            await pool.filled()
            plain.append(await timed(pooled_finder))
            await pool.filled()
            adapted.append(await timed(pooled_finder, asked))
            cold.append(await timed(cold_finder))
        status = pool.status()
    finally:
        await pool.close()
    rss = [r for t in status["types"].values() for r in t["rss"] if r]
    return {"plain": plain, "adapted": adapted, "cold": cold,
            "hits": status["types"][KERNEL]["hits"], "kernel_rss": rss,
            "holder_rss": status["holder_rss"]}


def whole_process(reps: int, env: dict[str, str]) -> dict[str, Any]:
    argv = [sys.executable, "-m", "kernel_providers"]
    code = ["run", KERNEL, "--code", "print(1)"]

    def status() -> dict[str, Any]:
        done = subprocess.run([*argv, "pool", "status", "--json"], env=env,
                              capture_output=True, text=True, check=True)
        return dict(json.loads(done.stdout))

    def ready() -> None:
        for _ in range(600):
            if status()["types"][KERNEL]["ready"]:
                return
            time.sleep(0.02)
        raise RuntimeError("the pool service did not refill")

    def run(extra: dict[str, str]) -> float:
        start = time.perf_counter()
        subprocess.run([*argv, *code], env={**env, **extra}, check=True,
                       capture_output=True)
        return time.perf_counter() - start

    subprocess.run([*argv, "pool", "serve", "--detach"], env=env, check=True,
                   capture_output=True)
    warm: list[float] = []
    cold: list[float] = []
    try:
        ready()
        run({}), run({"KERNEL_PROVIDERS_POOL": "0"})  # warm-up
        for _ in range(reps):
            ready()
            warm.append(run({}))
            cold.append(run({"KERNEL_PROVIDERS_POOL": "0"}))
        served = status()
    finally:
        subprocess.run([*argv, "pool", "stop"], env=env, capture_output=True)
    return {"warm": warm, "cold": cold, "hits": served["types"][KERNEL]["hits"],
            "holder_rss": served["holder_rss"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    reps = 5 if args.quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runtime = folder / "runtime"
        runtime.mkdir(mode=0o700)
        config = folder / "config.toml"
        config.write_text(f'[pool."{KERNEL}"]\nsize = 1\n')
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime),
               "KERNEL_PROVIDERS_CONFIG": str(config)}
        os.environ.update(env)
        # A user's Python caches bytecode (the warm-up runs write it): whole-process
        # figures without it would time the compiler, the same for both commands.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        inproc = asyncio.run(api(reps, folder))
        process = whole_process(reps, env)
    ms = {k: [v * 1000 for v in inproc[k]] for k in ("plain", "adapted", "cold")}
    cold50 = statistics.median(ms["cold"])
    print(f"launch-to-ready of {KERNEL} through the Python API, {reps} each, interleaved"
          f" ({inproc['hits']} pool hits):")
    for name, label in (("plain", "from the pool"), ("adapted", "from the pool, cwd+env set"),
                        ("cold", "cold")):
        print(f"  {label:30} p50 {statistics.median(ms[name]):6.1f} ms"
              f"   p95 {percentile(ms[name], 0.95):6.1f} ms")
    print(f"RATIO pool api p50 pooled/cold = {statistics.median(ms['plain']) / cold50:.3f}"
          f" (p50 {statistics.median(ms['plain']):.1f} ms, target <= 20 ms;"
          f" p95 {percentile(ms['plain'], 0.95):.1f} ms, target <= 50 ms)")
    warm, cold = (statistics.median(process[k]) * 1000 for k in ("warm", "cold"))
    print(f"`kernel-providers run {KERNEL} --code ...`, whole process, median of {reps}"
          f" ({process['hits']} pool hits):")
    print(f"  with the pool service:        {warm:6.0f} ms")
    print(f"  KERNEL_PROVIDERS_POOL=0:      {cold:6.0f} ms")
    print(f"RATIO pool run whole process warm/cold = {warm / cold:.2f} (target <= 0.3)")
    rss = inproc["kernel_rss"]
    print(f"memory: a pooled kernel {statistics.median(rss) / 2**20:.0f} MiB resident;"
          f" the service {process['holder_rss'] / 2**20:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"api_ms": ms, "run_warm_ms": warm,
                                               "run_cold_ms": cold, "kernel_rss": rss,
                                               "service_rss": process["holder_rss"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
