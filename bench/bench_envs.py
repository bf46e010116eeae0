"""Discovery over 100 virtualenvs + 50 conda environments + 30 projects (10 uv, 10 pixi,
10 hatch, 1 to 3 folders deep under a project folder), in-process: cold (a fresh finder
and fresh conda, venv and pixi providers) and warm (the same finder, mtimes checked).

Targets (issue 14): cold <= 100 ms, warm <= 10 ms. Reference measured in the same run,
interleaved: environment_kernels' ``EnvironmentKernelSpecManager.find_kernel_specs()``
(what users would otherwise pick), given every folder of environments it can take; cold
is a fresh manager, warm the same manager again (its cache, not checked against the
disk). Also ``conda info --json`` (nb_conda_kernels-style) where a conda executable is on
PATH. Prints figures and ratios; asserts nothing about speed (exit 1 only if the
environments were not all found).

    python bench/bench_envs.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

N_VENVS, N_CONDA, N_PER_TOOL = 100, 50, 10
N_ENVS = N_VENVS + N_CONDA + 3 * N_PER_TOOL
TARGET_COLD_MS, TARGET_WARM_MS = 100.0, 10.0
PY = f"python{sys.version_info[0]}.{sys.version_info[1]}"
IDS = ("conda", "venv", "pixi")  # the providers measured


@dataclass
class Machine:
    """The synthetic machine: what discovery must find, and where the reference looks."""

    projects: Path
    expected: set[str] = field(default_factory=set)  # kernel ids, one per environment
    conda_dirs: list[Path] = field(default_factory=list)  # folders of conda environments
    venv_dirs: list[Path] = field(default_factory=list)  # folders of virtualenvs


def make_prefix(prefix: Path, conda: bool) -> None:
    """An environment's files as discovery sees them (interpreter, ipython's script,
    site-packages with ipykernel's metadata, its kernelspec; conda records for conda
    envs). A venv's ``home`` is this interpreter's, as ``python -m venv`` writes it: the
    reference starts each environment's interpreter."""
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python3").symlink_to(sys.executable)
    (prefix / "bin" / "ipython").write_text("#!/bin/sh\n")  # environment_kernels wants it
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
        (prefix / "pyvenv.cfg").write_text(
            f"home = {Path(sys.base_prefix) / 'bin'}\nversion = {PY[6:]}.0\n")


def hatch_checksum(project: Path) -> str:
    """The folder hatch names after a project's path (``<data>/env/virtual/<name>/<it>``)."""
    digest = hashlib.sha256(str(project).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:8]


def make_project(machine: Machine, tool: str, i: int, hatch_data: Path) -> None:
    """Project ``i`` of ``tool`` (uv, pixi or hatch), 1 to 3 folders below the project
    folder, with its environment where the tool keeps it."""
    name = f"{tool}-proj-{i:02d}"
    depth = 1 + i % 3
    project = machine.projects.joinpath(*[f"group-{depth}", "work"][:depth - 1], name)
    project.mkdir(parents=True)
    if tool == "uv":
        (project / "pyproject.toml").write_text(
            f'[project]\nname = "{name}"\nversion = "0.1"\n\n[tool.uv]\npackage = false\n')
        (project / "uv.lock").write_text("version = 1\n")
        make_prefix(project / ".venv", conda=False)
        machine.expected.add(f"venv/{name}")
    elif tool == "pixi":
        (project / "pixi.toml").write_text(
            f'[workspace]\nname = "{name}"\nchannels = ["conda-forge"]\n'
            'platforms = ["linux-64"]\n\n[dependencies]\nipykernel = "*"\n')
        envs = project / ".pixi" / "envs"
        make_prefix(envs / "default", conda=True)
        machine.expected.add(f"pixi/{name}")
        machine.conda_dirs.append(envs)
    else:
        (project / "pyproject.toml").write_text(
            f'[project]\nname = "{name}"\nversion = "0.1"\n\n'
            '[tool.hatch.envs.default]\ndependencies = ["ipykernel"]\n')
        envs = hatch_data / "env" / "virtual" / name / hatch_checksum(project)
        make_prefix(envs / name, conda=False)
        machine.expected.add(f"venv/{name}")
        machine.venv_dirs.append(envs)


