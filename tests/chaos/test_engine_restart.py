"""Chaos suite, the Docker engine restarted under a running kernel.

The engine is this module's own: a second ``dockerd`` in a network namespace of its own
(its bridges, routes and published ports are all there: a second engine in the
machine's namespace deletes the machine's ``docker0`` when it restarts), on a private
socket, data root and containerd namespace, with the test image loaded into it. The
kernels' launchers run in that namespace too (a subprocess per scenario, through
``nsenter``; its published ports are there), and talk to it with ``DOCKER_HOST``.

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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from kernel_providers.testing import docker_image_problem, process_alive, unavailable

IMAGE = "kernel-providers-test:bookworm"
KERNEL = f"docker/{IMAGE}"
CONFIG = {"docker": {"images": [IMAGE]}}
# What every scenario starts with: a kernel on the private engine, ready.
PROLOGUE = f"""
import asyncio, json, os, sys, time
from kernel_providers import Config, KernelFinder
def say(**what):
    print(json.dumps(what), flush=True)
async def launch():
    return await KernelFinder(Config(providers={CONFIG!r})).launch({KERNEL!r})
"""


class PrivateDockerd:
    """A dockerd of this module's own (root only), started and stopped at will."""

    def __init__(self, folder: Path, netns: str) -> None:
        self.folder, self.netns = folder, netns
        self.socket = folder / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "dockerd.log"

    def start(self, live_restore: bool = False) -> None:
        """Start the engine; returns once it answers."""
        f = self.folder
        argv = [*self.inside(), "dockerd", "--host", self.url, "--data-root", str(f / "data"),
                "--exec-root", str(f / "exec"), "--pidfile", str(f / "docker.pid"),
                "--containerd-namespace", "kp-chaos",
                "--containerd-plugins-namespace", "kp-chaos-plugins",
                "--iptables=false", "--ip6tables=false",
                *(["--live-restore"] if live_restore else [])]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while self.docker("info", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the private dockerd did not start: {self.tail()}")
            time.sleep(0.2)

    def inside(self) -> list[str]:
        """The command prefix that runs a program in the engine's network namespace
        (nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroups)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}"]

    def scenario(self, script: str) -> subprocess.Popen[str]:
        """Run ``PROLOGUE + script`` in the engine's namespace, its stdin and stdout
        pipes (JSON lines out)."""
        env = {**os.environ, "DOCKER_HOST": self.url}
        return subprocess.Popen([*self.inside(), sys.executable, "-c",
                                 PROLOGUE + textwrap.dedent(script)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=env)

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
    if os.geteuid() != 0 or not all(map(shutil.which, ("dockerd", "ip", "nsenter"))):
        unavailable("a private dockerd needs root, dockerd (Debian's docker.io), ip"
                    " (iproute2) and nsenter (util-linux)")
    # Short: a unix socket's path has a limit of ~100 bytes.
    folder = Path(tempfile.mkdtemp(prefix="kp-dockerd-", dir="/tmp"))
    netns = f"kp-chaos-{uuid.uuid4().hex[:8]}"
    interfaces = machine_interfaces()
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    server = PrivateDockerd(folder, netns)
    try:
        server.start()
        machines = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        save = subprocess.Popen(["docker", "-H", machines, "save", IMAGE],
                                stdout=subprocess.PIPE)
        server.docker("load", stdin=save.stdout)
        assert save.wait(60) == 0
        assert save.stdout is not None
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
        subprocess.run(["ip", "netns", "delete", netns], check=False)
    assert interfaces <= machine_interfaces(), "an interface of the machine is gone"


def machine_interfaces() -> set[str]:
    """The network interfaces of the machine's namespace, but containers' veths."""
    return {name for name in os.listdir("/sys/class/net") if not name.startswith("veth")}


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


def said(process: subprocess.Popen[str]) -> dict[str, Any]:
    """The scenario's next JSON line (it failed if it printed none)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(30)
        pytest.fail(f"the scenario ended (status {process.returncode}) without a word")
    return dict(json.loads(line))


def go_on(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("go\n")
    process.stdin.flush()


@contextlib.contextmanager
def running(process: subprocess.Popen[str],
            status: int = 0) -> Iterator[subprocess.Popen[str]]:
    """The scenario, which must end with ``status``; ended and closed in any case."""
    try:
        yield process
        assert process.wait(120) == status
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def test_restart_ends_the_kernel_with_a_clear_error(engine: PrivateDockerd,
                                                      engine_env: Path) -> None:
    with running(engine.scenario("""
        from kernel_providers import KernelDied
        async def main():
            launcher = await launch()
            await launcher.execute("x = 1")
            say(ready=True)
            await asyncio.to_thread(sys.stdin.readline)  # the engine restarts
            status = await asyncio.wait_for(launcher.wait(), 20)
            try:
                await launcher.execute("x")
                message = None
            except KernelDied as exc:
                message = str(exc)
            await launcher.cleanup()
            say(status=status, message=message,
                file_left=os.path.exists(launcher.connection_file))
        asyncio.run(main())
    """)) as scenario:
        assert said(scenario) == {"ready": True}
        restart(engine)
        go_on(scenario)
        result = said(scenario)
    assert result["status"] == -signal.SIGTERM, result
    message = result["message"]
    assert message is not None, "execute after the restart did not fail"
    assert engine.url in message and "stopped while the kernel ran" in message
    assert "live-restore" in message  # what keeps kernels through a restart
    assert result["file_left"] is False


def test_live_restore_keeps_the_kernel_and_its_launcher(engine: PrivateDockerd,
                                                        engine_env: Path) -> None:
    restart(engine, live_restore=True)
    try:
        with running(engine.scenario("""
            async def main():
                launcher = await launch()
                await launcher.execute("x = 41")
                say(ready=True)
                await asyncio.to_thread(sys.stdin.readline)  # the engine restarts
                await asyncio.sleep(1.0)  # the watch notices the lost stream, asks again
                alive = launcher.poll() is None
                out = []
                reply = await asyncio.wait_for(launcher.execute(
                    "print(x + 1)",
                    on_output=lambda m: out.append(m["content"].get("text", ""))), 30)
                say(alive=alive, status=reply["content"]["status"], out="".join(out),
                    still=launcher.poll() is None, shutdown=await launcher.shutdown())
            asyncio.run(main())
        """)) as scenario:
            assert said(scenario) == {"ready": True}
            restart(engine, live_restore=True)
            go_on(scenario)
            result = said(scenario)
    finally:
        restart(engine)  # the next tests expect the default engine
    assert result == {"alive": True, "status": "ok", "out": "42\n", "still": True,
                      "shutdown": 0}, result


def test_cleanup_after_an_engine_that_was_away_when_the_launcher_died(
        engine: PrivateDockerd, engine_env: Path) -> None:
    with running(engine.scenario("""
        async def main():
            launcher = await launch()
            say(container=launcher.container.id, file=launcher.connection_file)
            await asyncio.sleep(3600)
        asyncio.run(main())
    """), status=-signal.SIGKILL) as scenario:
        started = said(scenario)
        reaper = [p.pid for p in psutil.Process(scenario.pid).children()]
        assert reaper, "the launching process has no reaper"
        engine.stop()
        scenario.send_signal(signal.SIGKILL)
        scenario.wait(10)
        deadline = time.monotonic() + 20
        while any(map(process_alive, reaper)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(process_alive, reaper)), "the reaper did not end"
    engine.start()
    # The reaper could not reach the engine: the container is still there (stopped by
    # the engine's shutdown), which only `cleanup` can now remove.
    left = engine.containers()
    assert [line.split()[0] for line in left] == [started["container"][:12]], left
    done = subprocess.run([sys.executable, "-m", "kernel_providers", "cleanup"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert started["container"][:12] in done.stdout, done.stdout
    assert not Path(started["file"]).exists()
