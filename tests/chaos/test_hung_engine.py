"""Chaos: a hung Docker engine — a socket that accepts connections and never answers, or
answers only the handshake (/_ping, /version) and nothing after — costs a listing no more
than ``discovery_timeout``, fails ``cleanup`` within the engine's own bound, and never
starves the other providers: a long-running process that refreshes again and again keeps
listing and launching local kernels, with at most one thread waiting on the engine. The
finder holds to that last promise even for a provider that blocks without any timeout:
it does not ask a provider again while its earlier call still runs.

The engine is a fake (a unix socket served by a thread of this test); the machine's real
Docker engine is never asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kernel_providers import (
    Config,
    KernelFinder,
    KernelProvider,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    hookimpl,
)

DISCOVERY_TIMEOUT = 2.0
#: providers not under test (entry-point names and ids): docker and spec remain
OTHERS = "conda,venv,ssh,example"
SCRIPT = Path(sys.executable).with_name("kernel-providers")
IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
#: a hung command gives up within a bound; this is how long the test lets it run at all
COMMAND_LIMIT = 40.0
#: how long the engine may take to answer (docs/providers/docker.md, "Problems"): the
#: handshake 5 s, a query 10 s; `cleanup` has no discovery_timeout to shorten them
HANDSHAKE_TIMEOUT, QUERY_TIMEOUT = 5.0, 10.0
MARGIN = 6.0  # interpreter start, imports, a loaded CI machine

#: silent: accepts and never answers; ping: answers /_ping only (the SDK asks /version
#: first, so this hangs in the handshake too); handshake: answers /_ping and /version,
#: hangs on everything after (the listing of images, of containers)
MODES = ["silent", "ping", "handshake"]


# --- the fake engine ---------------------------------------------------------------------


class HungEngine:
    """A unix socket that accepts connections and answers as ``mode`` says; a request it
    does not answer is held open, unanswered, until the client gives up (or close())."""

    ANSWERS = {"ping": {b"/_ping": b"OK"},
               "handshake": {b"/_ping": b"OK",
                             b"/version": b'{"ApiVersion": "1.41", "Version": "24.0.0"}'}}

    def __init__(self, path: Path, mode: str) -> None:
        self.path, self.answers = path, self.ANSWERS.get(mode, {})
        self.url = f"unix://{path}"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(128)
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._waiting = 0  # clients waiting for an answer that never comes
        self.hung_requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True, name="hung-engine").start()

    @property
    def waiting(self) -> int:
        """How many clients are blocked on this engine right now."""
        with self._lock:
            return self._waiting

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            with self._lock:
                self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                line = head.split(b"\r\n")[0]
                path = line.split(b" ")[1].split(b"?")[0] if b" " in line else b""
                body = next((b for end, b in self.answers.items() if path.endswith(end)),
                            None)
                if body is None:
                    self._hang(conn, line)
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type:"
                             b" text/plain\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
        except OSError:
            return
        finally:
            conn.close()

    def _hang(self, conn: socket.socket, line: bytes) -> None:
        # Hold the request unanswered until the client closes its end (it gave up).
        with self._lock:
            self._waiting += 1
            self.hung_requests.append(line)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        finally:
            with self._lock:
                self._waiting -= 1

    def close(self) -> None:
        """Stop accepting and drop every connection: whoever still waits is released."""
        self._server.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.path.unlink(missing_ok=True)


def hung_engine(mode: str) -> Iterator[HungEngine]:
    # Not under tmp_path: a unix socket's path is limited to ~107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="kp-hung-"))
    hung = HungEngine(folder / "docker.sock", mode)
    try:
        yield hung
    finally:
        hung.close()
        _forget_client(hung.url)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=MODES)
def engine(request: pytest.FixtureRequest) -> Iterator[HungEngine]:
    yield from hung_engine(request.param)


@pytest.fixture
def silent_engine() -> Iterator[HungEngine]:
    yield from hung_engine("silent")


def _forget_client(url: str) -> None:
    """Close the engine client this process cached for ``url`` (in-process tests)."""
    engine_module = sys.modules.get("kernel_providers_docker.engine")
    if engine_module is not None:
        client = engine_module._clients.pop(url, None)
        if client is not None:
            client.close()


@pytest.fixture
def env(tmp_path: Path, engine: HungEngine) -> dict[str, str]:
    """The command's environment: the hung engine as DOCKER_HOST, discovery_timeout = 2,
    one kernelspec (hung-py) on a private Jupyter path, private runtime and cache dirs."""
    kernels = tmp_path / "jupyter" / "kernels" / "hung-py"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps(
        {"argv": IPYKERNEL, "display_name": "Hung test Python", "language": "python"}))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    runtime.chmod(0o700)
    config = tmp_path / "kernel_providers.toml"
    config.write_text(f"discovery_timeout = {DISCOVERY_TIMEOUT}\n")
    values = {k: v for k, v in os.environ.items()
              if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH",
                           "KERNEL_PROVIDERS_NO_AUTOLOAD", "KERNEL_PROVIDERS_TRACE",
                           "PYTHONWARNINGS")}
    values.update({
        "DOCKER_HOST": engine.url, "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "KERNEL_PROVIDERS_CONFIG": str(config), "KERNEL_PROVIDERS_DISABLE": OTHERS,
        "JUPYTER_PATH": str(tmp_path / "jupyter"), "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"), "IPYTHONDIR": str(tmp_path / "ipython"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    })
    return values


def run(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the installed command; its result and how long it took. One that is still
    running after COMMAND_LIMIT fails the test (it would have hung)."""
    command = [str(SCRIPT) if SCRIPT.exists() else shutil.which("kernel-providers")
               or "kernel-providers", *args]
    started = time.monotonic()
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True,
                                timeout=COMMAND_LIMIT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`kernel-providers {' '.join(args)}` still ran after"
                    f" {COMMAND_LIMIT:g} s on a hung engine")
    return result, time.monotonic() - started


