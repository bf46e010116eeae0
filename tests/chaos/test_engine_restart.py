"""Chaos suite, the Docker engine restarted under a running kernel.

The engine is this module's own: a second ``dockerd`` on a private socket, data root,
containerd namespace and default bridge (``kp-chaos0``, made here: ``--bridge none``
would delete the machine's ``docker0``), without iptables rules, with the test image
loaded into it, so stopping it touches nothing else on the machine. Kernels are started through
the public API with ``DOCKER_HOST`` pointing at it.

- Restarted as dockerd does by default (its containers end with it): the kernel's
  ``wait()`` returns the container's status (-15: SIGTERM) within seconds, a client's
  next request fails with KernelDied whose message names the engine and what happened,
  and ``cleanup()`` (the engine back) leaves no container and no connection file.
- Restarted with live-restore (containers outlive the engine): the launcher does not
  mistake the lost log stream for the kernel's end; code runs after the restart, and
  shutdown leaves nothing.
- Stopped while the launching process is SIGKILLed: its reaper cannot reach the engine,
  so the container outlives the process; once the engine is back, ``kernel-providers
  cleanup`` removes it and the stale connection file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from kernel_providers import Config, KernelDied, KernelFinder
from kernel_providers.testing import docker_image_problem, process_alive, unavailable

IMAGE = "kernel-providers-test:bookworm"
KERNEL = f"docker/{IMAGE}"
CONFIG = {"docker": {"images": [IMAGE]}}
BRIDGE = "kp-chaos0"  # the private engine's default bridge


class PrivateDockerd:
    """A dockerd of this module's own (root only), started and stopped at will."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = folder / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "dockerd.log"

    def start(self, live_restore: bool = False) -> None:
        """Start the engine; returns once it answers."""
        f = self.folder
        argv = ["dockerd", "--host", self.url, "--data-root", str(f / "data"),
                "--exec-root", str(f / "exec"), "--pidfile", str(f / "docker.pid"),
                "--containerd-namespace", "kp-chaos",
                "--containerd-plugins-namespace", "kp-chaos-plugins",
                "--bridge", BRIDGE, "--iptables=false", "--ip6tables=false",
                *(["--live-restore"] if live_restore else [])]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while self.docker("info", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the private dockerd did not start: {self.tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the engine as `systemctl stop docker` does (SIGTERM) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def docker(self, *args: str, check: bool = True, **kwargs: Any
               ) -> subprocess.CompletedProcess[str]:
        """The docker CLI against this engine."""
        return subprocess.run(["docker", "-H", self.url, *args], capture_output=True,
                              text=True, check=check, timeout=120, **kwargs)

    def containers(self) -> list[str]:
        """Every container on this engine, running or not: 'id status'."""
        return self.docker("ps", "-a", "--format", "{{.ID}} {{.Status}}").stdout.split("\n")[:-1]

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])


@pytest.fixture(scope="module")
def engine() -> Iterator[PrivateDockerd]:
    problem = docker_image_problem(IMAGE)
    if problem:
        unavailable(problem)
    if os.geteuid() != 0 or not shutil.which("dockerd") or not shutil.which("ip"):
        unavailable("a private dockerd needs root, dockerd (Debian's docker.io) and ip"
                    " (iproute2)")
    # Short: a unix socket's path has a limit of ~100 bytes.
    folder = Path(tempfile.mkdtemp(prefix="kp-dockerd-", dir="/tmp"))
    server = PrivateDockerd(folder)
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    try:
        server.start()
        save = subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE)
        server.docker("load", stdin=save.stdout)
        assert save.wait(60) == 0
        save.stdout.close()
        yield server
    finally:
        if server.process is not None:
            with contextlib.suppress(subprocess.SubprocessError):
                ids = [line.split()[0] for line in server.containers()]
                if ids:
                    server.docker("rm", "-f", *ids, check=False)
        server.stop()
        unmount_under(folder)
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(["ip", "link", "delete", BRIDGE], check=False)


