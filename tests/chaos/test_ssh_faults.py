"""Chaos suite, SSH: faults of the host a kernel runs on, against a real OpenSSH server.

The server is this module's own (a container of the test image it starts and removes,
or with ``KP_TEST_SSHD=local`` or no Docker engine an sshd on 127.0.0.1 of this
machine), so the faults below (sessions killed, the host frozen) touch nothing else.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, KernelDied, KernelFinder, KernelLauncher
from kernel_providers.sdk import PORT_NAMES
from kernel_providers.testing import port_listening
from kernel_providers_ssh.testing import (
    SSHD,
    LocalSSHD,
    sshd_for_tests,
)

IMAGE = os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
KERNEL = "ssh/testbox/python3"
LOST = "the SSH connection to testbox was lost"

# Sends a signal to every sshd process below the listener (the server side of each
# session, not the listener itself), run on the server's host.
_SIGNAL_SESSIONS = """
import os, sys
root, signum = int(sys.argv[1]), int(sys.argv[2])
parents = {}
for p in filter(str.isdigit, os.listdir('/proc')):
    try:
        stat = open('/proc/%s/stat' % p).read()
    except OSError:
        continue
    name, rest = stat[stat.index('(') + 1:stat.rindex(')')], stat[stat.rindex(')') + 2:]
    parents[int(p)] = (int(rest.split()[1]), name)
def below(pid):
    while pid in parents and pid != root:
        pid = parents[pid][0]
    return pid == root
sessions = [pid for pid, (_, name) in parents.items()
            if pid != root and name.startswith('sshd') and below(pid)]
for pid in sessions:
    os.kill(pid, signum)
print(len(sessions))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHD | LocalSSHD]:
    """This module's own sshd: a container it starts (removed afterwards), or a local one."""
    with sshd_for_tests(tmp_path_factory.mktemp("ssh-chaos"), IMAGE) as started:
        yield started


@pytest.fixture
def finder(server: SSHD | LocalSSHD, kp_isolated: Path) -> Callable[..., KernelFinder]:
    """``finder(**table)``: a finder whose [providers.ssh] points at this module's sshd."""
    def make(**table: Any) -> KernelFinder:
        settings = {"hosts": ["testbox"], "python": server.python,
                    "ssh_config": str(server.ssh_config),
                    "known_hosts": str(server.known_hosts), "connect_timeout": 20, **table}
        return KernelFinder(Config(providers={"ssh": settings}))
    return make


def signal_sessions(server: SSHD | LocalSSHD, signum: int) -> None:
    """``signum`` to the server side of every SSH session of ``server`` (ours alone)."""
    root = 1 if isinstance(server, SSHD) else server.process.pid  # the listener
    out = server.exec("python3", "-c", _SIGNAL_SESSIONS, str(root), str(int(signum)))
    assert out.strip().isdigit() and int(out) > 0, f"no session signalled: {out}"


def remote_mode(server: SSHD | LocalSSHD, path: str) -> str:
    return server.exec("stat", "-c", "%a", path).strip()


def remote_exists(server: SSHD | LocalSSHD, path: str) -> bool:
    return "yes" in server.exec("sh", "-c", f"test -e '{path}' && echo yes || echo no")


