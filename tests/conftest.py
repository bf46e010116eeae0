"""Cross-package tests: the real `kernel-providers` command on isolated kernelspecs."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]

#: The test kernelspecs: name -> kernel.json content (a str is written as is).
TEST_SPECS: dict[str, Any] = {
    "kp-py": {"argv": IPYKERNEL, "display_name": "KP Test Python", "language": "python"},
    "kp-dies": {"argv": [sys.executable, "-c", "print('kp-dies-marker'); raise SystemExit(3)"],
                "display_name": "KP Dies", "language": "python"},
    "kp-broken-json": "{not json",
    "kp-noargv": {"display_name": "x"},
}

#: Providers left out so that a test sees only the kernelspecs it made (the machine's
#: environments, Docker engine and SSH hosts never leak in).
OTHER_PROVIDERS = "docker,conda,venv,ssh,example"


def write_spec(kernels: Path, name: str, spec: Any) -> Path:
    """Write ``kernels/<name>/kernel.json``; returns its path."""
    (kernels / name).mkdir(parents=True, exist_ok=True)
    path = kernels / name / "kernel.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec), encoding="utf-8")
    return path


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment for the command: private 0700 runtime dir, empty config file, a
    Jupyter path holding the test kernelspecs (kp-py, kp-dies, and two malformed ones),
    private Jupyter data and IPython dirs."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    runtime.chmod(0o700)  # whatever the umask
    kernels = tmp_path / "jupyter" / "kernels"
    for name, spec in TEST_SPECS.items():
        write_spec(kernels, name, spec)
    config = tmp_path / "kernel_providers.toml"
    config.write_text("")
    env = dict(os.environ)
    for name in ("NO_COLOR", "FORCE_COLOR", "CI", "KERNEL_PROVIDERS_TRACE",
                 "KERNEL_PROVIDERS_NO_AUTOLOAD", "PYTHONWARNINGS"):
        env.pop(name, None)
    env.update({
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "KERNEL_PROVIDERS_CONFIG": str(config),
        "JUPYTER_PATH": str(tmp_path / "jupyter"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "KERNEL_PROVIDERS_DISABLE": OTHER_PROVIDERS,
    })
    return env


def _base_command() -> list[str]:
    script = Path(sys.executable).with_name("kernel-providers")
    if script.exists():
        return [str(script)]
    found = shutil.which("kernel-providers")
    if found:
        return [found]
    return [sys.executable, "-m", "kernel_providers"]


@pytest.fixture
def command() -> Callable[..., list[str]]:
    """``command(*args)``: the argv of the installed console script."""
    base = _base_command()
    return lambda *args: [*base, *args]
