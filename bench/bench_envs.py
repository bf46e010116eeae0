"""Discovery over 100 virtualenvs + 50 conda environments, in-process: cold and warm.

Targets (issue 3): cold < 150 ms, warm < 10 ms. Reference measured in the same run:
nb_conda_kernels-style discovery (``conda info --json``, then a look into each env) where
a conda executable is on PATH. Prints figures and ratios; asserts nothing about speed
(exit 1 only if the environments were not all found).

    python bench/bench_envs.py [--quick] [--json FILE]
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

N_VENVS, N_CONDA = 100, 50
PY = f"python{sys.version_info[0]}.{sys.version_info[1]}"


def make_prefix(prefix: Path, conda: bool) -> None:
    """An environment's files as discovery sees them (interpreter, site-packages with
    ipykernel's metadata, its kernelspec; conda records for conda envs)."""
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python3").symlink_to(sys.executable)
    sp = prefix / "lib" / PY / "site-packages"
    (sp / "ipykernel-7.4.0.dist-info").mkdir(parents=True)
    spec = prefix / "share" / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    if conda:
        meta = prefix / "conda-meta"
        meta.mkdir()
        for name, version in (("python", "3.11.7"), ("ipykernel", "7.4.0"), ("zlib", "1.3")):
            (meta / f"{name}-{version}-h0_0.json").write_text(json.dumps(
                {"name": name, "version": version}))
        (meta / "history").write_text("==> 2026-11-24 <==\n")
    else:
        (prefix / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion = {PY[6:]}.0\n")


def build(home: Path) -> list[Path]:
    root = home / "miniconda3"
    make_prefix(root, conda=True)
    prefixes = [root]
    for i in range(N_CONDA - 1):
        prefixes.append(root / "envs" / f"conda-env-{i:03d}")
        make_prefix(prefixes[-1], conda=True)
    (home / ".conda").mkdir()
    (home / ".conda" / "environments.txt").write_text(
        "\n".join(str(p) for p in prefixes) + "\n")
    for i in range(N_VENVS):
        prefixes.append(home / ".virtualenvs" / f"venv-{i:03d}")
        make_prefix(prefixes[-1], conda=False)
    return prefixes


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def discover(finder: Any) -> int:
    kernels = await finder.find_kernels()
    return sum(1 for k in kernels if k.provider in ("conda", "venv"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    reps = 5 if args.quick else 21
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        build(home)
        os.environ.update({"HOME": str(home), "KERNEL_PROVIDERS_DISABLE": "spec"})
        for var in ("CONDA_EXE", "MAMBA_EXE", "MAMBA_ROOT_PREFIX", "CONDA_ENVS_PATH",
                    "WORKON_HOME", "PYENV_ROOT", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
            os.environ.pop(var, None)
        os.chdir(home)
        from kernel_providers import Config, KernelFinder

        cold, warm, found = [], [], 0
        for _ in range(reps):
            finder = KernelFinder(Config())
            loop = asyncio.new_event_loop()
            start = time.perf_counter()
            found = loop.run_until_complete(discover(finder))
            cold.append(time.perf_counter() - start)
            for _ in range(3):
                start = time.perf_counter()
                loop.run_until_complete(discover(finder))
                warm.append(time.perf_counter() - start)
            loop.close()

        conda = shutil.which("conda")
        conda_ms = None
        if conda:
            samples = []
            for _ in range(min(reps, 5)):
                start = time.perf_counter()
                out = subprocess.run([conda, "info", "--json"], capture_output=True).stdout
                for env in json.loads(out).get("envs", []):
                    Path(env, "share", "jupyter", "kernels").exists()
                samples.append(time.perf_counter() - start)
            conda_ms = median_ms(samples)

    figures = {"environments": N_VENVS + N_CONDA, "kernels_found": found,
               "cold_ms": median_ms(cold), "warm_ms": median_ms(warm),
               "conda_info_ms": conda_ms}
    print(f"environments: {N_CONDA} conda + {N_VENVS} venv; kernels found: {found}")
    print(f"cold discovery (fresh finder), median of {reps}: {figures['cold_ms']:.1f} ms"
          " (target < 150 ms)")
    print(f"warm discovery (same finder, mtimes checked), median of {len(warm)}:"
          f" {figures['warm_ms']:.2f} ms (target < 10 ms)")
    if conda_ms is None:
        print("reference `conda info --json` (nb_conda_kernels-style): skipped, no conda"
              " executable on PATH")
    else:
        print(f"RATIO cold ours/conda-info = {figures['cold_ms'] / conda_ms:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if found != N_VENVS + N_CONDA:
        print(f"ERROR: expected {N_VENVS + N_CONDA} kernels, found {found}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
