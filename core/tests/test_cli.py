"""The `kernel-providers` command end to end: the real console script as a subprocess,
real ipykernels, a real jupyter_client; no mocks.

Every test runs in its own environment (``cli_env`` in conftest.py): a private 0700
runtime dir, its own configuration file, and only the kernels of the test plugin
(cli_plugin/, installed as the distribution kp-cli-kernels 1.0): the kernel.json folders
in its kernel folder, as ``kp/<name>``. Every real provider is disabled, so only the core
needs to be installed. How the kernelspec provider looks through the command is tested in
providers/kernelspec/tests/test_cli.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_client import BlockingKernelClient

from kernel_providers.testing import process_alive, process_gone, write_kernelspec

Command = Callable[..., list[str]]

#: The plugin tests' fake installed distributions (kp-fake-good ...).
FAKE_DISTS = Path(__file__).parent / "fake_dists"

KERNEL_KEYS = {"id", "provider", "name", "display_name", "language", "project",
               "launchable", "metadata", "resources", "interrupt_mode", "parameters"}
CONNECTION_KEYS = ("ip", "transport", "key", "signature_scheme", "shell_port",
                   "iopub_port", "stdin_port", "control_port", "hb_port")
WAIT = 60.0  # seconds any one step may take before the test gives up
BUSY = "import os, time\nprint('busy', os.getpid(), flush=True)\nwhile True: time.sleep(0.05)"
STUBBORN = ("import os, signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "print('busy', os.getpid(), flush=True)\nwhile True: time.sleep(0.05)")


# --- helpers -------------------------------------------------------------------------------


def run(command: Command, env: dict[str, str], *args: str, stdin: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the command to its end (stdin closed unless given)."""
    return subprocess.run(command(*args), env=env, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=timeout)


def runtime_files(env: dict[str, str]) -> list[str]:
    return sorted(os.listdir(env["JUPYTER_RUNTIME_DIR"]))


def config_file(env: dict[str, str]) -> Path:
    return Path(env["KERNEL_PROVIDERS_CONFIG"])


def kernels_dir(env: dict[str, str]) -> Path:
    """The test plugin's kernel folder."""
    return Path(env["KP_CLI_KERNELS"])


def kill_if_alive(pid: int | None) -> None:
    """Last-resort cleanup of a kernel process a failed test may have left (by pid)."""
    if pid is not None and process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def one_line(text: str) -> bool:
    return text.endswith("\n") and text.count("\n") == 1