def unmount_under(folder: Path) -> None:
    """Unmount what dockerd left mounted under ``folder`` (it keeps its data root a
    private mount), deepest first."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(f"{folder}/")), reverse=True):
        subprocess.run(["umount", point], check=False, capture_output=True)


@pytest.fixture
def engine_env(engine: PrivateDockerd, kp_isolated: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """DOCKER_HOST at the private engine (running, without live-restore), a private
    runtime dir; yields the runtime dir and checks that nothing is left on the engine."""
    if engine.process is None:
        engine.start()
    monkeypatch.setenv("DOCKER_HOST", engine.url)
    yield kp_isolated
    if engine.process is None:
        engine.start()
    assert engine.containers() == [], "a container was left on the engine"
    assert list(kp_isolated.iterdir()) == [], "a file was left in the runtime dir"


def restart(engine: PrivateDockerd, live_restore: bool = False) -> None:
    engine.stop()
    engine.start(live_restore)


def test_restart_ends_the_kernel_with_a_clear_error(engine: PrivateDockerd,
                                                      engine_env: Path) -> None:
    async def main() -> None:
        launcher = await KernelFinder(Config(providers=CONFIG)).launch(KERNEL)
        try:
            assert (await launcher.execute("x = 1"))["content"]["status"] == "ok"
            restart(engine)
            status = await asyncio.wait_for(launcher.wait(), 20)
            assert status == -signal.SIGTERM, launcher.output[-800:]
            with pytest.raises(KernelDied) as died:
                await launcher.execute("x")
            message = str(died.value)
            assert engine.url in message and "stopped while the kernel ran" in message
            assert "live-restore" in message  # what keeps kernels through a restart
        finally:
            await launcher.cleanup()
        assert not Path(launcher.connection_file).exists()

    asyncio.run(main())


def test_live_restore_keeps_the_kernel_and_its_launcher(engine: PrivateDockerd,
                                                        engine_env: Path) -> None:
    restart(engine, live_restore=True)

    async def main() -> None:
        launcher = await KernelFinder(Config(providers=CONFIG)).launch(KERNEL)
        try:
            assert (await launcher.execute("x = 41"))["content"]["status"] == "ok"
            restart(engine, live_restore=True)
            await asyncio.sleep(1.0)  # the watch notices the lost stream, asks again
            assert launcher.poll() is None, launcher.output[-800:]
            outputs: list[str] = []
            reply = await asyncio.wait_for(launcher.execute(
                "print(x + 1)", on_output=lambda m: outputs.append(
                    m["content"].get("text", ""))), 30)
            assert reply["content"]["status"] == "ok" and "42" in "".join(outputs)
            assert launcher.poll() is None
            assert await launcher.shutdown() == 0
        finally:
            await launcher.cleanup()

    try:
        asyncio.run(main())
    finally:
        restart(engine)  # the next tests expect the default engine


def test_cleanup_after_an_engine_that_was_away_when_the_launcher_died(
        engine: PrivateDockerd, engine_env: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, json
        from kernel_providers import Config, KernelFinder
        async def main():
            finder = KernelFinder(Config(providers={CONFIG!r}))
            launcher = await finder.launch({KERNEL!r})
            print(json.dumps([launcher.container.id, launcher.connection_file]), flush=True)
            await asyncio.sleep(3600)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        container_id, connection_file = json.loads(proc.stdout.readline())
        reaper = [p.pid for p in psutil.Process(proc.pid).children()]
        assert reaper, "the launching process has no reaper"
        engine.stop()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 20
        while any(map(process_alive, reaper)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(process_alive, reaper)), "the reaper did not end"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    engine.start()
    # The reaper could not reach the engine: the container is still there (stopped by
    # the engine's shutdown), which only `cleanup` can now remove.
    left = engine.containers()
    assert [line.split()[0] for line in left] == [container_id[:12]], left
    done = subprocess.run([sys.executable, "-m", "kernel_providers", "cleanup"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert container_id[:12] in done.stdout, done.stdout
    assert not Path(connection_file).exists()