async def ended_within(launcher: KernelLauncher, seconds: float) -> float:
    """Seconds until ``poll()`` gave a status; fails after ``seconds``."""
    start = time.monotonic()
    while launcher.poll() is None:
        assert time.monotonic() - start < seconds, (
            f"poll() still None {seconds:g} s after the connection was lost")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def gone_within(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def assert_lost_and_freed(launcher: KernelLauncher, ports: list[int]) -> None:
    """The launcher of a kernel whose connection was lost: ended, said so naming the
    host, its local forwards closed; shutdown is prompt and removes its file."""
    status = await asyncio.wait_for(launcher.wait(), 5)
    assert status is not None and status == launcher.poll()
    assert LOST in launcher.output
    assert not [p for p in ports if port_listening(p)], "a local forward still listens"
    file = launcher.connection_file
    assert await asyncio.wait_for(launcher.shutdown(), 15) == status
    assert not os.path.exists(file)


def test_killed_sshd_ends_the_launcher(server: SSHD | LocalSSHD,
                                       finder: Callable[..., KernelFinder]) -> None:
    """sshd dies under a running kernel (the TCP connection closes): the launcher ends at
    once, code that was running fails naming the host, nothing is left here or there."""
    async def scenario() -> float:
        launcher = await finder().launch(KERNEL)
        ports = [int(launcher.connection_info[p]) for p in PORT_NAMES]  # type: ignore[literal-required]
        pid = launcher.remote_pid  # type: ignore[attr-defined]
        running = asyncio.ensure_future(launcher.execute("import time; time.sleep(600)"))
        await asyncio.sleep(0.5)  # the code runs
        signal_sessions(server, signal.SIGKILL)
        took = await ended_within(launcher, 15)
        with pytest.raises(KernelDied, match=LOST):
            await asyncio.wait_for(running, 15)
        await assert_lost_and_freed(launcher, ports)
        # The supervisor ends the kernel, and removes its connection file and folder.
        assert await gone_within(lambda: bool(server.alive(pid)), 15)
        assert await gone_within(
            lambda: remote_exists(server, posixpath.dirname(launcher.remote_file)),  # type: ignore[attr-defined]
            15)
        return took

    took = asyncio.run(scenario())
    print(f"loss noticed after {took:.2f} s")


def test_frozen_host_ends_the_launcher(server: SSHD | LocalSSHD,
                                       finder: Callable[..., KernelFinder]) -> None:
    """The host stops answering while the TCP connection stays up (the container is
    paused, or sshd stopped): keepalives notice it within interval x (count + 1)."""
    async def scenario() -> float:
        launcher = await finder(keepalive_interval=1, keepalive_count_max=2).launch(KERNEL)
        ports = [int(launcher.connection_info[p]) for p in PORT_NAMES]  # type: ignore[literal-required]
        pid = launcher.remote_pid  # type: ignore[attr-defined]
        freeze(server)
        try:
            took = await ended_within(launcher, 15)
            await assert_lost_and_freed(launcher, ports)
        finally:
            thaw(server)
        # Thawed, the host sees the connection closed: its supervisor ends the kernel.
        assert await gone_within(lambda: bool(server.alive(pid)), 15)
        return took

    took = asyncio.run(scenario())
    print(f"silent loss noticed after {took:.2f} s (keepalive 1 s x 2)")


def freeze(server: SSHD | LocalSSHD) -> None:
    if isinstance(server, SSHD):
        server.container.pause()
    else:
        signal_sessions(server, signal.SIGSTOP)


def thaw(server: SSHD | LocalSSHD) -> None:
    if isinstance(server, SSHD):
        server.container.unpause()
    else:
        signal_sessions(server, signal.SIGCONT)


def test_shared_runtime_dir_is_left_alone(server: SSHD | LocalSSHD,
                                          finder: Callable[..., KernelFinder],
                                          tmp_path: Path) -> None:
    """An absolute runtime_dir shared by everyone (1777, as /tmp) keeps its mode; the
    connection file lies 0600 in a 0700 folder made for it, gone after shutdown."""
    if isinstance(server, SSHD):
        shared = f"/srv/kp-shared-{uuid.uuid4().hex[:8]}"
        server.exec("sh", "-c", f"mkdir -p {shared} && chmod 1777 {shared}")
    else:
        shared = str(tmp_path / "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o1777)

    async def scenario() -> None:
        launcher = await finder(runtime_dir=shared).launch(KERNEL)
        remote_file: str = launcher.remote_file  # type: ignore[attr-defined]
        folder = posixpath.dirname(remote_file)
        try:
            assert remote_mode(server, shared) == "1777"
            assert posixpath.dirname(folder) == shared
            # 0700 (the kernel, as jupyter_client does, may add the sticky bit)
            assert int(remote_mode(server, folder), 8) & 0o777 == 0o700
            assert remote_mode(server, remote_file) == "600"
        finally:
            await launcher.shutdown()
        assert remote_mode(server, shared) == "1777"
        assert not remote_exists(server, remote_file)
        assert not remote_exists(server, folder)

    asyncio.run(scenario())
