"""The kernelspec provider through the `kernel-providers` command: its ``[providers.spec]``
table, its malformed kernel.json reported, its distribution in ``providers`` and ``info``.
The command itself is tested in core/tests/test_cli.py, on a test plugin.

Every test runs in its own environment (``cli_env`` in conftest.py): the kernelspec
provider alone, a Jupyter path holding kp-py and two malformed kernelspecs.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

Command = Callable[..., list[str]]
DISTRIBUTION = "kernel-providers-kernelspec"


def run(command: Command, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), env=env, input="", capture_output=True, text=True,
                          timeout=120)


def config_file(env: dict[str, str]) -> Path:
    return Path(env["KERNEL_PROVIDERS_CONFIG"])


def kernels_dir(env: dict[str, str]) -> Path:
    return Path(env["JUPYTER_PATH"]) / "kernels"


def test_providers_json(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "providers", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["plugin_errors"] == []
    assert [p["id"] for p in data["providers"]] == ["spec"]
    spec = data["providers"][0]
    assert spec["distribution"] == DISTRIBUTION
    assert isinstance(spec["version"], str) and spec["version"]
    assert spec["status"] == "ok" and spec["message"] == ""
    listed = json.loads(run(command, cli_env, "list", "--json", "--provider", "spec").stdout)
    assert spec["kernel_count"] == len(listed)
    assert "spec/kp-py" in {k["id"] for k in listed}
    problems = "\n".join(spec["problems"])
    assert len(spec["problems"]) == 2
    assert str(kernels_dir(cli_env) / "kp-broken-json" / "kernel.json") in problems
    assert str(kernels_dir(cli_env) / "kp-noargv" / "kernel.json") in problems


def test_providers_table(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "providers")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["ID", "DISTRIBUTION", "VERSION", "STATUS", "KERNELS", "TIME"]
    (row,) = rows
    cells = row.split()
    assert cells[:2] == ["spec", DISTRIBUTION] and cells[3] == "ok"
    assert int(cells[4]) >= 1 and cells[-1] == "ms"
    # problems are listed on stderr
    assert "kp-broken-json" in out.stderr and "kp-noargv" in out.stderr


def test_info(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "info", "spec/kp-py")
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines()
                  if not line.startswith(" ") and not line.endswith(":"))
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["id"] == "spec/kp-py" and fields["provider"] == "spec"
    assert fields["display_name"] == "KP Test Python"
    assert fields["distribution"] == DISTRIBUTION
    assert str(kernels_dir(cli_env) / "kp-py") in out.stdout  # metadata: resource_dir
    as_json = run(command, cli_env, "info", "spec/kp-py", "--json")
    assert as_json.returncode == 0, as_json.stderr
    info = json.loads(as_json.stdout)
    assert info["id"] == "spec/kp-py" and info["distribution"] == DISTRIBUTION
    assert isinstance(info["version"], str) and info["version"]
    assert info["metadata"]["resource_dir"] == str(kernels_dir(cli_env) / "kp-py")


def test_config_extra_dirs_and_exclude(command: Command, cli_env: dict[str, str],
                                       tmp_path: Path) -> None:
    extra = tmp_path / "more-kernels" / "kp-extra"
    extra.mkdir(parents=True)
    (extra / "kernel.json").write_text(json.dumps(
        {"argv": ["true"], "display_name": "Extra", "language": "python"}))
    config_file(cli_env).write_text(
        f'[providers.spec]\nextra_dirs = ["{extra.parent}"]\n'
        'exclude = ["kp-broken-*", "kp-noargv"]\n')
    out = run(command, cli_env, "list", "--json")
    assert out.returncode == 0
    ids = {k["id"] for k in json.loads(out.stdout)}
    assert {"spec/kp-py", "spec/kp-extra"} <= ids
    assert "kernel.json" not in out.stderr  # excluded specs are not read at all


def test_exclude_everything(command: Command, cli_env: dict[str, str]) -> None:
    # ipykernel's own python3 kernel, offered when no kernelspec has that name, too
    config_file(cli_env).write_text('[providers.spec]\nexclude = ["*"]\n')
    out = run(command, cli_env, "list")
    assert out.returncode == 0
    assert out.stdout == "" and "no kernels found" in out.stderr
    listed = run(command, cli_env, "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_invalid_provider_table(command: Command, cli_env: dict[str, str]) -> None:
    config_file(cli_env).write_text('[providers.spec]\nexclude = "kp-py"\n')
    listed = run(command, cli_env, "list")
    assert listed.returncode == 0  # the listing ran; the provider's failure is reported
    assert "exclude" in listed.stderr and "Traceback" not in listed.stderr
    started = run(command, cli_env, "run", "spec/kp-py", "--code", "print(1)")
    assert started.returncode == 2
    assert "exclude" in started.stderr and "Traceback" not in started.stderr
    assert os.listdir(cli_env["JUPYTER_RUNTIME_DIR"]) == []
