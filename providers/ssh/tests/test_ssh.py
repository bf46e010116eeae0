"""The SSH provider against a real OpenSSH server (in a container, as its own host)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import KernelFinder, LaunchOptions, NoSuchKernel
from kernel_providers.testing import ConformanceSuite, run_code
from kernel_providers_ssh import CONNECTION_LOST

KERNEL = "ssh/testbox/python3"


def remote_alive(sshd: Any, pid: int) -> bool:
    return "alive" in sshd.exec("python3", "-c", f"import os\ntry:\n os.kill({pid}, 0)\n"
                                "except ProcessLookupError: print('gone')\nelse:"
                                f" print('alive' if open('/proc/{pid}/stat').read().split()[2]"
                                " != 'Z' else 'gone')")


def remote_files(sshd: Any) -> set[str]:
    out = sshd.exec("sh", "-c", f"ls {sshd.home}/.local/share/kernel-providers/runtime"
                    " 2>/dev/null || true")
    return {f"remote:{name}" for name in out.split()}


class TestSSHConformance(ConformanceSuite):
    kernel_id = KERNEL
    failing_kernel_id = "ssh/testbox/exits"
    failing_kernel_output = "ssh-exits-marker"

    @pytest.fixture
    def finder(self, ssh_finder: Any, sshd: Any) -> KernelFinder:
        self.sshd = sshd
        return ssh_finder()  # type: ignore[no-any-return]

    def leftovers(self, runtime_dir: Path) -> set[str]:
        return super().leftovers(runtime_dir) | remote_files(self.sshd)


def test_code_runs_on_the_remote_host(ssh_finder: Any, sshd: Any) -> None:
    finder = ssh_finder()

    async def scenario() -> None:
        kernels = {k.id: k for k in await finder.find_kernels(provider="ssh")}
        assert kernels[KERNEL].metadata["host"] == "testbox"
        launcher = await finder.launch(KERNEL)
        try:
            out, _, _ = await run_code(launcher, "import socket; print(socket.gethostname())")
            assert out.strip() == sshd.hostname
            assert launcher.connection_info["ip"] == "127.0.0.1"
            assert remote_alive(sshd, launcher.remote_pid)  # type: ignore[attr-defined]
            # The remote connection file is private.
            mode = sshd.exec("stat", "-c", "%a", launcher.remote_file)  # type: ignore[attr-defined]
            assert mode.strip() == "600"
        finally:
            await launcher.shutdown()
        assert not remote_alive(sshd, launcher.remote_pid)  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_two_kernels_share_one_connection(ssh_finder: Any) -> None:
    finder = ssh_finder()

    async def scenario() -> None:
        first = await finder.launch(KERNEL)
        second = await finder.launch(KERNEL)
        try:
            pool = finder.providers["ssh"].pool  # type: ignore[attr-defined]
            assert pool.users("testbox") == 2
            conn_a = first.process.channel.get_connection()  # type: ignore[attr-defined]
            conn_b = second.process.channel.get_connection()  # type: ignore[attr-defined]
            assert conn_a is conn_b
        finally:
            await first.shutdown()
            await second.shutdown()
        assert pool.users("testbox") == 0
        assert conn_a.is_closed()  # closed once no kernel uses it

    asyncio.run(scenario())


@pytest.mark.reliability("bad input")
def test_unknown_host_key_is_refused(ssh_finder: Any, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    finder = ssh_finder(known_hosts=str(empty))
    kernels = asyncio.run(finder.find_kernels())
    assert not any(k.provider == "ssh" for k in kernels)
    report = next(r for r in finder.reports if r.id == "ssh")
    assert "host key not verified" in report.message or any(
        "host key not verified" in p for p in report.problems)
    # Starting one of its kernels says why it is missing: the host, the problem, the fix.
    with pytest.raises(NoSuchKernel) as missing:
        asyncio.run(ssh_finder(known_hosts=str(empty)).launch(KERNEL))
    problem = next(p for p in report.problems if "host key not verified" in p)
    assert problem in str(missing.value) and "testbox" in problem
    # The user may relax it for one host, deliberately.
    relaxed = ssh_finder(known_hosts=str(empty), hosts=["unverified"],
                         insecure_hosts=["unverified"])
    assert "ssh/unverified/python3" in [k.id for k in asyncio.run(relaxed.find_kernels())]


def test_unreachable_host_is_reported_and_listing_goes_on(ssh_finder: Any) -> None:
    finder = ssh_finder(hosts=["testbox", "deadbox"])
    kernels = [k.id for k in asyncio.run(finder.find_kernels())]
    assert KERNEL in kernels and any(k.startswith("spec/") for k in kernels)
    report = next(r for r in finder.reports if r.id == "ssh")
    assert report.status == "ok"
    assert any("ssh host 'deadbox' unreachable" in p for p in report.problems)


def test_dropped_connection_ends_the_remote_kernel(ssh_finder: Any, sshd: Any) -> None:
    finder = ssh_finder()

    async def scenario() -> None:
        launcher = await finder.launch(KERNEL)
        pid = launcher.remote_pid  # type: ignore[attr-defined]
        # Kill the server side of our SSH sessions (not the listening sshd, PID 1).
        sshd.kill_sessions()
        status = await asyncio.wait_for(launcher.wait(), 30)
        # Ended, never "running" (None): see tests/chaos/test_ssh_faults.py
        assert launcher.poll() == status == CONNECTION_LOST
        for _ in range(100):
            if not remote_alive(sshd, pid):
                break
            await asyncio.sleep(0.1)
        assert not remote_alive(sshd, pid), "the remote kernel outlived its connection"
        await launcher.cleanup()
        again = await finder.launch(KERNEL)  # a relaunch reconnects
        out, _, _ = await run_code(again, "print('back')")
        assert out == "back\n"
        await again.shutdown()

    asyncio.run(scenario())


def test_remote_kill_is_noticed(ssh_finder: Any, sshd: Any) -> None:
    finder = ssh_finder()

    async def scenario() -> None:
        launcher = await finder.launch(KERNEL)
        sshd.exec("kill", "-9", str(launcher.remote_pid))  # type: ignore[attr-defined]
        assert await asyncio.wait_for(launcher.wait(), 30) == -signal.SIGKILL
        await launcher.cleanup()

    asyncio.run(scenario())


@pytest.mark.parametrize("requested", ["/nonexistent/kp-local-notebooks", "/tmp"])
def test_cwd_is_used_only_where_the_remote_host_has_it(ssh_finder: Any, sshd: Any,
                                                         requested: str) -> None:
    # jupyter_server passes the notebook's local folder: the remote kernel works there if
    # the host has that folder (a shared filesystem), else in the remote home; never fails.
    finder = ssh_finder()
    exists = requested == "/tmp"

    async def scenario() -> None:
        launcher = await finder.launch(KERNEL, LaunchOptions(cwd=requested))
        try:
            out, _, _ = await run_code(launcher, "import os; print(os.getcwd())")
            assert out.strip() == (requested if exists else sshd.home)
            assert launcher.remote_cwd == out.strip()  # type: ignore[attr-defined]
            if not exists:  # said where the user sees a kernel's output
                assert f"{requested} does not exist on" in launcher.output
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())
