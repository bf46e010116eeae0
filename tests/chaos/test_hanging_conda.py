"""A conda executable that hangs (CONDA_EXE pointing at something that never answers):
the listing still returns, and nothing it started is left running."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kernel_providers.testing import process_alive

HANGING_CONDA = """#!/bin/sh
echo $$ > "{pids}"
sleep 300 &
echo $! >> "{pids}"
wait
"""


def _command() -> list[str]:
    script = Path(sys.executable).with_name("kernel-providers")
    return [str(script) if script.exists() else shutil.which("kernel-providers") or
            "kernel-providers"]


def test_a_hanging_conda_is_ended_with_the_listing(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    conda = tmp_path / "bin" / "conda"
    conda.parent.mkdir()
    conda.write_text(HANGING_CONDA.format(pids=pids))
    conda.chmod(0o755)
    config = tmp_path / "kernel_providers.toml"
    config.write_text("discovery_timeout = 2\n")
    env = {**os.environ, "CONDA_EXE": str(conda), "KERNEL_PROVIDERS_CONFIG": str(config),
           "KERNEL_PROVIDERS_DISABLE": "spec,venv,docker,ssh,slurm,example",
           "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    started = time.monotonic()
    out = subprocess.run([*_command(), "list"], env=env, capture_output=True, text=True,
                         timeout=120)
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    # said, not hidden: conda gave up within the discovery's time and listed its files
    assert "did not answer within" in out.stderr and "(ended)" in out.stderr, out.stderr
    assert took < 30, f"list took {took:.1f} s with discovery_timeout = 2"
    deadline = time.monotonic() + 5
    started_pids = [int(line) for line in pids.read_text().split()]
    assert len(started_pids) == 2  # the script and the sleep it started
    while any(process_alive(p) for p in started_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [p for p in started_pids if process_alive(p)]
    for pid in alive:  # only what this test's script started
        os.kill(pid, 9)
    assert alive == [], f"the hanging conda (and what it started) outlived `list`: {alive}"
