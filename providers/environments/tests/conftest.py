"""Real environments for the tests: virtualenvs with ipykernel really installed, and conda
prefixes laid out as conda lays them out (package records, history, activate.d), each
with a real interpreter whose ``sys.prefix`` is the environment."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ipykernel
import pytest

from kernel_providers import Config, KernelFinder
from kernel_providers.testing.environments import ipykernel_wheel as testing_ipykernel_wheel
from kernel_providers.testing.environments import make_venv

IPYKERNEL_VERSION = ipykernel.__version__


@pytest.fixture(scope="session")
def ipykernel_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the installed ipykernel version, installed into the test
    environments for real (``KP_TEST_WHEELS`` may name a folder that has it)."""
    folder = os.environ.get("KP_TEST_WHEELS")
    return testing_ipykernel_wheel(Path(folder) if folder else tmp_path_factory.mktemp("wheels"))


def make_conda_env(prefix: Path, wheel: Path | None, activate: str = "",
                   env_vars: dict[str, str] | None = None) -> Path:
    """A conda environment as conda lays it out: conda-meta records and history, an
    activate.d script, ``conda env config vars`` in conda-meta/state."""
    make_venv(prefix, wheel)
    meta = prefix / "conda-meta"
    meta.mkdir()
    version = ".".join(map(str, sys.version_info[:3]))
    records = {"python": (version, "h1234567_0_cpython")}
    if wheel is not None:
        records["ipykernel"] = (IPYKERNEL_VERSION, "pyh3099207_0")
    for name, (ver, build) in records.items():
        (meta / f"{name}-{ver}-{build}.json").write_text(json.dumps({
            "name": name, "version": ver, "build": build, "channel": "conda-forge",
            "files": [], "depends": []}))
    (meta / "history").write_text(f"==> 2026-11-24 10:00:00 <==\n# cmd: conda create -p {prefix}\n")
    if activate:
        folder = prefix / "etc" / "conda" / "activate.d"
        folder.mkdir(parents=True)
        (folder / "kp-test.sh").write_text(activate)
    if env_vars:
        (meta / "state").write_text(json.dumps({"env_vars": env_vars}))
    return prefix


def add_kernelspec(prefix: Path, name: str, argv: list[str], language: str = "python",
                   display_name: str | None = None) -> Path:
    folder = prefix / "share" / "jupyter" / "kernels" / name
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": argv, "display_name": display_name or name, "language": language}))
    return folder


@dataclass
class Machine:
    """A home folder with conda installed and environments, and virtualenv folders."""

    home: Path
    root: Path
    venvs: Path
    project: Path
    elsewhere: Path


@pytest.fixture(scope="session")
def machine(tmp_path_factory: pytest.TempPathFactory, ipykernel_wheel: Path) -> Machine:
    home = tmp_path_factory.mktemp("home")
    root = make_conda_env(home / "miniconda3", ipykernel_wheel)
    envs = root / "envs"
    envs.mkdir()
    analysis = make_conda_env(
        envs / "analysis", ipykernel_wheel,
        activate='export KP_ACTIVATED="from activate.d in $CONDA_PREFIX"\n',
        env_vars={"KP_CONFIG_VAR": "from conda env config vars"})
    add_kernelspec(analysis, "ir", ["R", "--slave", "-e", "IRkernel::main()",
                                    "--args", "{connection_file}"], language="R",
                   display_name="R")
    add_kernelspec(analysis, "exits", ["python", "-c",
                                       "print('conda-exits-marker'); raise SystemExit(5)"])
    add_kernelspec(analysis, "via-path", ["python", "-m", "ipykernel_launcher", "-f",
                                          "{connection_file}"], display_name="Via PATH")
    make_conda_env(envs / "nokernel", None)
    broken = make_conda_env(envs / "broken", ipykernel_wheel)
    next(broken.glob("conda-meta/ipykernel-*.json")).write_text("{corrupt")
    # An envs dir named in .condarc.
    team = home / "team-envs"
    team.mkdir()
    make_conda_env(team / "teamenv", ipykernel_wheel)
    (home / ".condarc").write_text(f"channels:\n  - conda-forge\nenvs_dirs:\n"
                                   f"  - {team}  # shared envs\n")
    # Another "analysis" in ~/.conda/envs, searched after <root>/envs: a name collision.
    (home / ".conda" / "envs").mkdir(parents=True)
    make_conda_env(home / ".conda" / "envs" / "analysis", ipykernel_wheel)
    # An environment created with -p elsewhere, known from environments.txt.
    elsewhere = make_conda_env(home / "projects" / "proj-env", ipykernel_wheel)
    (home / ".conda" / "environments.txt").write_text(f"{root}\n{elsewhere}\n")
    venvs = home / ".virtualenvs"
    venvs.mkdir()
    make_venv(venvs / "ds", ipykernel_wheel)
    make_venv(venvs / "plain", None)
    project = home / "code" / "webapp"
    project.mkdir(parents=True)
    make_venv(project / ".venv", ipykernel_wheel)
    return Machine(home, root, venvs, project, elsewhere)


@pytest.fixture
def on_machine(machine: Machine, monkeypatch: pytest.MonkeyPatch,
               kp_isolated: Path) -> Iterator[Machine]:
    """Point HOME (and the variables conda and virtualenv tools read) at the machine.
    XDG_CACHE_HOME stays the test's own (kp_isolated): exec plans go there."""
    monkeypatch.setenv("HOME", str(machine.home))
    for var in ("CONDA_EXE", "MAMBA_EXE", "MAMBA_ROOT_PREFIX", "CONDA_ENVS_PATH", "CONDARC",
                "WORKON_HOME", "PYENV_ROOT", "XDG_DATA_HOME", "XDG_CONFIG_HOME",
                "POETRY_VIRTUALENVS_PATH", "CONDA_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(machine.home)
    yield machine


FinderFactory = Callable[..., KernelFinder]


@pytest.fixture
def env_finder(on_machine: Machine) -> FinderFactory:
    """``env_finder(conda={...}, venv={...})``: a finder with provider tables."""
    def make(**tables: dict[str, object]) -> KernelFinder:
        tables.setdefault("venv", {"project_dirs": [str(on_machine.project.parent)]})
        return KernelFinder(Config(providers=tables))  # type: ignore[arg-type]
    return make


@pytest.fixture(name="make_venv")
def make_venv_fixture(ipykernel_wheel: Path) -> Callable[..., Path]:
    """``make_venv(prefix, with_ipykernel=True)``: a real virtualenv."""
    def make(prefix: Path, with_ipykernel: bool = True) -> Path:
        return make_venv(prefix, ipykernel_wheel if with_ipykernel else None)
    return make


@pytest.fixture(name="make_conda_env")
def make_conda_env_fixture(ipykernel_wheel: Path) -> Callable[..., Path]:
    """``make_conda_env(prefix, with_ipykernel=True)``: a conda environment."""
    def make(prefix: Path, with_ipykernel: bool = True) -> Path:
        return make_conda_env(prefix, ipykernel_wheel if with_ipykernel else None)
    return make
