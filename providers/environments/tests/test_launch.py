"""Kernels started in real environments: activation, sys.prefix, in-env kernelspecs,
failures; and the conformance suite against a conda and a venv kernel."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest

from kernel_providers import KernelFinder, LaunchFailed, NoSuchKernel
from kernel_providers.testing import ConformanceSuite, run_code

PROBE = ("import os, sys; print(sys.prefix); print(os.environ.get('CONDA_PREFIX'));"
         " print(os.environ.get('CONDA_DEFAULT_ENV')); print(os.environ.get('KP_ACTIVATED'));"
         " print(os.environ.get('KP_CONFIG_VAR')); print(os.environ.get('VIRTUAL_ENV'));"
         " print(os.environ['PATH'].split(os.pathsep)[0])")


def probe(finder: KernelFinder, kernel_id: str) -> list[str]:
    async def scenario() -> list[str]:
        launcher = await finder.launch(kernel_id)
        try:
            out, _, reply = await run_code(launcher, PROBE)
            assert reply["content"]["status"] == "ok"
            return out.splitlines()
        finally:
            await launcher.shutdown()

    return asyncio.run(scenario())


def test_conda_kernel_runs_activated(env_finder: Any, machine: Any) -> None:
    prefix = machine.root / "envs" / "analysis"
    lines = probe(env_finder(), "conda/analysis")
    assert lines == [str(prefix), str(prefix), "analysis",
                     f"from activate.d in {prefix}", "from conda env config vars", "None",
                     str(prefix / "bin")]


def test_in_env_kernelspec_runs_activated(env_finder: Any, machine: Any) -> None:
    # Its argv says just "python": the activated PATH makes that the env's interpreter.
    prefix = machine.root / "envs" / "analysis"
    lines = probe(env_finder(), "conda/analysis/via-path")
    assert lines[0] == str(prefix) and lines[3] == f"from activate.d in {prefix}"


def test_prefix_env_is_activated_by_path(env_finder: Any, machine: Any) -> None:
    lines = probe(env_finder(), "conda/proj-env")
    assert lines[0] == str(machine.elsewhere)
    assert lines[2] == str(machine.elsewhere)  # unnamed env: CONDA_DEFAULT_ENV is its path


def test_venv_kernel_runs_activated(env_finder: Any, machine: Any) -> None:
    prefix = machine.venvs / "ds"
    lines = probe(env_finder(), "venv/ds")
    assert lines[0] == str(prefix) and lines[5] == str(prefix)
    assert lines[6] == str(prefix / "bin") and lines[1] == "None"


def test_env_deleted_after_listing_fails_naming_the_path(env_finder: Any, machine: Any,
                                                         make_venv: Any) -> None:
    doomed = make_venv(machine.venvs / "doomed")
    finder = env_finder()
    asyncio.run(finder.find_kernels())
    shutil.rmtree(doomed)

    async def scenario() -> None:
        with pytest.raises(LaunchFailed, match=f"{doomed} has no Python any more"):
            await finder.launch("venv/doomed")
        # The next listing no longer offers it.
        assert "venv/doomed" not in [k.id for k in await finder.find_kernels()]
        with pytest.raises(NoSuchKernel):
            await finder.launch("venv/doomed")

    asyncio.run(scenario())


class TestCondaConformance(ConformanceSuite):
    kernel_id = "conda/analysis"
    failing_kernel_id = "conda/analysis/exits"
    failing_kernel_output = "conda-exits-marker"

    @pytest.fixture
    def finder(self, env_finder: Any) -> KernelFinder:
        return env_finder()  # type: ignore[no-any-return]


class TestVenvConformance(ConformanceSuite):
    kernel_id = "venv/ds"
    failing_kernel_id = "conda/analysis/exits"
    failing_kernel_output = "conda-exits-marker"

    @pytest.fixture
    def finder(self, env_finder: Any) -> KernelFinder:
        return env_finder()  # type: ignore[no-any-return]


# --- exec plans (a kernel replacing its caller, as the Jupyter bridge's shim starts it) --

LAUNCH_REPLACING = """
import asyncio, sys
from kernel_providers import KernelFinder, LaunchOptions
asyncio.run(KernelFinder().launch(sys.argv[1], LaunchOptions(
    connection_file=sys.argv[2], replace_process=True), wait_ready=False))
"""
REPLAY = """
import sys
from kernel_providers.exec_plans import replay
replay(sys.argv[1], sys.argv[2])
print("NOT-REPLAYED")
"""
SHOW = ["python", "-c", "import os, sys; print(sys.prefix, os.environ.get('KP_ACTIVATED'),"
        " os.environ.get('KP_CONFIG_VAR'), sys.argv[1])", "{connection_file}"]


def _child(script: str, kernel_id: str, connection_file: Any) -> str:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", script, kernel_id, str(connection_file)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_conda_exec_plan_replays_activated_until_config_vars_change(
        on_machine: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
        ipykernel_wheel: Any) -> None:
    import json

    from kernel_providers.connection import allocate_ports, new_connection_info

    from .conftest import add_kernelspec, make_conda_env

    envs = tmp_path / "envs"
    prefix = make_conda_env(envs / "planned", ipykernel_wheel,
                            activate='export KP_ACTIVATED="activated"\n',
                            env_vars={"KP_CONFIG_VAR": "one"})
    add_kernelspec(prefix, "show", SHOW)
    monkeypatch.setenv("CONDA_ENVS_PATH", str(envs))
    monkeypatch.setenv("KERNEL_PROVIDERS_DISABLE", "venv")

    def connection_file(name: str) -> Any:
        path = tmp_path / name
        path.write_text(json.dumps(new_connection_info(allocate_ports())))
        return path

    kernel_id = "conda/planned/show"
    first = _child(LAUNCH_REPLACING, kernel_id, connection_file("c1.json"))
    assert first == f"{prefix} activated one {tmp_path / 'c1.json'}"
    plans = list((tmp_path / "cache").rglob("*.json"))
    assert len(plans) == 1
    plan = json.loads(plans[0].read_text())
    watched = {path for path, _ in plan["inputs"]}
    assert {str(prefix / "conda-meta" / "state"), str(envs),
            str(prefix / "share" / "jupyter" / "kernels" / "show" / "kernel.json")} <= watched
    assert any(p.startswith(str(prefix / "bin" / "python")) for p in watched)  # python3.x
    # Replayed: activation (activate.d, config vars) as the normal way does it.
    assert _child(REPLAY, kernel_id, connection_file("c2.json")) == \
        f"{prefix} activated one {tmp_path / 'c2.json'}"
    # `conda env config vars set KP_CONFIG_VAR=two` rewrites conda-meta/state.
    (prefix / "conda-meta" / "state").write_text(json.dumps({"env_vars": {"KP_CONFIG_VAR":
                                                                          "two"}}))
    assert _child(REPLAY, kernel_id, connection_file("c3.json")) == "NOT-REPLAYED"
    assert _child(LAUNCH_REPLACING, kernel_id, connection_file("c4.json")) == \
        f"{prefix} activated two {tmp_path / 'c4.json'}"
