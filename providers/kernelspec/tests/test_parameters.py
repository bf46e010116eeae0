"""Kernel parameters declared in kernel.json (``metadata.parameters``, a JSON Schema),
with a real ipykernel: `info` shows them, `run --param` / `--params-file` and the Python
API give values that the kernel sees (variables and argv, never through a shell), bad
values are refused before anything starts, a restart keeps the values."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_providers import KernelFinder, KernelProviderError, LaunchOptions, ParameterError
from kernel_providers.testing import command_argv, command_environment, run_code

# The kernel: records its argv's last item in a variable, then is ipykernel.
KERNEL_PY = """\
import os, sys
os.environ["KP_ARGV_LABEL"] = sys.argv[2]
sys.argv = [sys.argv[0], "-f", sys.argv[1]]
from ipykernel.kernelapp import launch_new_instance
launch_new_instance()
"""
SCHEMA = {
    "type": "object",
    "properties": {
        "cpus": {"type": "integer", "minimum": 1, "maximum": 16, "default": 2,
                 "description": "CPUs for the kernel"},
        "mode": {"type": "string", "enum": ["fast", "safe"], "default": "safe"},
        "label": {"type": "string", "maxLength": 60, "default": "none"},
        "debug": {"type": "boolean", "default": False},
    },
}
SHOW = ("import os; print(os.environ['KERNEL_PARAMETER_CPUS'], os.environ['KERNEL_PARAMETER_MODE'],"
        " os.environ['KERNEL_PARAMETER_DEBUG']); print(os.environ['KP_ARGV_LABEL'])")
SNEAKY = "x; touch pwned; $(touch pwned2) `touch pwned3`"


@pytest.fixture
def knobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A kernelspec ``knobs`` with parameters, and the environment the command runs in."""
    env = command_environment(tmp_path, "conda,venv,pixi,docker,ssh,slurm,example")
    folder = Path(env["JUPYTER_PATH"]) / "kernels" / "knobs"
    folder.mkdir(parents=True)
    (folder / "kernel.py").write_text(KERNEL_PY)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "{resource_dir}/kernel.py", "{connection_file}",
                 "label={parameter:label}"],
        "display_name": "Knobs", "language": "python",
        "metadata": {"parameters": SCHEMA}}))
    for name in ("JUPYTER_PATH", "JUPYTER_RUNTIME_DIR", "KERNEL_PROVIDERS_CONFIG",
                 "KERNEL_PROVIDERS_DISABLE", "JUPYTER_DATA_DIR"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.chdir(tmp_path)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command_argv(*args), env=env, capture_output=True, text=True,
                          timeout=120, cwd=Path(env["JUPYTER_RUNTIME_DIR"]).parent)


def test_info_and_list_show_the_parameters(knobs: dict[str, str]) -> None:
    shown = cli(knobs, "info", "spec/knobs")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    start = lines.index("parameters:")
    table = "\n".join(lines[start:start + 6])
    assert "NAME" in table and "DEFAULT" in table and "ALLOWED" in table
    assert any(line.split()[:3] == ["cpus", "integer", "2"] and ">= 1 <= 16" in line
               and "CPUs for the kernel" in line for line in lines[start:])
    assert any('one of "fast", "safe"' in line for line in lines[start:])
    listed = json.loads(cli(knobs, "list", "--json").stdout)
    assert next(k for k in listed if k["id"] == "spec/knobs")["parameters"] == SCHEMA


