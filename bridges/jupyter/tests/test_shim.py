"""The kernelspec shim on its own: exit statuses, errors, a killed shim's container
removed by its reaper, and a restart on the same ports after a shim died without one
(the container it left holds them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kernel_providers.connection import allocate_ports, new_connection_info, write_connection_file

SHIM = [sys.executable, "-m", "kernel_providers_jupyter.shim"]


def client_file(folder: Path, **changes: Any) -> Path:
    """A connection file as a Jupyter client writes it (its own ports and key)."""
    info = {**new_connection_info(allocate_ports(), kernel_name="client"), **changes}
    return write_connection_file(info, folder)  # type: ignore[arg-type]


def shim(kernel_id: str, path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHIM, kernel_id, "-f", str(path)], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())


def test_unknown_kernel_and_missing_file_exit_2(jupyter_env: Path, tmp_path: Path) -> None:
    result = shim("spec/no-such-kernel", client_file(tmp_path))
    assert result.returncode == 2
    assert "no kernel with id 'spec/no-such-kernel'" in result.stderr
    assert "kernel-providers jupyter sync" in result.stderr
    result = shim("spec/kp-bridge", tmp_path / "absent.json")
    assert result.returncode == 2 and "absent.json does not exist" in result.stderr


def test_a_kernel_that_cannot_start_exits_3(jupyter_env: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = shim("spec/kp-bridge", bad)
    assert result.returncode == 3
    assert "not valid JSON" in result.stderr and str(bad) in result.stderr


def test_docker_refuses_ipc_clearly(docker_kernel: str, tmp_path: Path,
                                    our_containers: Any) -> None:
    before = our_containers()
    path = client_file(tmp_path, transport="ipc", ip=str(tmp_path / "ipc"))
    result = shim("docker/" + os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm"),
                  path)
    assert result.returncode == 3
    assert "transport 'ipc'" in result.stderr and "use tcp" in result.stderr
    assert our_containers() == before


def start_shim(kernel_id: str, path: Path, **env: str
               ) -> tuple[subprocess.Popen[bytes], Any]:
    """The shim on ``path``, and a jupyter_client client it answered."""
    from jupyter_client import BlockingKernelClient

    process = subprocess.Popen([*SHIM, kernel_id, "-f", str(path)],
                               start_new_session=True, env={**os.environ, **env})
    deadline = time.monotonic() + 120
    while True:  # a container takes longer than a bare client's 1 s heartbeat grace
        client = BlockingKernelClient()
        client.load_connection_file(str(path))
        client.start_channels()
        try:
            client.wait_for_ready(timeout=10)
            return process, client
        except RuntimeError:
            client.stop_channels()
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise AssertionError(f"no kernel: shim status {process.returncode}") from None


@pytest.mark.reliability("orphans")
def test_a_killed_shims_container_is_gone_within_5_s(docker_kernel: str, tmp_path: Path,
                                                     our_containers: Any) -> None:
    kernel_id = "docker/" + os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
    before = our_containers()
    process, client = start_shim(kernel_id, client_file(tmp_path))
    client.stop_channels()
    assert len(our_containers() - before) == 1
    process.kill()  # SIGKILL: the shim cannot clean up; its reaper does
    process.wait()
    deadline = time.monotonic() + 5
    while our_containers() != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert our_containers() == before


def test_restart_after_a_killed_shim_reuses_the_ports(docker_kernel: str, tmp_path: Path,
                                                      our_containers: Any) -> None:
    from jupyter_client import BlockingKernelClient

    kernel_id = "docker/" + os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
    path = client_file(tmp_path)
    before = our_containers()

    # Without its reaper (it could not act) the dead shim's container holds the ports.
    first, client = start_shim(kernel_id, path, KERNEL_PROVIDERS_NO_REAPER="1")
    client.stop_channels()
    first.kill()  # SIGKILL: the shim cannot clean up; its container keeps the ports
    first.wait()
    left = our_containers() - before
    assert len(left) == 1
    # The client restarts the kernel on the same file. Until the new shim has removed
    # the dead one's container (its launcher is gone: an orphan), that one answers.
    second = subprocess.Popen([*SHIM, kernel_id, "-f", str(path)], start_new_session=True,
                              env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while left & our_containers():
            assert second.poll() is None, f"shim ended with {second.returncode}"
            assert time.monotonic() < deadline, "the orphan container was never removed"
            time.sleep(0.5)
        new = our_containers() - before
        assert len(new) == 1
        client = BlockingKernelClient()
        client.load_connection_file(str(path))
        client.start_channels()
        try:
            for _ in range(60):
                try:
                    client.wait_for_ready(timeout=10)
                    break
                except RuntimeError:  # the container is still starting
                    time.sleep(1)
            got: list[str] = []
            reply = client.execute_interactive(
                "import socket; print(socket.gethostname())", timeout=60,
                output_hook=lambda m: got.append(m["content"].get("text", "")))
            assert reply["content"]["status"] == "ok"
            assert "".join(got).strip() == next(iter(new))[:12]  # the new container
        finally:
            client.stop_channels()
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    assert our_containers() == before
    assert json.loads(path.read_text())["shell_port"]  # the client's file is still there


def _venv_kernel(tmp_path: Path, monkeypatch: Any) -> Path:
    """A real virtualenv with ipykernel, as ``venv/planned`` (the only provider on)."""
    from kernel_providers.testing.environments import ipykernel_wheel, make_venv

    prefix = make_venv(tmp_path / "venvs" / "planned", ipykernel_wheel(tmp_path))
    Path(os.environ["KERNEL_PROVIDERS_CONFIG"]).write_text(
        f"[providers.venv]\ndirs = [{json.dumps(str(prefix.parent))}]\ninclude_cwd = false\n")
    monkeypatch.setenv("KERNEL_PROVIDERS_DISABLE", "conda,docker,ssh,slurm,example,spec")
    monkeypatch.setenv("KERNEL_PROVIDERS_TRACE", "1")
    return prefix


def _start_and_ask(path: Path, code: str, **env: str) -> tuple[str, str]:
    """Start the shim for ``venv/planned`` on ``path``, run ``code`` through the client's
    own connection file, end the kernel with SIGTERM; (printed output, shim stderr)."""
    from jupyter_client import BlockingKernelClient

    process = subprocess.Popen([*SHIM, "venv/planned", "-f", str(path)],
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, **env})
    client = BlockingKernelClient()
    client.load_connection_file(str(path))
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        got: list[str] = []
        reply = client.execute_interactive(
            code, timeout=60, output_hook=lambda m: got.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok"
    finally:
        client.stop_channels()
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM  # the kernel itself got it: no shim between
    return "".join(got).strip(), stderr


def test_a_venv_kernel_starts_again_from_its_exec_plan(jupyter_env: Path, tmp_path: Path,
                                                       monkeypatch: Any) -> None:
    prefix = _venv_kernel(tmp_path, monkeypatch)
    code = "import os, sys; print(sys.prefix, os.environ.get('JPY_SESSION_NAME'))"
    out, stderr = _start_and_ask(client_file(tmp_path), code, JPY_SESSION_NAME="a.ipynb")
    assert out == f"{prefix} a.ipynb"
    assert "replaying exec plan" not in stderr
    out, stderr = _start_and_ask(client_file(tmp_path), code, JPY_SESSION_NAME="b.ipynb")
    assert out == f"{prefix} b.ipynb"  # same kernel, this start's session
    assert "replaying exec plan" in stderr
    # A kernelspec installed into the environment changes what the id may mean:
    # discovery runs again (and records again).
    spec = prefix / "share" / "jupyter" / "kernels" / "other"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(
        {"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "Other", "language": "python"}))
    out, stderr = _start_and_ask(client_file(tmp_path), code)
    assert out.startswith(str(prefix)) and "replaying exec plan" not in stderr


def test_a_removed_venv_is_reported_not_replayed(jupyter_env: Path, tmp_path: Path,
                                                 monkeypatch: Any) -> None:
    import shutil

    prefix = _venv_kernel(tmp_path, monkeypatch)
    _start_and_ask(client_file(tmp_path), "pass")
    shutil.rmtree(prefix)
    result = shim("venv/planned", client_file(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "replaying exec plan" not in result.stderr
    assert "no kernel with id 'venv/planned'" in result.stderr