# --- the command -------------------------------------------------------------------------


def test_list_returns_within_discovery_timeout(engine: HungEngine,
                                               env: dict[str, str]) -> None:
    result, took = run(["list", "--refresh"], env)
    assert result.returncode == 0, result.stderr
    assert "spec/hung-py" in result.stdout, (result.stdout, result.stderr)
    # docker's problem: which engine, what happened, what to do
    problem = next((line for line in result.stderr.splitlines()
                    if "provider 'docker' failed" in line), "")
    assert engine.url in problem, result.stderr
    assert "did not answer" in problem and "KERNEL_PROVIDERS_DISABLE=docker" in problem
    bound = DISCOVERY_TIMEOUT + MARGIN
    assert took < bound, f"list took {took:.1f} s with discovery_timeout = 2 ({result.stderr})"


def test_cleanup_fails_within_the_engines_bound(engine: HungEngine,
                                                env: dict[str, str]) -> None:
    result, took = run(["cleanup"], env)
    assert result.returncode == 3, (result.returncode, result.stderr)  # docs/cli.md
    assert "error: provider 'docker' could not clean up" in result.stderr, result.stderr
    assert engine.url in result.stderr and "did not answer" in result.stderr, result.stderr
    # a silent engine fails the handshake; one that answers it, the listing of containers
    answered_handshake = any(b"/containers/" in line for line in engine.hung_requests)
    bound = (QUERY_TIMEOUT if answered_handshake else HANDSHAKE_TIMEOUT) + MARGIN
    assert took < bound, f"cleanup took {took:.1f} s ({result.stderr})"


# --- a long-running process --------------------------------------------------------------


def _threads_in_docker_code() -> int:
    """Threads of this process now running the docker provider's code (blocked in the
    engine's socket, or queued behind another that is)."""
    frames = sys._current_frames()
    count = 0
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        while frame is not None:
            if "kernel_providers_docker" in frame.f_code.co_filename:
                count += 1
                break
            frame = frame.f_back
    return count


