"""The other places environments live: micromamba roots, a conda executable's own list,
pyenv versions, CONDA_ENVS_PATH."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, KernelFinder, KernelType


def listing(finder: KernelFinder, provider: str) -> dict[str, KernelType]:
    return {k.id: k for k in asyncio.run(finder.find_kernels(provider=provider))}


def test_conda_executable_list_is_merged(on_machine: Any, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path, make_conda_env: Any) -> None:
    # An environment only the executable knows of (not in environments.txt or envs dirs).
    hidden = make_conda_env(tmp_path / "somewhere" / "hidden-env")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    # A stand-in for micromamba's CLI (the real one is not on PyPI): it answers
    # `env list --json` as micromamba does and records each call.
    exe = bin_dir / "micromamba"
    exe.write_text("#!/bin/sh\n"
                   f"echo \"$@\" >> {calls}\n"
                   f"echo '{json.dumps({'envs': [str(hidden)]})}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("MAMBA_EXE", str(exe))
    finder = KernelFinder(Config())
    assert "conda/hidden-env" in listing(finder, "conda")
    assert calls.read_text() == "env list --json\n"
    listing(finder, "conda")  # unchanged files: the executable is not run again
    assert calls.read_text() == "env list --json\n"


def test_failing_executable_is_reported_and_files_still_used(
        on_machine: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    exe = tmp_path / "conda"
    exe.write_text("#!/bin/sh\necho 'not json'\nexit 1\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CONDA_EXE", str(exe))
    finder = KernelFinder(Config())
    assert "conda/analysis" in listing(finder, "conda")
    report = next(r for r in finder.reports if r.id == "conda")
    assert any("env list --json` failed" in p for p in report.problems)


def test_mamba_root_prefix_and_conda_envs_path(on_machine: Any, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               make_conda_env: Any) -> None:
    root = make_conda_env(tmp_path / "mamba-root", with_ipykernel=False)
    (root / "envs").mkdir()
    make_conda_env(root / "envs" / "mm-env")
    extra = tmp_path / "extra-envs"
    extra.mkdir()
    make_conda_env(extra / "from-env-var")
    monkeypatch.setenv("MAMBA_ROOT_PREFIX", str(root))
    monkeypatch.setenv("CONDA_ENVS_PATH", str(extra))
    kernels = listing(KernelFinder(Config()), "conda")
    assert kernels["conda/mm-env"].metadata["prefix"] == str(root / "envs" / "mm-env")
    assert "conda/from-env-var" in kernels


def test_pyenv_versions(on_machine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        make_venv: Any) -> None:
    pyenv = tmp_path / "pyenv"
    (pyenv / "versions").mkdir(parents=True)
    # A pyenv-virtualenv environment (has pyvenv.cfg) and a plain version without ipykernel.
    make_venv(pyenv / "versions" / "tools-env")
    # Full installs (no pyvenv.cfg): one with ipykernel, one without.
    for name, with_ipykernel in (("3.98.1", True), ("3.99.0", False)):
        version = make_venv(pyenv / "versions" / name, with_ipykernel=with_ipykernel)
        (version / "pyvenv.cfg").unlink()
    monkeypatch.setenv("PYENV_ROOT", str(pyenv))
    kernels = listing(KernelFinder(Config()), "venv")
    assert kernels["venv/tools-env"].metadata["environment_kind"] == "venv"
    assert kernels["venv/3.98.1"].metadata["environment_kind"] == "pyenv"
    assert "venv/3.99.0" not in kernels