def build(home: Path) -> Machine:
    machine = Machine(home / "projects")
    root = home / "miniconda3"
    make_prefix(root, conda=True)
    machine.expected.add("conda/base")
    prefixes = [root]
    for i in range(N_CONDA - 1):
        prefixes.append(root / "envs" / f"conda-env-{i:03d}")
        make_prefix(prefixes[-1], conda=True)
        machine.expected.add(f"conda/conda-env-{i:03d}")
    machine.conda_dirs.append(root / "envs")
    (home / ".conda").mkdir()
    (home / ".conda" / "environments.txt").write_text(
        "\n".join(str(p) for p in prefixes) + "\n")
    for i in range(N_VENVS):
        make_prefix(home / ".virtualenvs" / f"venv-{i:03d}", conda=False)
        machine.expected.add(f"venv/venv-{i:03d}")
    machine.venv_dirs.append(home / ".virtualenvs")
    for tool in ("uv", "pixi", "hatch"):
        for i in range(N_PER_TOOL):
            make_project(machine, tool, i, home / "hatch-data")
    return machine


def isolate(home: Path) -> None:
    """This process sees only the synthetic machine: its home, hatch's data folder in
    it, no tool's variables, and no ``hatch`` on PATH (``hatch env find`` would take a
    few hundred ms per project, and would not know these)."""
    os.environ.update({"HOME": str(home), "HATCH_DATA_DIR": str(home / "hatch-data")})
    for var in ("CONDA_EXE", "MAMBA_EXE", "MAMBA_ROOT_PREFIX", "CONDA_ENVS_PATH", "CONDARC",
                "CONDA_ENV_PATH", "WORKON_HOME", "PYENV_ROOT", "XDG_DATA_HOME",
                "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "POETRY_VIRTUALENVS_PATH",
                "UV_PYTHON_INSTALL_DIR", "UV_PROJECT_ENVIRONMENT", "PDM_DATA_DIR",
                "PIXI_HOME", "KERNEL_PROVIDERS_DISABLE", "JUPYTER_PATH", "PYTHONPATH"):
        os.environ.pop(var, None)
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(d for d in path if not Path(d, "hatch").exists())
    os.chdir(home)  # no enclosing project: the home folder is never one


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


# --- ours ---------------------------------------------------------------------------


def new_finder(machine: Machine) -> Any:
    """A finder with only the conda, venv and pixi providers, fresh (no cache)."""
    from kernel_providers import Config, KernelFinder
    from kernel_providers_environments import plugin

    config = Config(providers={"venv": {"project_dirs": [str(machine.projects)]}})
    return KernelFinder(config, autoload=False, plugins=[plugin])


async def discover(finder: Any) -> set[str]:
    kernels = await finder.find_kernels(refresh=True)
    return {k.id for k in kernels if k.provider in IDS}


def time_ours(machine: Machine, cold: list[float], warm: list[float]) -> set[str]:
    """One cold discovery (a fresh finder), then three warm ones; the ids found."""
    loop = asyncio.new_event_loop()
    try:
        finder = new_finder(machine)
        start = time.perf_counter()
        found = loop.run_until_complete(discover(finder))
        cold.append(time.perf_counter() - start)
        for _ in range(3):
            start = time.perf_counter()
            loop.run_until_complete(discover(finder))
            warm.append(time.perf_counter() - start)
    finally:
        loop.close()
    return found


# --- the reference: environment_kernels ---------------------------------------------

#: environment_kernels' log: it logs an error on every scan here (no `conda` on PATH)
QUIET = logging.getLogger("bench_envs.reference")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


@contextmanager
def ipykernel_importable() -> Iterator[None]:
    """The synthetic environments hold ipykernel's metadata, not its code; the reference
    checks each with ``<env python> -c 'import ipykernel'``, which imports this
    interpreter's ipykernel through PYTHONPATH (as a real environment imports its own)."""
    spec = importlib.util.find_spec("ipykernel")
    assert spec is not None and spec.origin is not None
    os.environ["PYTHONPATH"] = str(Path(spec.origin).parent.parent)
    try:
        yield
    finally:
        os.environ.pop("PYTHONPATH", None)


def load_reference() -> None:
    """Import what the reference imports on its first scan (itself, and jupyterlab for
    its version check) before anything is timed: its first cold run pays no imports,
    and every repetition, ours and its, runs in the same process."""
    from environment_kernels.envs_common import (  # type: ignore[import-untyped]
        is_jlab_minversion_3,
    )

    is_jlab_minversion_3()


def time_reference(machine: Machine, cold: list[float], warm: list[float]) -> int:
    """environment_kernels: a fresh manager's ``find_kernel_specs()`` (cold: it globs its
    folders and starts each environment's interpreter, twice where jupyterlab is
    installed), then the same manager's, three times (warm: its cache); the environments
    it found."""
    from environment_kernels import (  # type: ignore[import-untyped]  # no py.typed
        EnvironmentKernelSpecManager,
    )

    # refresh_interval=0: no periodic rescan on tornado's IOLoop (none runs here)
    manager = EnvironmentKernelSpecManager(
        log=QUIET, refresh_interval=0, conda_env_dirs=[str(d) for d in machine.conda_dirs],
        virtualenv_env_dirs=[str(d) for d in machine.venv_dirs])
    with ipykernel_importable():
        start = time.perf_counter()
        specs = manager.find_kernel_specs()
        cold.append(time.perf_counter() - start)
        for _ in range(3):
            start = time.perf_counter()
            manager.find_kernel_specs()
            warm.append(time.perf_counter() - start)
    return sum(1 for name in specs if name.startswith(("conda_", "virtualenv_")))


