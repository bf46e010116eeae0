"""Fixtures: kernelspec folders on an isolated Jupyter path; the `kernel-providers`
command's environment (test_cli.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kernel_providers.testing import command_argv, command_environment, write_kernelspec

IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]

SpecWriter = Callable[..., Path]


@pytest.fixture
def jupyter_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 kp_isolated: Path) -> tuple[Path, Path]:
    """Two folders on JUPYTER_PATH (first wins) and an empty user data dir."""
    first, second = tmp_path / "path1", tmp_path / "path2"
    for folder in (first, second):
        (folder / "kernels").mkdir(parents=True)
    monkeypatch.setenv("JUPYTER_PATH", f"{first}:{second}")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    return first, second


@pytest.fixture
def write_spec(jupyter_dirs: tuple[Path, Path]) -> SpecWriter:
    """``write_spec(name, spec_or_text, where=0)`` writes ``kernels/<name>/kernel.json``."""
    def write(name: str, spec: dict[str, Any] | str, where: int = 0) -> Path:
        folder = jupyter_dirs[where] / "kernels" / name
        folder.mkdir(parents=True, exist_ok=True)
        text = spec if isinstance(spec, str) else json.dumps(spec)
        (folder / "kernel.json").write_text(text)
        return folder
    return write


def python_spec(display_name: str = "KP Python", **extra: Any) -> dict[str, Any]:
    return {"argv": IPYKERNEL, "display_name": display_name, "language": "python", **extra}


@pytest.fixture(name="python_spec")
def python_spec_fixture() -> Callable[..., dict[str, Any]]:
    return python_spec


#: The other providers of this repository (entry-point names and provider ids), left out
#: so the command shows the kernelspec provider alone even where all are installed.
OTHER_PROVIDERS = "environments,conda,venv,docker,ssh,slurm,example"

#: The kernelspecs of the command's tests: name -> kernel.json content (a str as is).
CLI_SPECS: dict[str, Any] = {
    "kp-py": python_spec("KP Test Python"),
    "kp-broken-json": "{not json",
    "kp-noargv": {"display_name": "x"},
}


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment for the command: only the kernelspec provider, a Jupyter path
    holding CLI_SPECS (``$JUPYTER_PATH/kernels``), and private runtime, config, data,
    cache and IPython dirs (see ``command_environment``)."""
    for name, spec in CLI_SPECS.items():
        write_kernelspec(tmp_path / "jupyter" / "kernels", name, spec)
    return command_environment(tmp_path, OTHER_PROVIDERS)


@pytest.fixture
def command() -> Callable[..., list[str]]:
    """``command(*args)``: the argv of the installed console script."""
    return command_argv
