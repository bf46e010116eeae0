"""Listing: whole-process `kernel-providers list --json` vs `jupyter kernelspec list
--json` (target ratio <= 0.8, issue 13), and in-process discovery over 300 kernelspecs
(target < 30 ms), with jupyter_client's KernelSpecManager.get_all_specs() on the same folders
in the same run. Interleaved; medians; prints ratios.

    python bench/bench_list.py [--quick] [--json FILE]
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

N_SPECS = 300


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    reps = 3 if args.quick else 11
    figures: dict[str, float] = {}
    status = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kernels = root / "jupyter" / "kernels"
        for i in range(N_SPECS):
            folder = kernels / f"k{i:03d}"
            folder.mkdir(parents=True)
            (folder / "kernel.json").write_text(json.dumps({
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"Kernel {i}", "language": "python"}))
            if i % 3 == 0:
                (folder / "logo-64x64.png").write_bytes(b"\x89PNG")
        (root / "config.toml").write_text("")
        env = dict(os.environ, JUPYTER_PATH=str(root / "jupyter"),
                   KERNEL_PROVIDERS_CONFIG=str(root / "config.toml"))
        os.environ.update(env)

        ours_cli = shutil.which("kernel-providers")
        jupyter = shutil.which("jupyter")
        if ours_cli and jupyter:
            a, b, c = [], [], []
            for _ in range(reps):
                a.append(timed([ours_cli, "list", "--json", "--provider", "spec"], env))
                b.append(timed([jupyter, "kernelspec", "list", "--json"], env))
                c.append(timed([ours_cli, "list", "--json"], env))
            figures["cli_ours_ms"] = statistics.median(a) * 1000
            figures["cli_jupyter_ms"] = statistics.median(b) * 1000
            figures["cli_ours_all_providers_ms"] = statistics.median(c) * 1000
            print(f"whole process, {N_SPECS} kernelspecs, median of {reps}:"
                  f" kernel-providers list --json --provider spec"
                  f" {figures['cli_ours_ms']:.0f} ms, jupyter kernelspec list --json"
                  f" {figures['cli_jupyter_ms']:.0f} ms; every installed provider"
                  f" {figures['cli_ours_all_providers_ms']:.0f} ms")
            print(f"RATIO list_cli ours/jupyter = "
                  f"{figures['cli_ours_ms'] / figures['cli_jupyter_ms']:.2f} (target <= 0.8)")
        else:
            from _skip import skipped

            status = skipped("whole-process comparison: `kernel-providers` or `jupyter`"
                             " not on PATH")

        from jupyter_client.kernelspec import KernelSpecManager

        from kernel_providers import Config, KernelFinder

        cold, warm, ksm, found = [], [], [], 0
        for _ in range(reps * 2):
            finder = KernelFinder(Config())
            loop = asyncio.new_event_loop()
            start = time.perf_counter()
            kinds = loop.run_until_complete(finder.find_kernels(provider="spec"))
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            loop.run_until_complete(finder.find_kernels(provider="spec"))
            warm.append(time.perf_counter() - start)
            loop.close()
            found = sum(1 for k in kinds if k.name.startswith("k"))
            start = time.perf_counter()
            KernelSpecManager().get_all_specs()
            ksm.append(time.perf_counter() - start)
    figures.update(discovery_cold_ms=statistics.median(cold) * 1000,
                   discovery_warm_ms=statistics.median(warm) * 1000,
                   ksm_get_all_specs_ms=statistics.median(ksm) * 1000)
    print(f"in-process discovery of {found} kernelspecs: cold"
          f" {figures['discovery_cold_ms']:.1f} ms (target < 30 ms), cached"
          f" {figures['discovery_warm_ms']:.2f} ms; KernelSpecManager.get_all_specs()"
          f" {figures['ksm_get_all_specs_ms']:.1f} ms")
    print(f"RATIO discovery ours/KernelSpecManager = "
          f"{figures['discovery_cold_ms'] / figures['ksm_get_all_specs_ms']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if found != N_SPECS:
        print(f"ERROR: found {found} of {N_SPECS} kernelspecs", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
