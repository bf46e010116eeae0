"""The per-user pool service through the real command: `pool serve`, `run` taking its
kernels, `pool status`, `pool stop`, and what happens to a taken kernel whose client
dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kernel_providers import KernelFinder
from kernel_providers.testing import ConformanceSuite, command_argv, process_alive

CLI_PLUGIN = Path(__file__).parent / "cli_plugin"

Command = Callable[..., list[str]]


@pytest.fixture
def service(command: Command, cli_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A running pool service holding one kp/kp-py; the environment to reach it."""
    yield from serving(command, cli_env)


def serving(command: Command, env: dict[str, str]) -> Iterator[dict[str, str]]:
    Path(env["KERNEL_PROVIDERS_CONFIG"]).write_text('[pool."kp/kp-py"]\nsize = 1\n')
    done = subprocess.run(command("pool", "serve", "--detach"), env=env,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    try:
        wait_ready(command, env)
        yield env
    finally:
        subprocess.run(command("pool", "stop"), env=env, capture_output=True, timeout=60)


def status(command: Command, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(command("pool", "status", "--json"), env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def wait_ready(command: Command, env: dict[str, str]) -> list[int]:
    """The pids of the service's ready kp/kp-py kernels, once there is one."""
    for _ in range(300):
        kind = status(command, env)["types"]["kp/kp-py"]  # type: ignore[index]
        if kind["ready"]:
            return list(kind["pids"])
        time.sleep(0.1)
    raise AssertionError("the pool service did not get a kernel ready")


def test_run_takes_the_services_kernel(command: Command, service: dict[str, str]) -> None:
    socket = Path(service["JUPYTER_RUNTIME_DIR"]) / "kernel-providers-pool.sock"
    assert socket.stat().st_mode & 0o777 == 0o600
    (pooled,) = wait_ready(command, service)
    done = subprocess.run(command("run", "kp/kp-py", "--code",
                                  "import os; print(os.getpid()); print(os.getcwd())"),
                          env=service, capture_output=True, text=True, timeout=60,
                          cwd=Path(service["JUPYTER_RUNTIME_DIR"]).parent)
    assert done.returncode == 0, done.stderr
    pid, cwd = done.stdout.split()
    assert int(pid) == pooled, "run started its own kernel instead of the pooled one"
    assert cwd == str(Path(service["JUPYTER_RUNTIME_DIR"]).parent)  # the caller's cwd
    kind = status(command, service)["types"]["kp/kp-py"]  # type: ignore[index]
    assert kind["hits"] == 1
    for _ in range(100):
        if not process_alive(pooled):
            break
        time.sleep(0.1)
    assert not process_alive(pooled), "the used kernel outlived its run"
    assert wait_ready(command, service) != [pooled]  # refilled with a new kernel


def test_another_environment_is_a_miss(command: Command, service: dict[str, str]) -> None:
    """A caller whose environment differs gets a kernel of its own, as without a pool."""
    (pooled,) = wait_ready(command, service)
    env = {**service, "KP_OTHER_SETTING": "1"}
    done = subprocess.run(command("run", "kp/kp-py", "--code",
                                  "import os; print(os.getpid(), os.environ['KP_OTHER_SETTING'])"),
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid, setting = done.stdout.split()
    assert int(pid) != pooled and setting == "1"
    kind = status(command, service)["types"]["kp/kp-py"]  # type: ignore[index]
    assert kind["misses"] == 1 and kind["ready"] == 1
    assert "KP_OTHER_SETTING" in kind["last_miss"]


def test_a_dead_clients_kernel_is_ended(command: Command, service: dict[str, str]) -> None:
    (pooled,) = wait_ready(command, service)
    client = subprocess.Popen(command("launch", "kp/kp-py"), env=service,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert client.stdout is not None
        connection_file = client.stdout.readline().strip()
        assert Path(connection_file).exists()
        client.send_signal(signal.SIGKILL)
        client.wait(10)
        deadline = time.monotonic() + 5
        while process_alive(pooled) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not process_alive(pooled), "the service kept a dead client's kernel"
        assert not Path(connection_file).exists()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
        if client.stdout is not None:
            client.stdout.close()


def test_stop_ends_the_pooled_kernels(command: Command, service: dict[str, str]) -> None:
    pids = wait_ready(command, service)
    table = subprocess.run(command("pool", "status"), env=service, capture_output=True,
                           text=True, timeout=30)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[1:3]
    assert header.split()[:3] == ["KERNEL", "TYPE", "READY"]
    assert row.split()[:2] == ["kp/kp-py", "1"] and "MiB" in row, table.stdout
    holder = status(command, service)["holder_pid"]
    done = subprocess.run(command("pool", "stop"), env=service, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for _ in range(100):
        if not any(process_alive(p) for p in [*pids, holder]):  # type: ignore[list-item]
            break
        time.sleep(0.1)
    assert not any(process_alive(p) for p in pids)
    assert not (Path(service["JUPYTER_RUNTIME_DIR"]) / "kernel-providers-pool.sock").exists()
    again = subprocess.run(command("pool", "status"), env=service, capture_output=True,
                           text=True, timeout=30)
    assert again.returncode == 3 and "no pool service runs" in again.stderr
    stop = subprocess.run(command("pool", "stop"), env=service, capture_output=True,
                          text=True, timeout=30)
    assert stop.returncode == 3 and "no pool service runs" in stop.stderr


def test_serve_without_a_pool_says_what_to_configure(command: Command,
                                                     cli_env: dict[str, str]) -> None:
    done = subprocess.run(command("pool", "serve"), env=cli_env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "[pool]" in done.stderr, done.stderr
    assert not os.path.exists(Path(cli_env["JUPYTER_RUNTIME_DIR"]) / "kernel-providers-pool.sock")


def test_run_autostarts_the_service(command: Command, cli_env: dict[str, str]) -> None:
    """[pool] autostart: the first `run` starts cold and leaves a service behind; the
    next `run` takes its kernel."""
    Path(cli_env["KERNEL_PROVIDERS_CONFIG"]).write_text(
        '[pool]\nautostart = true\n[pool."kp/kp-py"]\nsize = 1\n')
    code = ["run", "kp/kp-py", "--code", "import os; print(os.getpid())"]
    try:
        first = subprocess.run(command(*code), env=cli_env, capture_output=True, text=True,
                               timeout=60)
        assert first.returncode == 0, first.stderr
        for _ in range(300):  # the service comes up and fills in the background
            done = subprocess.run(command("pool", "status", "--json"), env=cli_env,
                                  capture_output=True, text=True, timeout=30)
            if done.returncode == 0 and json.loads(done.stdout)["types"]["kp/kp-py"]["ready"]:
                break
            time.sleep(0.1)
        (pooled,) = wait_ready(command, cli_env)
        second = subprocess.run(command(*code), env=cli_env, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 0, second.stderr
        assert int(second.stdout) == pooled
    finally:
        subprocess.run(command("pool", "stop"), env=cli_env, capture_output=True, timeout=60)


def test_a_service_kernel_that_dies_says_why(command: Command, service: dict[str, str]) -> None:
    """The kernel dies under `run`: the error quotes what it wrote to its own stderr
    (not sent as output: the service held it), as for a kernel `run` started itself."""
    wait_ready(command, service)
    done = subprocess.run(command("run", "kp/kp-py", "--code",
                                  "import os; os.write(2, b'last-words\\n'); os._exit(7)"),
                          env=service, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "last-words" in done.stderr, done.stderr


class TestServiceKernelConformance(ConformanceSuite):
    """The launcher contract holds for kernels the pool service hands out (each test's
    first launch takes one: the finder fixture waits until the service has one)."""

    kernel_id = "kp/kp-py"
    failing_kernel_id = "kp/kp-dies"
    failing_kernel_output = "kp-dies-marker"
    concurrent_launches = 4

    @pytest.fixture
    def finder(self, kp_isolated: Path, command: Command, cli_env: dict[str, str],
               monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
               ) -> Iterator[KernelFinder]:
        # This process as the service's callers are: its environment (pytest's own
        # variable as it will be while the test runs), its plugin.
        env = {**cli_env, "PYTEST_CURRENT_TEST": f"{request.node.nodeid} (call)"}
        for name in set(os.environ) - set(env):
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.syspath_prepend(str(CLI_PLUGIN))
        for _ in serving(command, env):
            self.env = env
            yield KernelFinder()

    env: dict[str, str] = {}

    def leftovers(self, runtime_dir: Path) -> set[str]:
        # What the service holds ready (once its refills are done) is the service's.
        while True:
            kind = status(command_argv, self.env)["types"]["kp/kp-py"]  # type: ignore[index]
            if not kind["starting"]:
                break
            time.sleep(0.05)
        pooled = {Path(f).name for f in kind["connection_files"]}
        return {p.name for p in Path(self.env["JUPYTER_RUNTIME_DIR"]).glob("kernel-*")
                if p.name not in pooled and p.suffix == ".json"}