def conda_info_ms(reps: int) -> float | None:
    """nb_conda_kernels-style listing: ``conda info --json``, then a look into each env."""
    conda = shutil.which("conda")
    if conda is None:
        return None
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        out = subprocess.run([conda, "info", "--json"], capture_output=True).stdout
        for env in json.loads(out).get("envs", []):
            Path(env, "share", "jupyter", "kernels").exists()
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


# --- the run ------------------------------------------------------------------------


def report(figures: dict[str, Any], reps: int, n_warm: int) -> None:
    print(f"environments: {N_CONDA} conda + {N_VENVS} venv + {N_PER_TOOL} each of uv,"
          f" pixi, hatch projects; found: {figures['found']} of {N_ENVS}")
    print(f"cold discovery (fresh finder), median of {reps}: {figures['cold_ms']:.1f} ms"
          f" (target <= {TARGET_COLD_MS:.0f} ms)")
    print(f"warm discovery (same finder, mtimes checked), median of {n_warm}:"
          f" {figures['warm_ms']:.2f} ms (target <= {TARGET_WARM_MS:.0f} ms)")
    print(f"RATIO cold ours/target = {figures['cold_ms'] / TARGET_COLD_MS:.3f}")
    print(f"RATIO warm ours/target = {figures['warm_ms'] / TARGET_WARM_MS:.3f}")
    ref_cold, ref_warm = figures.get("reference_cold_ms"), figures.get("reference_warm_ms")
    if ref_cold is not None and ref_warm is not None:
        print(f"reference environment_kernels find_kernel_specs(), medians:"
              f" cold {ref_cold:.0f} ms, warm {ref_warm:.3f} ms (its cache, unchecked);"
              f" found {figures['reference_found']} of {N_ENVS} (not the uv projects' .venv"
              " nor the conda root; pixi envs all named `default`: one kept)")
        print(f"RATIO cold ours/environment_kernels = {figures['cold_ms'] / ref_cold:.4f}")
        print(f"RATIO warm ours/environment_kernels = {figures['warm_ms'] / ref_warm:.2f}")
    if figures.get("conda_info_ms") is not None:
        print(f"RATIO cold ours/conda-info = {figures['cold_ms'] / figures['conda_info_ms']:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    reps = 5 if args.quick else 21
    # the reference starts ~2 interpreters per environment: seconds per cold run
    ref_reps = 1 if args.quick else 3
    ref_at = {round(j * reps / ref_reps) for j in range(ref_reps)}  # spread over the run
    status = 0
    reference = importlib.util.find_spec("environment_kernels") is not None
    if not reference:
        from _skip import skipped

        status = skipped("reference: environment_kernels is not installed"
                         " (pip install -r requirements-dev.txt)")
    else:
        load_reference()
    cold: list[float] = []
    warm: list[float] = []
    ref_cold: list[float] = []
    ref_warm: list[float] = []
    ref_found = 0
    with tempfile.TemporaryDirectory() as tmp:
        machine = build(Path(tmp))
        isolate(Path(tmp))
        # As a machine has its environments: not written a moment ago (a listing is not
        # reused while what it read has mtimes within the last 2 s: coarse mtimes).
        then = time.time() - 600
        for path in [Path(tmp), *Path(tmp).rglob("*")]:
            os.utime(path, (then, then), follow_symlinks=False)
        found: set[str] = set()
        for i in range(reps):
            found = time_ours(machine, cold, warm)
            if reference and i in ref_at:
                ref_found = time_reference(machine, ref_cold, ref_warm)
        figures: dict[str, Any] = {
            "environments": N_ENVS, "found": len(found & machine.expected),
            "cold_ms": median_ms(cold), "warm_ms": median_ms(warm),
            "conda_info_ms": conda_info_ms(min(reps, 5))}
        if ref_cold:
            figures.update(reference_cold_ms=median_ms(ref_cold),
                           reference_warm_ms=median_ms(ref_warm), reference_found=ref_found)
    report(figures, reps, len(warm))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    missing = sorted(machine.expected - found)
    if missing:
        print(f"ERROR: {len(missing)} of {N_ENVS} environments not found: {missing[:10]}",
              file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