def test_refreshes_never_starve_the_other_providers(
        engine: HungEngine, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(key, raising=False)
    for key in ("DOCKER_HOST", "DOCKER_CONFIG", "KERNEL_PROVIDERS_CONFIG",
                "KERNEL_PROVIDERS_DISABLE", "JUPYTER_PATH", "JUPYTER_RUNTIME_DIR",
                "JUPYTER_DATA_DIR", "IPYTHONDIR", "XDG_CACHE_HOME"):
        monkeypatch.setenv(key, env[key])
    Path(env["KERNEL_PROVIDERS_CONFIG"]).write_text("discovery_timeout = 1\n")
    finder = KernelFinder()
    assert {"docker", "spec"} <= set(finder.providers), finder.providers
    stuck: list[int] = []

    async def scenario() -> None:
        try:
            for _ in range(10):
                kernels = await finder.find_kernels(refresh=True)
                reports = {r.id: r for r in finder.reports}
                assert "spec/hung-py" in [k.id for k in kernels], reports["spec"]
                assert reports["spec"].status == "ok", reports["spec"]
                assert reports["docker"].status == "error"
                stuck.append(max(_threads_in_docker_code(), engine.waiting))
            assert engine.url in reports["docker"].message, reports["docker"]
            launcher = await finder.launch("spec/hung-py")
            try:
                reply = await launcher.execute("print(6 * 7)", timeout=30)
                assert reply["content"]["status"] == "ok"
            finally:
                await launcher.shutdown()
        finally:
            engine.close()  # whatever still waits on it is released

    asyncio.run(scenario())
    # At most one discovery per provider waits on the engine at a time, never one more
    # per refresh.
    assert max(stuck) <= 1, f"threads waiting on the hung engine after each refresh: {stuck}"


class Blocking(KernelProvider[None]):
    """Asks the engine in a thread with no timeout at all: the finder's own guarantee,
    for providers that do not bound their blocking calls by discovery_time_left()."""

    id: ClassVar[str] = "blocking"

    def __init__(self, engine: HungEngine) -> None:
        self.engine = engine

    def _ask(self) -> list[KernelType]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(self.engine.path))
            sock.sendall(b"GET /info HTTP/1.1\r\nHost: docker\r\n\r\n")
            sock.recv(1)  # blocks until the engine answers or goes
        return []

    async def find_kernels(self) -> list[KernelType]:
        return await asyncio.to_thread(self._ask)

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> Any:
        raise LaunchFailed("this test provider only lists")


class Local(Blocking):
    """A provider whose discovery needs a worker of the shared pool for a moment."""

    id: ClassVar[str] = "local"

    def _ask(self) -> list[KernelType]:
        return [KernelType(id="local/k", display_name="k", language="python",
                           provider=self.id)]


class Providers:
    def __init__(self, *providers: KernelProvider[None]) -> None:
        self.providers = providers

    @hookimpl
    def register_kernel_providers(self) -> Any:
        return self.providers


def test_a_provider_blocked_without_timeout_holds_one_thread(
        silent_engine: HungEngine) -> None:
    finder = KernelFinder(Config(discovery_timeout=0.3), autoload=False, plugins=[
        Providers(Blocking(silent_engine), Local(silent_engine))])
    waiting: list[int] = []

    async def scenario() -> None:
        try:
            for _ in range(10):
                kernels = await finder.find_kernels(refresh=True)
                assert [k.id for k in kernels] == ["local/k"], finder.reports
                waiting.append(silent_engine.waiting)
            reports = {r.id: r for r in finder.reports}
            assert "no answer within 0.3 s" in reports["blocking"].message
            assert "still waiting for the discovery started" in reports["blocking"].message
        finally:
            silent_engine.close()

    asyncio.run(scenario())
    assert max(waiting) <= 1, f"threads waiting on the hung engine after each refresh: {waiting}"
