"""The `kernel-providers` command end to end: real processes, real ipykernels."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_client import BlockingKernelClient

Command = Callable[..., list[str]]


def run(command: Command, env: dict[str, str], *args: str, stdin: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), env=env, input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def runtime_files(env: dict[str, str]) -> list[str]:
    return sorted(os.listdir(env["JUPYTER_RUNTIME_DIR"]))


def gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_list_table_json_and_problems(command: Command, cli_env: dict[str, str]) -> None:
    table = run(command, cli_env, "list")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["ID", "LANGUAGE", "DISPLAY", "NAME"]
    assert "spec/kp-py" in table.stdout and "KP Test Python" in table.stdout
    assert "kp-broken-json/kernel.json: invalid JSON" in table.stderr
    assert "kp-noargv/kernel.json: 'argv' must be a non-empty list" in table.stderr
    listed = run(command, cli_env, "list", "--json", "--refresh")
    assert listed.returncode == 0
    kernels = json.loads(listed.stdout)
    assert all(set(k) == {"id", "provider", "name", "display_name", "language", "metadata",
                          "resources", "interrupt_mode"} for k in kernels)
    mine = next(k for k in kernels if k["id"] == "spec/kp-py")
    assert (mine["provider"], mine["name"], mine["language"]) == ("spec", "kp-py", "python")
    assert json.loads(run(command, cli_env, "list", "--json", "--provider", "spec").stdout)
    bad = run(command, cli_env, "list", "--provider", "nosuch")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "no provider 'nosuch' is installed" in bad.stderr


def test_providers_and_info(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "providers", "--json")
    assert out.returncode == 0
    spec = next(p for p in json.loads(out.stdout)["providers"] if p["id"] == "spec")
    assert spec["distribution"] == "kernel-providers-kernelspec" and spec["status"] == "ok"
    assert spec["kernel_count"] >= 2 and spec["seconds"] >= 0 and len(spec["problems"]) == 2
    table = run(command, cli_env, "providers")
    assert "kernel-providers-kernelspec" in table.stdout and " ok " in table.stdout
    info = json.loads(run(command, cli_env, "info", "spec/kp-py", "--json").stdout)
    assert info["display_name"] == "KP Test Python"
    assert info["distribution"] == "kernel-providers-kernelspec"
    assert "display_name:   KP Test Python" in run(command, cli_env, "info", "spec/kp-py").stdout


def test_run_exit_codes_and_output(command: Command, cli_env: dict[str, str],
                                   tmp_path: Path) -> None:
    ok = run(command, cli_env, "run", "spec/kp-py", "--code", "print(6*7)")
    assert (ok.returncode, ok.stdout) == (0, "42\n")
    raised = run(command, cli_env, "run", "spec/kp-py", "--code", "1/0")
    assert raised.returncode == 1 and "ZeroDivisionError" in raised.stderr
    assert "\x1b[" not in raised.stderr  # no colour codes when not on a terminal
    script = tmp_path / "code.py"
    script.write_text("import sys\nprint('from a file')\nprint('err', file=sys.stderr)\n")
    from_file = run(command, cli_env, "run", "spec/kp-py", str(script))
    assert from_file.stdout == "from a file\n" and "err" in from_file.stderr
    piped = run(command, cli_env, "run", "spec/kp-py", "-", stdin="print('piped')")
    assert piped.stdout == "piped\n" and piped.returncode == 0
    assert runtime_files(cli_env) == []


def test_run_errors_are_one_clear_line(command: Command, cli_env: dict[str, str],
                                       tmp_path: Path) -> None:
    unknown = run(command, cli_env, "run", "spec/kp-pi", "--code", "1")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "no kernel with id 'spec/kp-pi'; did you mean 'spec/kp-py'" in unknown.stderr
    usage = run(command, cli_env, "run", "spec/kp-py")
    assert usage.returncode == 2 and "usage:" in usage.stderr
    dies = run(command, cli_env, "run", "spec/kp-dies", "--code", "1")
    assert dies.returncode == 3 and "kp-dies-marker" in dies.stderr
    assert "exit status 3" in dies.stderr
    config = Path(cli_env["KERNEL_PROVIDERS_CONFIG"])
    config.write_text('cache_ttl = "soon"\n')
    bad = run(command, cli_env, "list")
    assert bad.returncode == 2 and "cache_ttl" in bad.stderr and "Traceback" not in bad.stderr
    config.write_text("cache_tl = 3\n")
    typo = run(command, cli_env, "list")
    assert typo.returncode == 0 and "unknown key 'cache_tl'" in typo.stderr
    assert runtime_files(cli_env) == []


def _start_busy(command: Command, env: dict[str, str], code: str) -> tuple[Any, int]:
    proc = subprocess.Popen(command("run", "spec/kp-py", "--code", code), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    return proc, pid


@pytest.mark.timeout(120)
def test_ctrl_c_interrupts_then_shuts_down(command: Command, cli_env: dict[str, str]) -> None:
    loop = "import os, time\nprint(os.getpid(), flush=True)\nwhile True: time.sleep(0.05)"
    proc, _ = _start_busy(command, cli_env, loop)
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "KeyboardInterrupt" in err
    finally:
        proc.kill()
        proc.communicate()
    stubborn = ("import os, signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "print(os.getpid(), flush=True)\nwhile True: time.sleep(0.05)")
    proc, kernel_pid = _start_busy(command, cli_env, stubborn)
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None  # the kernel ignored the interrupt
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "interrupting" in err
    finally:
        proc.kill()
        proc.communicate()
    assert gone(kernel_pid)
    assert runtime_files(cli_env) == []


@pytest.mark.timeout(120)
def test_launch_serves_real_clients_until_ctrl_c(command: Command,
                                                 cli_env: dict[str, str]) -> None:
    proc = subprocess.Popen(command("launch", "spec/kp-py", "--json"), env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        path = Path(started["connection_file"])
        assert started["id"] == "spec/kp-py" and path.exists()
        assert path.stat().st_mode & 0o777 == 0o600
        client = BlockingKernelClient()
        client.load_connection_file(str(path))
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
            printed: list[str] = []

            def hook(msg: dict[str, Any]) -> None:
                if msg["msg_type"] == "stream":
                    printed.append(msg["content"]["text"])

            reply = client.execute_interactive("import os; print(os.getpid())", timeout=60,
                                               output_hook=hook)
            assert reply["content"]["status"] == "ok"
            kernel_pid = int("".join(printed))
        finally:
            client.stop_channels()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert not path.exists()
        assert gone(kernel_pid)
    finally:
        proc.kill()
        proc.communicate()
    assert runtime_files(cli_env) == []