def test_run_with_parameters_the_kernel_sees_them_literally(knobs: dict[str, str]) -> None:
    here = Path(knobs["JUPYTER_RUNTIME_DIR"]).parent
    ran = cli(knobs, "run", "spec/knobs", "--param", "cpus=4", "--param", "debug=yes",
              "--param", f"label={SNEAKY}", "--code", SHOW)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["4 safe true", f"label={SNEAKY}"]
    assert not list(here.glob("pwned*")), "a parameter value reached a shell"
    values = here / "values.json"
    values.write_text(json.dumps({"cpus": 8, "mode": "fast"}))
    ran = cli(knobs, "run", "spec/knobs", "--params-file", str(values), "--param", "cpus=9",
              "--code", SHOW)
    assert ran.stdout.splitlines() == ["9 fast false", "label=none"], ran.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["--param", "cpus=64"], "parameter 'cpus' = 64 is not allowed (64 is greater than the"
                             " maximum of 16); allowed: an integer >= 1 <= 16"),
    (["--param", "cpus=four"], "parameter 'cpus' = 'four' is not an integer"),
    (["--param", "mode=turbo"], "parameter 'mode' = \"turbo\" is not allowed ('turbo' is not"
                                " one of ['fast', 'safe']); allowed: one of \"fast\", \"safe\""),
    (["--param", "gpus=1"], "kernel 'spec/knobs' has no parameter 'gpus'; its parameters:"
                            " cpus, debug, label, mode"),
    (["--param", "cpus"], "--param 'cpus': write NAME=VALUE"),
    (["--param", "label=" + "x" * 61], "parameter 'label' = "),
])
def test_a_bad_value_is_a_usage_error_and_nothing_starts(knobs: dict[str, str],
                                                         args: list[str], says: str) -> None:
    ran = cli(knobs, "run", "spec/knobs", *args, "--code", "1")
    assert ran.returncode == 2, (ran.stdout, ran.stderr)
    assert says in ran.stderr and ran.stderr.count("\n") == 1, ran.stderr
    assert not os.listdir(knobs["JUPYTER_RUNTIME_DIR"]) or all(
        not name.startswith("kernel") for name in os.listdir(knobs["JUPYTER_RUNTIME_DIR"]))


def test_python_api_values_are_kept_across_a_restart(knobs: dict[str, str]) -> None:
    async def scenario() -> None:
        finder = KernelFinder()
        with pytest.raises(ParameterError, match="parameter 'cpus' = 0 is not allowed"):
            await finder.launch("spec/knobs", LaunchOptions(parameters={"cpus": 0}))
        launcher = await finder.launch("spec/knobs", LaunchOptions(parameters={"cpus": 3}))
        try:
            assert launcher.launch_options.parameters == {
                "cpus": 3, "mode": "safe", "label": "none", "debug": False}
            old, launcher = launcher, await launcher.restart()  # the new kernel's launcher
            assert launcher.launch_options.parameters["cpus"] == 3
            with pytest.raises(KernelProviderError, match="was restarted: this launcher's"):
                await old.execute("1")
            out, _, _ = await run_code(launcher, SHOW)
            assert out.splitlines() == ["3 safe false", "label=none"]
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def test_a_kernel_without_parameters_takes_none(knobs: dict[str, str]) -> None:
    ran = cli(knobs, "run", "spec/python3", "--param", "cpus=2", "--code", "1")
    assert ran.returncode == 2
    assert "kernel 'spec/python3' takes no parameters (given: cpus)" in ran.stderr


def test_config_narrows_parameters_and_adds_presets(knobs: dict[str, str]) -> None:
    """[kernels."<id>"] in the config: a narrower range, and a preset that is a kernel
    type of its own (listed everywhere, its values the defaults, still checked)."""
    Path(knobs["KERNEL_PROVIDERS_CONFIG"]).write_text(
        '[kernels."spec/knobs".parameters.properties.cpus]\nmaximum = 4\n\n'
        '[kernels."spec/knobs".presets.big]\ncpus = 4\nmode = "fast"\n')
    listed = {k["id"]: k for k in json.loads(cli(knobs, "list", "--json").stdout)}
    assert listed["spec/knobs@big"]["display_name"] == "Knobs (big)"
    assert listed["spec/knobs@big"]["parameters"]["properties"]["cpus"]["default"] == 4
    assert listed["spec/knobs"]["parameters"]["properties"]["cpus"]["maximum"] == 4
    ran = cli(knobs, "run", "spec/knobs@big", "--code", SHOW)
    assert ran.stdout.splitlines() == ["4 fast false", "label=none"], ran.stderr
    ran = cli(knobs, "run", "spec/knobs@big", "--param", "cpus=2", "--code", SHOW)
    assert ran.stdout.splitlines()[0] == "2 fast false", ran.stderr
    ran = cli(knobs, "run", "spec/knobs", "--param", "cpus=8", "--code", "1")
    assert ran.returncode == 2 and "8 is greater than the maximum of 4" in ran.stderr
    Path(knobs["KERNEL_PROVIDERS_CONFIG"]).write_text('[kernels."spec/knobs"]\nshape = 1\n')
    ran = cli(knobs, "list")
    assert ran.returncode == 2 and "unknown key 'shape'" in ran.stderr
