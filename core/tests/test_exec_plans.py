"""Exec plans: a launch that replaces its caller is recorded, and replayed without
discovery only while the same kernel is asked for from the same folder, with the same
environment, and none of its inputs changed. Real processes: each launch and replay
runs in a child Python that becomes the "kernel" (a program printing what it got)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kernel_providers.connection import allocate_ports, new_connection_info

LAUNCH = '''
import asyncio, os, sys
from kernel_providers import (KernelFinder, KernelProvider, KernelType, LaunchOptions,
                              hookimpl, launch_local)

SHOW = ("import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(),"
        " 'env': {k: os.environ.get(k) for k in ('KP_FROM_PROVIDER', 'JPY_SESSION_NAME',"
        " 'KP_HOOKED', 'KP_DROPPED')}}))")

class Echo(KernelProvider):
    id = "echo"
    async def find_kernels(self):
        return [KernelType(id="echo/show", display_name="Echo", language="python",
                           provider="echo")]
    async def launch(self, kernel_type, options):
        program = os.environ.get("KP_PROGRAM", sys.executable)
        return await launch_local(kernel_type, [program, "-c", SHOW, "{connection_file}"],
                                  options, env={"KP_FROM_PROVIDER": "yes", "KP_DROPPED": None})
    def launch_inputs(self, kernel_type):
        return None if os.environ.get("KP_NO_INPUTS") else [os.environ["KP_INPUT"]]

class Plugin:
    @hookimpl
    def register_kernel_providers(self):
        yield Echo()

class Hook:
    @hookimpl
    def kernel_launch_options(self, kernel_type, options):
        options.env["KP_HOOKED"] = "yes"

finder = KernelFinder(autoload=False)
finder.register(Plugin())
if os.environ.get("KP_WITH_HOOK"):
    finder.register(Hook())
asyncio.run(finder.launch("echo/show", LaunchOptions(connection_file=sys.argv[1],
                                                     replace_process=True),
                          wait_ready=False))
'''

REPLAY = '''
import sys
from kernel_providers.exec_plans import replay
heavy = sorted({"asyncio", "zmq", "pluggy", "kernel_providers.finder"} & set(sys.modules))
print("heavy modules:", heavy, file=sys.stderr)
replay("echo/show", sys.argv[1])
print("NOT-REPLAYED")
'''


@pytest.fixture
def plan_env(kp_isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The launch input file; a secret in the environment that no plan may copy."""
    source = tmp_path / "input.txt"
    source.write_text("one")
    monkeypatch.setenv("KP_INPUT", str(source))
    monkeypatch.setenv("KP_SECRET", "hunter2-secret")
    monkeypatch.setenv("KP_DROPPED", "from-the-caller")
    monkeypatch.setenv("JPY_SESSION_NAME", "first.ipynb")
    monkeypatch.delenv("KERNEL_PROVIDERS_NO_EXEC_PLANS", raising=False)
    return source


def run(script: str, connection_file: Path, cwd: Path | None = None,
        **env: str) -> tuple[Any, str]:
    """Run ``script`` in a child Python; (what the kernel printed, or the raw stdout if it
    was not the kernel; stderr). Writes the client's connection file first."""
    connection_file.write_text(json.dumps(new_connection_info(allocate_ports())))
    result = subprocess.run([sys.executable, "-c", script, str(connection_file)],
                            capture_output=True, text=True, timeout=120, cwd=cwd,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    try:
        return json.loads(result.stdout), result.stderr
    except ValueError:
        return result.stdout.strip(), result.stderr


def plans() -> list[Path]:
    folder = Path(os.environ["XDG_CACHE_HOME"]) / "kernel-providers" / "exec-plans"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def test_a_replacing_launch_is_recorded_and_replayed_without_discovery(
        plan_env: Path, tmp_path: Path) -> None:
    first, _ = run(LAUNCH, tmp_path / "c1.json")
    assert first["argv"] == [str(tmp_path / "c1.json")]
    assert first["env"] == {"KP_FROM_PROVIDER": "yes", "JPY_SESSION_NAME": "first.ipynb",
                            "KP_HOOKED": None, "KP_DROPPED": None}
    [plan] = plans()
    assert stat.S_IMODE(plan.stat().st_mode) == 0o600
    assert stat.S_IMODE(plan.parent.stat().st_mode) == 0o700
    text = plan.read_text()
    assert "hunter2-secret" not in text and "first.ipynb" not in text  # no copied env
    assert str(tmp_path / "c1.json") not in text

    again, stderr = run(REPLAY, tmp_path / "c2.json", JPY_SESSION_NAME="second.ipynb")
    assert "heavy modules: []" in stderr
    assert again["argv"] == [str(tmp_path / "c2.json")]  # the new client's file
    assert again["env"] == {**first["env"], "JPY_SESSION_NAME": "second.ipynb"}
    assert again["cwd"] == first["cwd"]


@pytest.mark.parametrize("change", ["input", "config", "environment", "folder", "switch"])
def test_a_plan_is_not_replayed_once_anything_it_depends_on_changed(
        plan_env: Path, tmp_path: Path, change: str) -> None:
    run(LAUNCH, tmp_path / "c1.json")
    env: dict[str, str] = {}
    cwd = None
    if change == "input":
        plan_env.write_text("two, longer")
    elif change == "config":
        Path(os.environ["KERNEL_PROVIDERS_CONFIG"]).write_text("ready_timeout = 30\n")
    elif change == "environment":
        env["KP_SOMETHING_ELSE"] = "1"
    elif change == "folder":
        cwd = tmp_path
    else:
        env["KERNEL_PROVIDERS_NO_EXEC_PLANS"] = "1"
    result, _ = run(REPLAY, tmp_path / "c2.json", cwd=cwd, **env)
    assert result == "NOT-REPLAYED"
    if change != "switch":  # the normal way records the new state, which replays
        run(LAUNCH, tmp_path / "c3.json", cwd=cwd, **env)
        result, _ = run(REPLAY, tmp_path / "c4.json", cwd=cwd, **env)
        assert result["argv"] == [str(tmp_path / "c4.json")]


@pytest.mark.parametrize("reason", ["no inputs", "a launch-options hook"])
def test_launches_that_cannot_be_replayed_faithfully_are_not_recorded(
        plan_env: Path, tmp_path: Path, reason: str) -> None:
    env = {"KP_NO_INPUTS": "1"} if reason == "no inputs" else {"KP_WITH_HOOK": "1"}
    result, _ = run(LAUNCH, tmp_path / "c1.json", **env)
    assert result["argv"] == [str(tmp_path / "c1.json")]
    assert plans() == []


def test_a_plan_whose_program_is_gone_falls_back_without_side_effects(
        plan_env: Path, tmp_path: Path) -> None:
    program = tmp_path / "python-link"
    program.symlink_to(sys.executable)
    run(LAUNCH, tmp_path / "c1.json", KP_PROGRAM=str(program))
    program.unlink()  # not among the inputs: exec fails, and replay says nothing
    script = REPLAY.replace('print("NOT-REPLAYED")',
                            'import os; print("NOT-REPLAYED", os.getcwd())')
    result, stderr = run(script, tmp_path / "c2.json", KP_PROGRAM=str(program))
    assert result == f"NOT-REPLAYED {os.getcwd()}"
    assert "Traceback" not in stderr
