"""Chaos suite, load: many kernels at once, with zero failures.

- 32 local kernels (the kernelspec provider, on a kernelspec written here), 8 Docker
  kernels and 4 SSH kernels, each batch through one ``KernelFinder``: all launched at
  once (``asyncio.gather``), then each runs ``print(i)``, then all shut down. Every
  output is right, the ports of the kernels alive together are distinct, and nothing is
  left: no connection file, no kernel process (here or on the SSH host), no container.
- 20 kernels through a real ``jupyter server`` with the bridge enabled, over its REST
  API and websockets: started at once, a cell run in each, all deleted; the same checks.

The point is correctness under load, never speed: ready timeouts are generous (2 cores
start 32 kernels slowly) and the timings are printed, not asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from kernel_providers import Config, KernelFinder, KernelLauncher, LaunchOptions
from kernel_providers.ownership import process_stamp
from kernel_providers.sdk import PORT_NAMES
from kernel_providers.testing import (
    port_listening,
    process_alive,
    run_code,
    write_kernelspec,
)
from kernel_providers_ssh.testing import SSHD, LocalSSHD

T = TypeVar("T")

IMAGE = os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
SPEC_NAME = "kp-load"
IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
LOAD_SPEC = {"argv": IPYKERNEL, "display_name": "KP Load", "language": "python"}
# Generous: on 2 cores, 32 kernels importing IPython at once take far longer than one.
# A kernel that is merely slow is not a failure here; one that fails is.
SLOW_OK = 300.0
LAUNCHER_LABEL = "io.kernel-providers.launcher"  # the launching process's stamp


# --- one batch of kernels --------------------------------------------------------------


@dataclass
class Batch:
    """What a batch of concurrent launches gave: its launchers, every failure (by
    phase), the output of each kernel's ``print(i)``, and how long each phase took."""

    launchers: list[KernelLauncher] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    outputs: dict[int, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def report(self, what: str) -> None:
        """Print the timings (not asserted: this suite counts failures, not seconds)."""
        phases = ", ".join(f"{name} {took:.1f} s" for name, took in self.seconds.items())
        print(f"{what}: {phases}")

    def assert_all_held(self, count: int) -> None:
        """Zero failures; every kernel printed its own number; no port given twice."""
        assert not self.failures, (f"{len(self.failures)} failures in {count} concurrent"
                                   " kernels:\n" + "\n".join(self.failures))
        assert len(self.launchers) == count
        wrong = {i: out for i, out in self.outputs.items() if out != f"{i}\n"}
        assert not wrong and len(self.outputs) == count, f"wrong outputs: {wrong}"
        taken = [p for p in self.ports if self.ports.count(p) > 1]
        assert not taken, f"ports given to two kernels at once: {sorted(set(taken))}"
        assert len(self.ports) == 5 * count


def describe(exc: BaseException) -> str:
    """A failure in one line or a few: its type, message and the kernel's last output."""
    text = f"{type(exc).__name__}: {exc}"
    output = getattr(exc, "output", "")
    return text + (f"\n    output: {output[-800:]!r}" if output else "")


async def gather_all(coros: Sequence[Awaitable[T]], failures: list[str], phase: str
                     ) -> list[T | None]:
    """Await ``coros`` together; a failure is recorded (its result None), never raised,
    so that the others still finish and are cleaned up."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    out: list[T | None] = []
    for i, result in enumerate(results):
        if isinstance(result, BaseException):
            failures.append(f"{phase} #{i}: {describe(result)}")
            out.append(None)
        else:
            out.append(result)
    return out


async def run_batch(finder: KernelFinder, kernel_id: str, count: int,
                    inspect: Callable[[list[KernelLauncher]], None] | None = None
                    ) -> Batch:
    """Launch ``count`` kernels of ``kernel_id`` at once, run ``print(i)`` in each, call
    ``inspect(launchers)`` while all run, then shut them all down at once."""
    batch = Batch()
    start = time.monotonic()
    options = LaunchOptions(ready_timeout=SLOW_OK)
    launched = await gather_all([finder.launch(kernel_id, options) for _ in range(count)],
                                batch.failures, "launch")
    batch.launchers = [launcher for launcher in launched if launcher is not None]
    batch.seconds["launch"] = time.monotonic() - start
    try:
        start = time.monotonic()
        outputs = await gather_all(
            [run_code(launcher, f"print({i})", timeout=SLOW_OK)
             for i, launcher in enumerate(batch.launchers)], batch.failures, "execute")
        batch.seconds["execute"] = time.monotonic() - start
        batch.outputs = {i: out[0] for i, out in enumerate(outputs) if out is not None}
        batch.ports = [int(launcher.connection_info[p])  # type: ignore[literal-required]
                       for launcher in batch.launchers for p in PORT_NAMES]
        if inspect is not None:
            inspect(batch.launchers)
    finally:
        start = time.monotonic()
        await gather_all([launcher.shutdown() for launcher in batch.launchers],
                         batch.failures, "shutdown")
        batch.seconds["shutdown"] = time.monotonic() - start
    return batch


def leftover_files(runtime: Path) -> list[str]:
    """Whatever is in the (test's own) runtime dir."""
    return sorted(p.name for p in runtime.iterdir())


def kernel_children(before: set[int]) -> list[str]:
    """Kernel processes among this process's descendants that were not there before."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in before and child.status() != psutil.STATUS_ZOMBIE \
                    and "ipykernel" in " ".join(child.cmdline()):
                found.append(f"{child.pid}: {' '.join(child.cmdline())}")
        except psutil.NoSuchProcess:
            continue
    return found


def descendants() -> set[int]:
    """The pids of this process's descendants now."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture
def isolated(kp_isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own runtime dir, config and IPython dir (32 kernels would otherwise
    share the user's IPython history database); yields the runtime dir."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return kp_isolated


# --- local kernels ---------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_32_concurrent_local_kernels(isolated: Path, tmp_path: Path) -> None:
    """32 kernelspec kernels at once: all start, run, stop; nothing is left."""
    kernels = tmp_path / "kernels"
    write_kernelspec(kernels, SPEC_NAME, LOAD_SPEC)
    finder = KernelFinder(Config(providers={"spec": {"extra_dirs": [str(kernels)]}}))
    before = descendants()
    pids: list[int] = []

    def inspect(launchers: list[KernelLauncher]) -> None:
        pids.extend(launcher.pid for launcher in launchers)  # type: ignore[attr-defined]

    batch = asyncio.run(run_batch(finder, f"spec/{SPEC_NAME}", 32, inspect))
    batch.report("32 local kernels")
    batch.assert_all_held(32)
    assert len(set(pids)) == 32
    alive = [pid for pid in pids if process_alive(pid)]
    assert not alive, f"kernel processes alive after shutdown: {alive}"
    assert not kernel_children(before), "kernel processes left below this process"
    assert not leftover_files(isolated), f"left in the runtime dir: {leftover_files(isolated)}"


# --- Docker kernels --------------------------------------------------------------------


def containers_of_this_process(client: Any) -> set[str]:
    """Containers launched by this very process (the launcher label holds its stamp):
    found even when a failed launch never told us their id; no one else's."""
    return {c.id for c in client.containers.list(
        all=True, filters={"label": f"{LAUNCHER_LABEL}={process_stamp()}"})}


@pytest.mark.timeout(600)
def test_8_concurrent_docker_kernels(isolated: Path, docker_client: Any) -> None:
    """8 Docker kernels at once: all start, run, stop; no container is left."""
    from docker.errors import NotFound

    before = containers_of_this_process(docker_client)
    finder = KernelFinder(Config(providers={"docker": {}}))
    ids: list[str] = []

    def inspect(launchers: list[KernelLauncher]) -> None:
        ids.extend(launcher.container.id for launcher in launchers)  # type: ignore[attr-defined]

    try:
        batch = asyncio.run(run_batch(finder, f"docker/{IMAGE}", 8, inspect))
        batch.report("8 Docker kernels")
        batch.assert_all_held(8)
        assert len(set(ids)) == 8
        left = []
        for container_id in ids:
            try:
                docker_client.containers.get(container_id)
                left.append(container_id[:12])
            except NotFound:
                continue
        assert not left, f"containers left after shutdown: {left}"
        assert containers_of_this_process(docker_client) <= before, "a container is left"
        assert not leftover_files(isolated), leftover_files(isolated)
    finally:  # one failure must not leave the engine full of kernels
        for container_id in (containers_of_this_process(docker_client) - before) | set(ids):
            try:
                docker_client.containers.get(container_id).remove(force=True)
            except NotFound:
                continue


# --- SSH kernels -----------------------------------------------------------------------


def remote_existing(server: SSHD | LocalSSHD, paths: list[str]) -> list[str]:
    """Those of ``paths`` that exist on ``server``'s host."""
    script = "import os, sys\nfor p in sys.argv[1:]:\n if os.path.lexists(p):\n  print(p)"
    return server.exec("python3", "-c", script, *paths).split()


@pytest.mark.timeout(600)
def test_4_concurrent_ssh_kernels(isolated: Path, sshd: SSHD | LocalSSHD) -> None:
    """4 SSH kernels at once (sharing the host's connection): all start, run, stop; no
    kernel, connection file or folder is left on the host, no forward here."""
    finder = KernelFinder(Config(providers={"ssh": {
        "hosts": ["testbox"], "python": sshd.python, "ssh_config": str(sshd.ssh_config),
        "known_hosts": str(sshd.known_hosts), "connect_timeout": 60}}))
    pids: list[int] = []
    files: list[str] = []

    def inspect(launchers: list[KernelLauncher]) -> None:
        pids.extend(launcher.remote_pid for launcher in launchers)  # type: ignore[attr-defined]
        files.extend(launcher.remote_file for launcher in launchers)  # type: ignore[attr-defined]
        assert len(sshd.alive(*pids)) == len(launchers)

    batch = asyncio.run(run_batch(finder, "ssh/testbox/python3", 4, inspect))
    batch.report("4 SSH kernels")
    batch.assert_all_held(4)
    assert not sshd.alive(*pids), "kernels alive on the SSH host after shutdown"
    folders = [os.path.dirname(f) for f in files]
    assert not remote_existing(sshd, files + folders), "connection files left on the host"
    pool = finder.providers["ssh"].pool  # type: ignore[attr-defined]
    assert pool.users("testbox") == 0
    listening = [p for p in batch.ports if port_listening(p)]
    assert not listening, f"local forwards still listening: {listening}"
    assert not leftover_files(isolated), leftover_files(isolated)


# --- through jupyter_server and the bridge ---------------------------------------------


class Server:
    """A real ``jupyter server`` on loopback (the bridge enabled in its config dir),
    driven over REST and websockets."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "server", "--no-browser", "--ip=127.0.0.1",
             f"--port={self.port}", f"--ServerApp.root_dir={root}",
             f"--IdentityProvider.token={self.token}",
             *(["--allow-root"] if os.getuid() == 0 else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
        self._http: Any = None

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One REST call; its JSON answer (an AssertionError for an HTTP error)."""
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        if self._http is None:  # more than tornado's default of 10 requests at a time
            self._http = AsyncHTTPClient(force_instance=True, max_clients=64)
        response = await self._http.fetch(HTTPRequest(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"},
            body=None if body is None and method in ("GET", "DELETE") else json.dumps(body or {}),
            request_timeout=SLOW_OK), raise_error=False)
        if response.code >= 400:
            raise AssertionError(f"{method} {path}: {response.code} {response.body[:800]!r}")
        return json.loads(response.body) if response.body else None

    async def ready(self) -> None:
        """Wait until the server answers."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                await self.request("GET", "/api/status")
                return
            except Exception:
                if self.process.poll() is not None:
                    raise AssertionError(self.stderr()[-3000:]) from None
                await asyncio.sleep(0.1)
        raise AssertionError("jupyter server did not start")

    async def execute(self, kernel_id: str, code: str) -> str:
        """Run ``code`` over the kernel's websocket; its stdout (an AssertionError for an
        error reply or no idle status in time)."""
        from tornado.websocket import websocket_connect

        ws = await websocket_connect(f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}"
                                     f"/channels?token={self.token}")
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "t",
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False}}))
        out: list[str] = []
        deadline = time.monotonic() + SLOW_OK
        try:
            while True:
                raw = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
                if raw is None:
                    raise AssertionError(f"kernel {kernel_id}: websocket closed")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    raise AssertionError(f"kernel {kernel_id}: {content['ename']}:"
                                         f" {content['evalue']}")
                elif kind == "status" and content["execution_state"] == "idle":
                    return "".join(out)
        finally:
            ws.close()

    def kernel_descendants(self) -> list[str]:
        """Kernel processes below the server."""
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if child.status() != psutil.STATUS_ZOMBIE \
                        and "ipykernel" in " ".join(child.cmdline()):
                    found.append(f"{child.pid}: {' '.join(child.cmdline())}")
            except psutil.NoSuchProcess:
                continue
        return found

    def stderr(self) -> str:
        """What the server wrote (once it has ended)."""
        assert self.process.stderr is not None
        return self.process.stderr.read().decode("utf-8", "replace")

    def stop(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL); what it wrote on stderr."""
        if self._http is not None:
            self._http.close()
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        err = self.stderr()
        if self.process.stderr is not None:
            self.process.stderr.close()
        return err


@pytest.fixture
def bridged(isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Private Jupyter dirs with the bridge enabled; a kernelspec only kernel-providers
    sees (a server that starts it uses the bridge). Returns its Jupyter kernel name."""
    kernels = tmp_path / "hidden-kernels"
    write_kernelspec(kernels, SPEC_NAME, LOAD_SPEC)
    Path(os.environ["KERNEL_PROVIDERS_CONFIG"]).write_text(
        f"[providers.spec]\nextra_dirs = [{json.dumps(str(kernels))}]\n")
    (tmp_path / "jupyter-config").mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter-data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter-config"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user-data"))
    monkeypatch.setenv("KERNEL_PROVIDERS_DISABLE", "conda,venv,example,ssh,docker")
    from kernel_providers.cli import main
    from kernel_providers_jupyter import jupyter_name

    assert main(["jupyter", "enable"]) == 0
    return str(jupyter_name(f"spec/{SPEC_NAME}"))


@pytest.mark.timeout(600)
def test_20_concurrent_kernels_through_jupyter_server(bridged: str, isolated: Path,
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """20 kernels started at once through jupyter_server and the bridge, a cell run in
    each, all deleted: zero failures, distinct ports, nothing left."""
    capsys.readouterr()  # `jupyter enable`'s own messages
    server = Server(tmp_path)
    failures: list[str] = []
    seconds: dict[str, float] = {}

    async def scenario() -> tuple[list[int], list[int]]:
        await server.ready()
        start = time.monotonic()
        started = await gather_all([server.request("POST", "/api/kernels", {"name": bridged})
                                    for _ in range(20)], failures, "start")
        seconds["start"] = time.monotonic() - start
        kids = [k["id"] for k in started if k is not None]
        try:
            start = time.monotonic()
            outs = await gather_all(
                [server.execute(kid, f"import os; print({i}); print(os.getpid())")
                 for i, kid in enumerate(kids)], failures, "execute")
            seconds["execute"] = time.monotonic() - start
            pids = []
            for i, out in enumerate(outs):
                if out is not None:
                    number, pid = out.split()
                    if number != str(i):
                        failures.append(f"kernel #{i} printed {out!r}")
                    pids.append(int(pid))
            ports = [int(json.loads((isolated / f"kernel-{kid}.json").read_text())[p])
                     for kid in kids for p in PORT_NAMES]
        finally:
            start = time.monotonic()
            await gather_all([server.request("DELETE", f"/api/kernels/{kid}")
                              for kid in kids], failures, "delete")
            seconds["delete"] = time.monotonic() - start
        assert await server.request("GET", "/api/kernels") == [], "kernels still listed"
        return pids, ports

    try:
        pids, ports = asyncio.run(scenario())
        print("20 kernels through jupyter_server: "
              + ", ".join(f"{name} {took:.1f} s" for name, took in seconds.items()))
        assert not failures, "\n".join(failures)
        assert len(pids) == 20 and len(set(pids)) == 20
        taken = sorted({p for p in ports if ports.count(p) > 1})
        assert not taken and len(ports) == 100, f"ports given to two kernels: {taken}"
        alive = [pid for pid in pids if process_alive(pid)]
        assert not alive, f"kernel processes alive after DELETE: {alive}"
        assert not server.kernel_descendants(), server.kernel_descendants()
        # (the bridge keeps its generated kernelspecs in a folder there: not a leftover)
        left = sorted(p.name for p in isolated.glob("kernel-*.json"))
        assert not left, f"connection files left in the runtime dir: {left}"
    finally:
        err = server.stop()
    assert "Traceback" not in err, f"the server logged a traceback:\n{err[-4000:]}"
