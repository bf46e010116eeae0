"""Discovery of real conda environments and virtualenvs: ids, names, metadata, problems,
cache invalidation."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from kernel_providers import KernelFinder, KernelType
from kernel_providers_environments.conda import read_envs_dirs
from kernel_providers_environments.environments import short_hash


def listing(finder: KernelFinder) -> dict[str, KernelType]:
    return {k.id: k for k in asyncio.run(finder.find_kernels())
            if k.provider in ("conda", "venv")}


def problems(finder: KernelFinder, provider: str) -> str:
    return "\n".join(next(r for r in finder.reports if r.id == provider).problems)


def test_conda_environments_are_found_with_stable_ids(env_finder: Any, machine: Any) -> None:
    finder = env_finder()
    kernels = listing(finder)
    dup = machine.home / ".conda" / "envs" / "analysis"
    conda_ids = {k for k in kernels if k.startswith("conda/")}
    assert conda_ids == {
        "conda/base", "conda/analysis", "conda/analysis/ir", "conda/analysis/exits",
        "conda/analysis/via-path", f"conda/analysis-{short_hash(dup)}", "conda/teamenv",
        "conda/proj-env"}
    assert kernels["conda/analysis"].metadata["prefix"] == str(machine.root / "envs" / "analysis")
    base = kernels["conda/base"]
    assert base.metadata["prefix"] == str(machine.root)
    assert base.metadata["environment_kind"] == "conda"
    assert base.display_name == f"Python {sys.version_info[0]}.{sys.version_info[1]} (conda: base)"
    ir = kernels["conda/analysis/ir"]
    assert (ir.language, ir.display_name) == ("R", "R (conda: analysis)")
    assert ir.metadata["kernelspec"] == "ir"
    # The same ids on every run.
    assert set(listing(env_finder())) == set(kernels)


def test_collision_suffix_goes_to_the_env_conda_would_not_pick(env_finder: Any,
                                                              machine: Any) -> None:
    kernels = listing(env_finder())
    mine = machine.root / "envs" / "analysis"
    dup = machine.home / ".conda" / "envs" / "analysis"
    # <root>/envs is searched before ~/.conda/envs: `conda activate analysis` picks the
    # root's, so that one keeps the plain name; the other's suffix is its path's hash.
    assert kernels["conda/analysis"].metadata["prefix"] == str(mine)
    assert kernels[f"conda/analysis-{short_hash(dup)}"].metadata["prefix"] == str(dup)


def test_environments_without_ipykernel_are_not_offered(env_finder: Any) -> None:
    kernels = listing(env_finder())
    assert "conda/nokernel" not in kernels and "venv/plain" not in kernels


def test_broken_environment_is_reported_and_skipped(env_finder: Any) -> None:
    finder = env_finder()
    kernels = listing(finder)
    assert "conda/broken" not in kernels
    assert "broken/conda-meta/ipykernel-" in problems(finder, "conda")
    assert "unreadable package record" in problems(finder, "conda")


def test_virtualenvs_and_project_venvs(env_finder: Any, machine: Any) -> None:
    kernels = listing(env_finder())
    ds = kernels["venv/ds"]
    assert ds.metadata["prefix"] == str(machine.venvs / "ds")
    assert ds.metadata["environment_kind"] == "venv"
    webapp = kernels["venv/webapp"]
    assert webapp.metadata["prefix"] == str(machine.project / ".venv")
    assert webapp.metadata["environment_kind"] == "project"


def test_config_excludes_and_dirs(env_finder: Any, machine: Any) -> None:
    finder = env_finder(conda={"exclude": ["analysis*"], "include_root": False},
                        venv={"dirs": [str(machine.venvs)], "exclude": ["*/ds"],
                              "include_cwd": False})
    kernels = listing(finder)
    assert {k for k in kernels if k.startswith("conda/")} == {"conda/proj-env",
                                                              "conda/teamenv"}
    assert {k for k in kernels if k.startswith("venv/")} == set()


def test_new_and_removed_environments_show_at_once(env_finder: Any, machine: Any,
                                                   ipykernel_wheel: Path) -> None:
    finder = env_finder()
    listing(finder)
    created = machine.venvs / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(created)], check=True)
    target = next(created.glob("lib/python*/site-packages"))
    try:
        assert "venv/fresh" not in listing(finder)  # no ipykernel yet
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-index", "--target", str(target), str(ipykernel_wheel)],
                       check=True)
        assert "venv/fresh" in listing(finder)  # the same finder, no wait
    finally:
        shutil.rmtree(created)
    assert "venv/fresh" not in listing(finder)


def test_an_unchanged_machine_lists_from_cache(env_finder: Any) -> None:
    finder = env_finder()
    listing(finder)
    probed: list[Path] = []
    for provider in (finder.providers["conda"], finder.providers["venv"]):
        cache = provider._probes  # type: ignore[attr-defined]
        original = cache._probe
        cache._probe = lambda prefix, original=original: probed.append(prefix) or original(prefix)
    second = listing(finder)
    assert probed == [] and "conda/base" in second


def test_condarc_envs_dirs_reader() -> None:
    assert read_envs_dirs("envs_dirs:\n  - ~/a  # comment\n  - '/b c'\nchannels: [x]\n") == [
        "~/a", "/b c"]
    assert read_envs_dirs("channels:\n - x\nenvs_dirs: [/x, \"/y\"]\n") == ["/x", "/y"]
    assert read_envs_dirs("channels: []\n") == []
