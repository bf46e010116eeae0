"""Cross-package tests: the real `kernel-providers` command on isolated kernelspecs."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment for the command: private runtime dir, empty config, a Jupyter path
    holding the test kernelspecs (kp-py, kp-dies, and two malformed ones)."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    kernels = tmp_path / "jupyter" / "kernels"
    specs: dict[str, Any] = {
        "kp-py": {"argv": IPYKERNEL, "display_name": "KP Test Python", "language": "python"},
        "kp-dies": {"argv": [sys.executable, "-c",
                             "print('kp-dies-marker'); raise SystemExit(3)"],
                    "display_name": "Dies", "language": "python"},
        "kp-broken-json": "{not json",
        "kp-noargv": {"display_name": "x"},
    }
    for name, spec in specs.items():
        (kernels / name).mkdir(parents=True)
        text = spec if isinstance(spec, str) else json.dumps(spec)
        (kernels / name / "kernel.json").write_text(text)
    (tmp_path / "config.toml").write_text("")
    env = dict(os.environ)
    env.update({
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "KERNEL_PROVIDERS_CONFIG": str(tmp_path / "config.toml"),
        "JUPYTER_PATH": str(tmp_path / "jupyter"), "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "KERNEL_PROVIDERS_DISABLE": "docker,conda,venv,example", "NO_COLOR": "1",
    })
    env.pop("CI", None)
    return env


@pytest.fixture
def command() -> Callable[..., list[str]]:
    """``command(*args)``: the argv of the installed console script."""
    script = Path(sys.executable).with_name("kernel-providers")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "kernel_providers"]
    return lambda *args: [*base, *args]