class Running:
    """A command started with Popen; its stdout and stderr are read by threads so that a
    test can wait for a line with a timeout and the pipes never fill up."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self._lock = threading.Lock()
        self._text = {"stdout": "", "stderr": ""}
        self._lines: queue.Queue[str] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._pump, args=(name, stream), daemon=True)
            for name, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr))]
        for thread in self._threads:
            thread.start()

    def _pump(self, name: str, stream: Any) -> None:
        for line in iter(stream.readline, ""):
            with self._lock:
                self._text[name] += line
            if name == "stdout":
                self._lines.put(line)

    @property
    def stdout(self) -> str:
        with self._lock:
            return self._text["stdout"]

    @property
    def stderr(self) -> str:
        with self._lock:
            return self._text["stderr"]

    def stdout_line(self, timeout: float = WAIT) -> str:
        """The next line of stdout; fails if none comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self._lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and not self._threads[0].is_alive():
                    break
        raise AssertionError(f"no line on stdout (exit status {self.proc.poll()});"
                             f"\nstdout: {self.stdout!r}\nstderr: {self.stderr!r}")

    def wait_for_stderr(self, needle: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.stderr:
            if time.monotonic() > deadline or (
                    self.proc.poll() is not None and not self._threads[1].is_alive()):
                raise AssertionError(f"{needle!r} never appeared on stderr (exit status"
                                     f" {self.proc.poll()});\nstdout: {self.stdout!r}"
                                     f"\nstderr: {self.stderr!r}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the command to end and its output to be read; the exit status."""
        status = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=10)
        return status

    def close(self) -> None:
        """Kill the command if it still runs (by its Popen object only) and free pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        finally:
            for thread in self._threads:
                thread.join(timeout=10)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


def assert_nothing_left(cli: Running, kernel_pid: int | None,
                        cli_env: dict[str, str]) -> None:
    """The command ended cleanly: no traceback, its kernel gone, no connection file."""
    assert "Traceback" not in cli.stderr
    assert kernel_pid is not None and process_gone(kernel_pid), "the kernel outlived the command"
    assert runtime_files(cli_env) == [], "connection file left behind"


def busy_pid(line: str) -> int:
    word, pid = line.split()
    assert word == "busy"
    return int(pid)


# --- version and usage -------------------------------------------------------------------


def test_version(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "--version")
    assert out.returncode == 0
    assert out.stdout.startswith("kernel-providers ")


def test_no_command_is_a_usage_error(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env)
    assert out.returncode == 2
    assert "usage:" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""


# --- list ----------------------------------------------------------------------------------


def test_list_table_shows_the_test_kernel(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "LANGUAGE", "DISPLAY", "NAME"]
    row = next(line for line in lines if line.startswith("kp/kp-py "))
    assert row.split(None, 2) == ["kp/kp-py", "python", "KP Test Python"]
    assert "kp/kp-dies" in out.stdout
    # malformed kernelspecs are not listed
    assert "kp-broken-json" not in out.stdout and "kp-noargv" not in out.stdout


def test_list_reports_malformed_specs_on_stderr(command: Command,
                                                cli_env: dict[str, str]) -> None:
    broken = kernels_dir(cli_env) / "kp-broken-json" / "kernel.json"
    noargv = kernels_dir(cli_env) / "kp-noargv" / "kernel.json"
    for args in (["list"], ["list", "--json"]):
        out = run(command, cli_env, *args)
        assert out.returncode == 0, out.stderr
        lines = out.stderr.splitlines()
        broken_lines = [line for line in lines if str(broken) in line]
        noargv_lines = [line for line in lines if str(noargv) in line]
        assert len(broken_lines) == 1 and "invalid JSON" in broken_lines[0]
        assert len(noargv_lines) == 1 and "argv" in noargv_lines[0]
        assert "Traceback" not in out.stderr
    # the JSON on stdout stays parseable whatever went to stderr
    ids = [k["id"] for k in json.loads(out.stdout)]
    assert "kp/kp-broken-json" not in ids and "kp/kp-noargv" not in ids


def test_list_json_items_have_exactly_the_documented_keys(command: Command,
                                                          cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "list", "--json")
    assert out.returncode == 0, out.stderr
    kernels = json.loads(out.stdout)
    assert isinstance(kernels, list) and kernels
    for kernel in kernels:
        assert set(kernel) == KERNEL_KEYS, kernel
        assert kernel["id"] == f"{kernel['provider']}/{kernel['name']}"
        assert isinstance(kernel["metadata"], dict)
        assert isinstance(kernel["resources"], dict)
        assert kernel["interrupt_mode"] in ("signal", "message")
    ids = [k["id"] for k in kernels]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    mine = next(k for k in kernels if k["id"] == "kp/kp-py")
    assert mine["provider"] == "kp" and mine["name"] == "kp-py"
    assert mine["display_name"] == "KP Test Python" and mine["language"] == "python"
    assert mine["interrupt_mode"] == "signal"
    dies = next(k for k in kernels if k["id"] == "kp/kp-dies")
    assert dies["display_name"] == "KP Dies"


def test_list_provider_filter(command: Command, cli_env: dict[str, str]) -> None:
    # let another provider in (fakegood, of the plugin tests' fake distribution
    # kp-fake-good) so the filter has something to leave out
    cli_env["PYTHONPATH"] += os.pathsep + str(FAKE_DISTS)
    cli_env["KERNEL_PROVIDERS_DISABLE"] += ",fakebroken,fakedup"
    everything = run(command, cli_env, "list", "--json")
    assert everything.returncode == 0, everything.stderr
    assert {k["provider"] for k in json.loads(everything.stdout)} == {"kp", "fakegood"}
    filtered = run(command, cli_env, "list", "--json", "--provider", "kp")
    assert filtered.returncode == 0, filtered.stderr
    kp_only = json.loads(filtered.stdout)
    assert kp_only == [k for k in json.loads(everything.stdout) if k["provider"] == "kp"]
    assert "kp/kp-py" in {k["id"] for k in kp_only}
    table = run(command, cli_env, "list", "--provider", "kp")
    assert table.returncode == 0
    rows = table.stdout.splitlines()[1:]
    assert rows and all(row.startswith("kp/") for row in rows)


def test_list_unknown_provider_is_a_one_line_usage_error(command: Command,
                                                         cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "list", "--provider", "nosuch")
    assert out.returncode == 2
    assert one_line(out.stderr), out.stderr
    assert "nosuch" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_list_disabled_provider(command: Command, cli_env: dict[str, str]) -> None:
    cli_env["KERNEL_PROVIDERS_DISABLE"] += ",kp"
    out = run(command, cli_env, "list", "--provider", "kp")
    assert out.returncode == 2
    assert one_line(out.stderr) and "'kp'" in out.stderr


def test_list_refresh(command: Command, cli_env: dict[str, str]) -> None:
    plain = run(command, cli_env, "list", "--json")
    refreshed = run(command, cli_env, "list", "--json", "--refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert json.loads(refreshed.stdout) == json.loads(plain.stdout)
    table = run(command, cli_env, "list", "--refresh")
    assert table.returncode == 0 and "kp/kp-py" in table.stdout
    # a kernelspec installed since is found by the next listing
    write_kernelspec(kernels_dir(cli_env), "kp-new", {"argv": ["true"], "display_name": "New"})
    again = run(command, cli_env, "list", "--json", "--refresh")
    assert "kp/kp-new" in {k["id"] for k in json.loads(again.stdout)}


def test_list_no_kernels(command: Command, cli_env: dict[str, str]) -> None:
    config_file(cli_env).write_text('[providers.kp]\nexclude = ["*"]\n')
    out = run(command, cli_env, "list")
    assert out.returncode == 0
    assert out.stdout == "" and "no kernels found" in out.stderr
    listed = run(command, cli_env, "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["list"], ["run", "kp/kp-py", "--code", "print(1)"]])
def test_invalid_config_value_names_the_key(command: Command, cli_env: dict[str, str],
                                            args: list[str]) -> None:
    config_file(cli_env).write_text('cache_ttl = "soon"\n')
    out = run(command, cli_env, *args)
    assert out.returncode == 2
    assert "cache_ttl" in out.stderr and str(config_file(cli_env)) in out.stderr
    assert one_line(out.stderr), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert runtime_files(cli_env) == []


def test_unreadable_config_file(command: Command, cli_env: dict[str, str]) -> None:
    config_file(cli_env).write_text("cache_ttl = = 3\n")
    out = run(command, cli_env, "list")
    assert out.returncode == 2
    assert str(config_file(cli_env)) in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("args", [["list"], ["run", "kp/kp-py", "--code", "print(1)"]])
def test_unknown_config_key_warns(command: Command, cli_env: dict[str, str],
                                  args: list[str]) -> None:
    config_file(cli_env).write_text("cache_tl = 3\n")
    out = run(command, cli_env, *args)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "cache_tl" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:")
    assert "Traceback" not in out.stderr
    assert runtime_files(cli_env) == []


def test_invalid_provider_table(command: Command, cli_env: dict[str, str]) -> None:
    config_file(cli_env).write_text('[providers.kp]\nexclude = "kp-py"\n')
    listed = run(command, cli_env, "list")
    assert listed.returncode == 0  # the listing ran; the provider's failure is reported
    assert "exclude" in listed.stderr and "Traceback" not in listed.stderr
    started = run(command, cli_env, "run", "kp/kp-py", "--code", "print(1)")
    assert started.returncode == 2
    assert "exclude" in started.stderr and "Traceback" not in started.stderr
    assert runtime_files(cli_env) == []


# --- providers / info ----------------------------------------------------------------------


def test_providers_json(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "providers", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["plugin_errors"] == []
    assert [p["id"] for p in data["providers"]] == ["kp"]
    kp = data["providers"][0]
    assert (kp["distribution"], kp["version"]) == ("kp-cli-kernels", "1.0")
    assert kp["status"] == "ok" and kp["message"] == ""
    listed = json.loads(run(command, cli_env, "list", "--json", "--provider", "kp").stdout)
    assert kp["kernel_count"] == len(listed) == 2
    assert isinstance(kp["seconds"], float | int) and kp["seconds"] >= 0
    problems = "\n".join(kp["problems"])
    assert len(kp["problems"]) == 2
    assert str(kernels_dir(cli_env) / "kp-broken-json" / "kernel.json") in problems
    assert str(kernels_dir(cli_env) / "kp-noargv" / "kernel.json") in problems


def test_providers_table(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "providers")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["ID", "DISTRIBUTION", "VERSION", "STATUS", "KERNELS", "TIME"]
    (row,) = rows
    cells = row.split()
    assert cells[:5] == ["kp", "kp-cli-kernels", "1.0", "ok", "2"] and cells[-1] == "ms"
    # problems are listed on stderr
    assert "kp-broken-json" in out.stderr and "kp-noargv" in out.stderr


def test_info(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "info", "kp/kp-py")
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines()
                  if not line.startswith(" ") and not line.endswith(":"))
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["id"] == "kp/kp-py"
    assert fields["display_name"] == "KP Test Python"
    assert fields["language"] == "python" and fields["provider"] == "kp"
    assert fields["distribution"] == "kp-cli-kernels"
    assert fields["interrupt_mode"] == "signal"
    assert str(kernels_dir(cli_env) / "kp-py") in out.stdout  # metadata: resource_dir


def test_info_json(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "info", "kp/kp-py", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert set(info) == KERNEL_KEYS | {"distribution", "version"}
    assert info["id"] == "kp/kp-py" and info["name"] == "kp-py"
    assert info["display_name"] == "KP Test Python" and info["language"] == "python"
    assert (info["distribution"], info["version"]) == ("kp-cli-kernels", "1.0")
    listed = json.loads(run(command, cli_env, "list", "--json").stdout)
    assert {k: info[k] for k in KERNEL_KEYS} == next(
        k for k in listed if k["id"] == "kp/kp-py")


def test_info_unknown_kernel(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "info", "kp/kp-pi")
    assert out.returncode == 2
    assert one_line(out.stderr) and "'kp/kp-py'" in out.stderr
    assert "Traceback" not in out.stderr


# --- run -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_run_prints_output(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "run", "kp/kp-py", "--code", "print(6*7)")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "42\n"
    assert runtime_files(cli_env) == []


@pytest.mark.timeout(120)
def test_run_streams_stderr_and_results(command: Command, cli_env: dict[str, str]) -> None:
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr, flush=True)\n6*7"
    out = run(command, cli_env, "run", "kp/kp-py", "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "out\n42\n"
    assert "err\n" in out.stderr and "out" not in out.stderr
    assert runtime_files(cli_env) == []


@pytest.mark.timeout(120)
def test_run_code_that_raises(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "run", "kp/kp-py", "--code", "print('before')\n1/0")
    assert out.returncode == 1
    assert out.stdout == "before\n"
    assert "ZeroDivisionError" in out.stderr
    assert "\x1b[" not in out.stderr  # no colour codes: stderr is not a terminal
    assert runtime_files(cli_env) == []


@pytest.mark.timeout(120)
def test_run_code_from_a_file(command: Command, cli_env: dict[str, str],
                              tmp_path: Path) -> None:
    script = tmp_path / "code.py"
    script.write_text("import sys\nprint('from a file')\nprint('err', file=sys.stderr)\n")
    out = run(command, cli_env, "run", "kp/kp-py", str(script))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "from a file\n" and "err" in out.stderr
    assert runtime_files(cli_env) == []


@pytest.mark.timeout(120)
def test_run_code_from_stdin(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "run", "kp/kp-py", "-", stdin="x = 6\nprint(x * 7)\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "42\n"
    assert runtime_files(cli_env) == []


def test_run_missing_file(command: Command, cli_env: dict[str, str],
                          tmp_path: Path) -> None:
    missing = tmp_path / "nosuch.py"
    out = run(command, cli_env, "run", "kp/kp-py", str(missing))
    assert out.returncode == 2
    assert one_line(out.stderr) and str(missing) in out.stderr
    assert "Traceback" not in out.stderr
    assert runtime_files(cli_env) == []


@pytest.mark.parametrize("kernel_id", ["kp/kp-pi", "kp/kp_py", "kp/kp-pyy"])
def test_run_unknown_kernel_suggests_the_close_one(command: Command, cli_env: dict[str, str],
                                                   kernel_id: str) -> None:
    out = run(command, cli_env, "run", kernel_id, "--code", "print(1)")
    assert out.returncode == 2
    assert one_line(out.stderr), out.stderr
    assert repr(kernel_id) in out.stderr and "'kp/kp-py'" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert runtime_files(cli_env) == []


def test_run_unknown_provider(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "run", "nosuch/kp-py", "--code", "print(1)")
    assert out.returncode == 2
    assert one_line(out.stderr) and "nosuch" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args", [
    ["run", "kp/kp-py"],
    ["run"],
    ["run", "kp/kp-py", "--code", "print(1)", "file.py"],
])
def test_run_usage_errors(command: Command, cli_env: dict[str, str],
                          args: list[str]) -> None:
    out = run(command, cli_env, *args)
    assert out.returncode == 2
    assert "usage:" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""
    assert runtime_files(cli_env) == []


@pytest.mark.timeout(120)
def test_run_kernel_that_dies_at_start(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "run", "kp/kp-dies", "--code", "print(1)")
    assert out.returncode == 3
    assert "kp-dies-marker" in out.stderr
    assert "kp/kp-dies" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert runtime_files(cli_env) == []


@pytest.mark.timeout(120)
def test_run_kernel_whose_command_does_not_exist(command: Command, cli_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    missing = tmp_path / "no-such-interpreter"
    write_kernelspec(kernels_dir(cli_env), "kp-missing",
               {"argv": [str(missing), "-f", "{connection_file}"], "display_name": "M"})
    out = run(command, cli_env, "run", "kp/kp-missing", "--code", "print(1)")
    assert out.returncode == 3
    assert str(missing) in out.stderr and "Traceback" not in out.stderr
    assert runtime_files(cli_env) == []


@pytest.mark.timeout(120)
def test_run_kernel_exits_during_the_code(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "run", "kp/kp-py", "--code",
              "import os\nprint('bye', flush=True)\nos._exit(5)")
    assert out.returncode == 3, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert runtime_files(cli_env) == []


# --- Ctrl-C ------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_ctrl_c_interrupts_the_code(command: Command, cli_env: dict[str, str]) -> None:
    cli = Running(command("run", "kp/kp-py", "--code", BUSY), cli_env)
    kernel_pid = None
    try:
        kernel_pid = busy_pid(cli.stdout_line())
        cli.signal(signal.SIGINT)
        assert cli.finish() == 1, cli.stderr
        assert "KeyboardInterrupt" in cli.stderr
        assert "\x1b[" not in cli.stderr
        assert cli.stdout == f"busy {kernel_pid}\n"
        assert runtime_files(cli_env) == []
        assert process_gone(kernel_pid), "the kernel outlived the command"
    finally:
        cli.close()
        kill_if_alive(kernel_pid)


@pytest.mark.timeout(120)
def test_second_ctrl_c_shuts_a_stubborn_kernel_down(command: Command,
                                                    cli_env: dict[str, str]) -> None:
    cli = Running(command("run", "kp/kp-py", "--code", STUBBORN), cli_env)
    kernel_pid = None
    try:
        kernel_pid = busy_pid(cli.stdout_line())
        cli.signal(signal.SIGINT)
        cli.wait_for_stderr("interrupting")
        time.sleep(0.5)
        assert cli.proc.poll() is None, "the command ended although the kernel ignored SIGINT"
        assert process_alive(kernel_pid)
        cli.signal(signal.SIGINT)
        assert cli.finish() == 130, cli.stderr
        assert "Traceback" not in cli.stderr
        assert runtime_files(cli_env) == []
        assert process_gone(kernel_pid), "the kernel outlived the command"
    finally:
        cli.close()
        kill_if_alive(kernel_pid)


# --- launch --------------------------------------------------------------------------------


def _check_connection(started: dict[str, Any], env: dict[str, str]) -> Path:
    """The printed connection info matches a 0600 file in the runtime dir."""
    path = Path(started["connection_file"])
    assert path.parent == Path(env["JUPYTER_RUNTIME_DIR"])
    assert path.is_file()
    assert path.stat().st_mode & 0o777 == 0o600
    on_disk = json.loads(path.read_text())
    info = started["connection_info"]
    for key in CONNECTION_KEYS:
        assert info[key] == on_disk[key], key
    assert info["ip"] == "127.0.0.1" and info["transport"] == "tcp"
    assert info["signature_scheme"] == "hmac-sha256" and len(info["key"]) >= 32
    assert all(isinstance(info[k], int) and info[k] > 0 for k in CONNECTION_KEYS
               if k.endswith("_port"))
    return path


def _kernel_pid(client: BlockingKernelClient) -> int:
    printed: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])

    reply = client.execute_interactive("import os; print(os.getpid())", timeout=WAIT,
                                       output_hook=hook)
    assert reply["content"]["status"] == "ok"
    return int("".join(printed))


@pytest.mark.timeout(120)
def test_launch_json_serves_a_real_client_until_ctrl_c(command: Command,
                                                       cli_env: dict[str, str]) -> None:
    cli = Running(command("launch", "kp/kp-py", "--json"), cli_env)
    kernel_pid = None
    try:
        started = json.loads(cli.stdout_line())
        assert set(started) >= {"id", "connection_file", "connection_info"}
        assert started["id"] == "kp/kp-py"
        path = _check_connection(started, cli_env)
        client = BlockingKernelClient()
        client.load_connection_file(str(path))
        client.start_channels()
        try:
            client.wait_for_ready(timeout=WAIT)
            info = client.kernel_info(reply=True, timeout=WAIT)
            assert info["content"]["status"] == "ok"
            assert info["content"]["language_info"]["name"] == "python"
            kernel_pid = _kernel_pid(client)
        finally:
            client.stop_channels()
        # no secret on a command line
        cmdline = Path(f"/proc/{kernel_pid}/cmdline")
        if cmdline.exists():
            assert started["connection_info"]["key"] not in cmdline.read_text()
        assert cli.proc.poll() is None  # still serving
        cli.signal(signal.SIGINT)
        assert cli.finish() == 0, cli.stderr
        assert not path.exists()
        assert "Traceback" not in cli.stderr
        assert runtime_files(cli_env) == []
        assert process_gone(kernel_pid), "the kernel outlived the command"
    finally:
        cli.close()
        kill_if_alive(kernel_pid)


@pytest.mark.timeout(120)
def test_launch_prints_the_connection_file_and_stops_on_sigterm(
        command: Command, cli_env: dict[str, str]) -> None:
    cli = Running(command("launch", "kp/kp-py"), cli_env)
    kernel_pid = None
    try:
        path = Path(cli.stdout_line().rstrip("\n"))
        assert path.parent == Path(cli_env["JUPYTER_RUNTIME_DIR"]) and path.is_file()
        assert path.stat().st_mode & 0o777 == 0o600
        cli.wait_for_stderr(f"--existing {path}")
        client = BlockingKernelClient()
        client.load_connection_file(str(path))
        client.start_channels()
        try:
            client.wait_for_ready(timeout=WAIT)
            kernel_pid = _kernel_pid(client)
        finally:
            client.stop_channels()
        cli.signal(signal.SIGTERM)
        assert cli.finish() == 0, cli.stderr
        assert runtime_files(cli_env) == []
        assert process_gone(kernel_pid), "the kernel outlived the command"
    finally:
        cli.close()
        kill_if_alive(kernel_pid)


@pytest.mark.timeout(120)
def test_launch_ends_when_the_kernel_ends(command: Command, cli_env: dict[str, str]) -> None:
    cli = Running(command("launch", "kp/kp-py", "--json"), cli_env)
    kernel_pid = None
    try:
        started = json.loads(cli.stdout_line())
        client = BlockingKernelClient()
        client.load_connection_file(started["connection_file"])
        client.start_channels()
        try:
            client.wait_for_ready(timeout=WAIT)
            kernel_pid = _kernel_pid(client)
            client.shutdown()  # the kernel ends on its own, not through the command
        finally:
            client.stop_channels()
        assert cli.finish() == 0, cli.stderr
        assert "status 0" in cli.stderr
        assert runtime_files(cli_env) == []
        assert process_gone(kernel_pid)
    finally:
        cli.close()
        kill_if_alive(kernel_pid)


@pytest.mark.timeout(120)
def test_launch_failures(command: Command, cli_env: dict[str, str]) -> None:
    unknown = run(command, cli_env, "launch", "kp/kp-pi")
    assert unknown.returncode == 2
    assert one_line(unknown.stderr) and "'kp/kp-py'" in unknown.stderr
    dies = run(command, cli_env, "launch", "kp/kp-dies", "--json")
    assert dies.returncode == 3
    assert "kp-dies-marker" in dies.stderr and dies.stdout == ""
    assert "Traceback" not in dies.stderr
    assert runtime_files(cli_env) == []


# --- cleanup -------------------------------------------------------------------------------


def test_cleanup_with_nothing_to_do(command: Command, cli_env: dict[str, str]) -> None:
    out = run(command, cli_env, "cleanup")
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""



# --- the reader goes away, other signals ---------------------------------------------------


@pytest.mark.timeout(120)
def test_run_into_a_closed_pipe_leaves_nothing_behind(command: Command,
                                                      cli_env: dict[str, str]) -> None:
    # `kernel-providers run ... | head -1`
    code = "import os\nprint('busy', os.getpid(), flush=True)\nfor i in range(10**6): print(i)"
    proc = subprocess.Popen(command("run", "kp/kp-py", "--code", code), env=cli_env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    kernel_pid = None
    try:
        assert proc.stdout is not None and proc.stderr is not None
        kernel_pid = busy_pid(proc.stdout.readline())
        proc.stdout.close()
        err = proc.stderr.read()  # ends when the command does
        assert proc.wait(timeout=WAIT) == 0, err
        assert "Traceback" not in err
        assert runtime_files(cli_env) == []
        assert process_gone(kernel_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        kill_if_alive(kernel_pid)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("subcommand", "signum"), [
    ("run", signal.SIGTERM), ("run", signal.SIGHUP), ("launch", signal.SIGHUP)],
    ids=["run-SIGTERM", "run-SIGHUP", "launch-SIGHUP"])
def test_termination_signals_leave_nothing_behind(command: Command, cli_env: dict[str, str],
                                                  subcommand: str, signum: int) -> None:
    """`timeout`, a CI cancel or a closed terminal end the command with SIGTERM/SIGHUP, not
    Ctrl-C: it must still shut its kernel down and remove the connection file."""
    args = ["--code", BUSY] if subcommand == "run" else []
    cli = Running(command(subcommand, "kp/kp-py", *args), cli_env)
    kernel_pid = None
    try:
        line = cli.stdout_line()
        if subcommand == "run":
            kernel_pid = busy_pid(line)
        else:
            client = BlockingKernelClient()
            client.load_connection_file(line.strip())
            client.start_channels()
            try:
                client.wait_for_ready(timeout=WAIT)
                kernel_pid = _kernel_pid(client)
            finally:
                client.stop_channels()
        cli.signal(signum)
        cli.finish()
        assert_nothing_left(cli, kernel_pid, cli_env)
    finally:
        cli.close()
        kill_if_alive(kernel_pid)


@pytest.mark.timeout(120)
def test_a_second_signal_does_not_cut_the_shutdown_short(command: Command,
                                                         cli_env: dict[str, str]) -> None:
    """A service manager or an impatient user may signal twice: the command keeps shutting
    its kernel down (it used to drop its handlers first, so the second signal killed it
    half way, which for a container or remote kernel leaves it behind)."""
    cli = Running(command("run", "kp/kp-py", "--code", BUSY), cli_env)
    kernel_pid = None
    try:
        kernel_pid = busy_pid(cli.stdout_line())
        cli.signal(signal.SIGTERM)
        deadline = time.monotonic() + WAIT
        while "shutting the kernel down" not in cli.stderr and time.monotonic() < deadline:
            time.sleep(0.005)
        cli.signal(signal.SIGTERM)
        assert cli.finish() == 130, cli.stderr
        assert_nothing_left(cli, kernel_pid, cli_env)
    finally:
        cli.close()
        kill_if_alive(kernel_pid)
