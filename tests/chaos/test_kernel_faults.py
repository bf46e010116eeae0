"""Chaos suite, kernel faults: kernels that die, never answer or talk garbage, for a
local kernel (the kernelspec provider, on kernelspecs written here), a Docker kernel
(images configured in ``[providers.docker]``) and an SSH kernel (kernelspecs written on
the host), each started through the public API (``KernelFinder(Config(providers=...))``).

- ``kill -9`` of the running kernel process itself (not its container or supervisor):
  ``wait()`` returns promptly (the time is printed) with -9, ``poll()`` agrees, and
  after ``cleanup()`` no process, container or connection file is left;
- a kernel that exits while starting (prints ``bye``, exits 4): the launch fails with
  KernelDied/LaunchFailed naming the kernel, its output quoted, well before the ready
  timeout;
- a kernel that never answers (sleeps, its connection file ignored) with
  ``ready_timeout=3``: ReadyTimeout naming the kernel and the timeout, in about 3 s;
- a kernel that listens on its ports and sends random bytes to whoever connects (plain
  TCP; once as they come, once after a valid ZMTP signature, which gets past a probe
  of the greeting's first bytes into ZeroMQ's own handshake): the launch fails with a
  kernel-providers error naming the kernel within the ready timeout and a margin,
  never hangs, never escapes as another exception.

After each: no process of these kernels (found by a marker on their command line,
here or on the SSH host), no container of this process's launches, no connection file
here or on the host. The engine and the SSH server are this module's own (a container of
the test image; with ``KP_TEST_SSHD=local`` an sshd on 127.0.0.1): it looks only at
containers this process launched (by their launcher label) and at processes carrying
its marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from kernel_providers import (
    Config,
    KernelDied,
    KernelFinder,
    KernelLauncher,
    KernelProviderError,
    LaunchFailed,
    LaunchOptions,
    ReadyTimeout,
)
from kernel_providers.ownership import process_stamp
from kernel_providers.sdk import PORT_NAMES
from kernel_providers.testing import port_listening, process_alive, write_kernelspec
from kernel_providers_ssh.testing import (
    SSHD,
    LocalSSHD,
    sshd_for_tests,
)

IMAGE = os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
# On the command line of every faulty kernel of this run: how their processes are found.
MARKER = f"kp-faults-{uuid.uuid4().hex[:12]}"
READY = 3.0  # the ready timeout of the faulty kernels
HANG = 30.0  # a failing launch that takes longer than this hangs
MARGIN = 10.0  # beyond the ready timeout: a container to start, an SSH login, cleanup
LAUNCHER_LABEL = "io.kernel-providers.launcher"  # the launching process's stamp
LOCAL_IPYKERNEL = "kp-faults-ipykernel"

EXITS = "import sys; print('bye'); sys.exit(4)"
SLEEPS = "import time; time.sleep(600)"
# argv: the connection file, then "random" or "zmtp". Listens on the file's five ports
# (binding new ones, and writing them back, where the file says 0: the SSH provider
# lets the kernel pick) and sends random bytes to every connection until it closes;
# "random" never opens with 0xff (a ZMTP 3 signature's first byte: ZeroMQ takes the
# bytes for ZMTP 1.0 frames), "zmtp" opens with a valid ZMTP 3 signature (ZeroMQ's
# handshake then fails on what follows).
GARBAGE = r"""
import json, os, socket, sys, threading, time
path, mode = sys.argv[1], sys.argv[2]
with open(path) as f:
    info = json.load(f)
names = ["shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"]
listeners, chosen = [], False
for name in names:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((info.get("ip") or "127.0.0.1", int(info.get(name) or 0)))
    s.listen(64)
    chosen = chosen or not info.get(name)
    info[name] = s.getsockname()[1]
    listeners.append(s)
if chosen:
    with open(path, "w") as f:
        json.dump(info, f)
def serve(conn):
    try:
        first = os.urandom(512)
        if mode == "zmtp":
            conn.sendall(b"\xff" + b"\x00" * 8 + b"\x7f")
        else:
            conn.sendall(bytes([first[0] % 255]) + first[1:])
        for _ in range(3000):
            conn.sendall(os.urandom(512))
            time.sleep(0.02)
    except OSError:
        pass
    finally:
        conn.close()
def accept(s):
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
for s in listeners[1:]:
    threading.Thread(target=accept, args=(s,), daemon=True).start()
print("garbage on", [info[n] for n in names], flush=True)
accept(listeners[0])
"""

FAULTS: dict[str, list[str]] = {
    "exits": [EXITS, "{connection_file}"],
    "sleeps": [SLEEPS, "{connection_file}"],
    "garbage": [GARBAGE, "{connection_file}", "random"],
    "zmtp-garbage": [GARBAGE, "{connection_file}", "zmtp"],
}


def fault_argv(fault: str) -> list[str]:
    """The faulty kernel's argv (python3 of where it runs), the marker last."""
    return ["python3", "-c", *FAULTS[fault], MARKER]


def fault_specs() -> dict[str, dict[str, Any]]:
    """kernel.json of each faulty kernel, by kernelspec name."""
    return {f"kp-faults-{fault}": {"argv": fault_argv(fault), "display_name": f"KP {fault}",
                                   "language": "python"} for fault in FAULTS}


def write_specs(root: Path, specs: dict[str, dict[str, Any]]) -> Path:
    for name, spec in specs.items():
        write_kernelspec(root, name, spec)
    return root


# Run on the SSH host (the container): writes argv[2] (JSON: name -> kernel.json) under
# argv[1].
_WRITE_SPECS = r"""
import json, os, sys
for name, spec in json.loads(sys.argv[2]).items():
    os.makedirs(os.path.join(sys.argv[1], name), exist_ok=True)
    with open(os.path.join(sys.argv[1], name, 'kernel.json'), 'w') as f:
        json.dump(spec, f)
"""

# Run on a host: the pids (not zombies) whose command line holds argv[1] reversed (so
# that this script's own command line does not hold it).
_MARKED = r"""
import os, sys
marker = sys.argv[1][::-1].encode()
for p in filter(str.isdigit, os.listdir('/proc')):
    if int(p) == os.getpid():
        continue
    try:
        cmdline = open('/proc/%s/cmdline' % p, 'rb').read()
        state = open('/proc/%s/stat' % p).read().rpartition(')')[2].split()[0]
    except OSError:
        continue
    if marker in cmdline and state != 'Z':
        print(p)
"""

# Run in a container: the pids of the ipykernel processes (not docker-init, whose
# command line holds the kernel's).
_IPYKERNELS = r"""
import os
for p in filter(str.isdigit, os.listdir('/proc')):
    try:
        argv = open('/proc/%s/cmdline' % p, 'rb').read().split(b'\0')
    except OSError:
        continue
    if os.path.basename(argv[0]).startswith(b'python') and b'ipykernel_launcher' in argv:
        print(p)
"""

_KILL = "import os, sys; os.kill(int(sys.argv[1]), 9)"

# Run on a host: the entries of folder argv[1] (none if it does not exist).
_ENTRIES = ("import os, sys\nif os.path.isdir(sys.argv[1]):\n"
            " print('\\n'.join(os.listdir(sys.argv[1])))")


# --- the three kinds of kernel ---------------------------------------------------------


class Target:
    """One kind of kernel under test: its finder, the ids of its healthy and faulty
    kernels, how to SIGKILL its kernel process, and what it may leave behind."""

    kind = ""
    ipykernel_id = ""

    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime  # this machine's (the test's own) runtime dir

    def finder(self) -> KernelFinder:
        raise NotImplementedError

    def kernel_id(self, fault: str) -> str:
        raise NotImplementedError

    async def kill_kernel(self, launcher: KernelLauncher) -> None:
        """SIGKILL to the kernel process itself, where it runs; returns once sent."""
        raise NotImplementedError

    def launcher_leftovers(self, launcher: KernelLauncher) -> list[str]:
        """What of ``launcher``'s kernel is still there (after its cleanup)."""
        file = launcher.connection_file
        return [f"connection file {file}"] if os.path.exists(file) else []

    def leftovers(self) -> list[str]:
        """Anything of this test's kernels left: their processes, containers, files."""
        left = [f"{self.runtime.name}/{p.name}" for p in self.runtime.iterdir()]
        return left + [f"process {p}: {c}" for p, c in local_marked().items()]

    def purge(self) -> None:
        """End what a failed test left: the marked processes here (this test's kernels,
        and with a local sshd its remote ones); a subclass removes its containers."""
        for pid in local_marked():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def local_marked() -> dict[int, str]:
    """This machine's processes (not zombies) with the marker on their command line."""
    found = {}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            cmdline = proc.cmdline()
            if any(MARKER in part for part in cmdline) \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = " ".join(cmdline)[-120:]
    return found


class LocalTarget(Target):
    kind = "local"
    ipykernel_id = f"spec/{LOCAL_IPYKERNEL}"

    def __init__(self, runtime: Path, kernels: Path) -> None:
        super().__init__(runtime)
        specs = fault_specs()
        specs[LOCAL_IPYKERNEL] = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "KP faults ipykernel", "language": "python"}
        self.kernels = write_specs(kernels, specs)

    def finder(self) -> KernelFinder:
        return KernelFinder(Config(providers={"spec": {"extra_dirs": [str(self.kernels)]}}))

    def kernel_id(self, fault: str) -> str:
        return f"spec/kp-faults-{fault}"

    async def kill_kernel(self, launcher: KernelLauncher) -> None:
        os.kill(launcher.pid, signal.SIGKILL)  # type: ignore[attr-defined]

    def launcher_leftovers(self, launcher: KernelLauncher) -> list[str]:
        pid: int = launcher.pid  # type: ignore[attr-defined]
        alive = [f"kernel process {pid}"] if process_alive(pid) else []
        return alive + super().launcher_leftovers(launcher)


class DockerTarget(Target):
    kind = "docker"
    ipykernel_id = f"docker/{IMAGE}"  # the test image's label: ipykernel

    def __init__(self, runtime: Path, client: Any) -> None:
        super().__init__(runtime)
        self.client = client
        self.before = self.containers()

    def containers(self) -> set[str]:
        """Containers launched by this very process (found by its launcher label even
        when a failed launch never told us their id); no one else's."""
        return {c.id for c in self.client.containers.list(
            all=True, filters={"label": f"{LAUNCHER_LABEL}={process_stamp()}"})}

    def finder(self) -> KernelFinder:
        images = [{"image": IMAGE, "name": f"kp-faults-{fault}", "argv": fault_argv(fault)}
                  for fault in FAULTS]
        return KernelFinder(Config(providers={"docker": {"images": images}}))

    def kernel_id(self, fault: str) -> str:
        return f"docker/kp-faults-{fault}"

    async def kill_kernel(self, launcher: KernelLauncher) -> None:
        container = launcher.container  # type: ignore[attr-defined]
        found = await asyncio.to_thread(container.exec_run, ["python3", "-c", _IPYKERNELS])
        pids = found.output.decode().split()
        assert len(pids) == 1, f"ipykernel processes in the container: {pids}"
        killed = await asyncio.to_thread(container.exec_run,
                                         ["python3", "-c", _KILL, pids[0]])
        # 137: the exec itself was SIGKILLed, as the container stopped once its kernel
        # (docker-init's only child) died
        assert killed.exit_code in (0, 137), (killed.exit_code, killed.output)

    def launcher_leftovers(self, launcher: KernelLauncher) -> list[str]:
        from docker.errors import NotFound

        container_id = launcher.container.id  # type: ignore[attr-defined]
        try:
            self.client.containers.get(container_id)
        except NotFound:
            return super().launcher_leftovers(launcher)
        return [f"container {container_id[:12]}", *super().launcher_leftovers(launcher)]

    def leftovers(self) -> list[str]:
        made = self.containers() - self.before
        return super().leftovers() + [f"container {c[:12]}" for c in sorted(made)]

    def purge(self) -> None:
        from docker.errors import NotFound

        super().purge()
        for container_id in self.containers() - self.before:
            with contextlib.suppress(NotFound):
                self.client.containers.get(container_id).remove(force=True)


class SSHTarget(Target):
    kind = "ssh"
    ipykernel_id = "ssh/testbox/python3"

    def __init__(self, runtime: Path, server: SSHD | LocalSSHD, remote_runtime: str) -> None:
        super().__init__(runtime)
        self.server, self.remote_runtime = server, remote_runtime

    def finder(self) -> KernelFinder:
        server = self.server
        return KernelFinder(Config(providers={"ssh": {
            "hosts": ["testbox"], "python": server.python,
            "ssh_config": str(server.ssh_config), "known_hosts": str(server.known_hosts),
            "connect_timeout": 20, "runtime_dir": self.remote_runtime}}))

    def kernel_id(self, fault: str) -> str:
        return f"ssh/testbox/kp-faults-{fault}"

    async def kill_kernel(self, launcher: KernelLauncher) -> None:
        pid: int = launcher.remote_pid  # type: ignore[attr-defined]
        await asyncio.to_thread(self.server.exec, "python3", "-c", _KILL, str(pid))

    def launcher_leftovers(self, launcher: KernelLauncher) -> list[str]:
        pid: int = launcher.remote_pid  # type: ignore[attr-defined]
        file: str = launcher.remote_file  # type: ignore[attr-defined]
        left = super().launcher_leftovers(launcher)
        if str(pid) in self.remote_marked_or(pid):
            left.append(f"kernel process {pid} on the host")
        folder = os.path.dirname(file)
        if os.path.basename(folder) in self.remote_entries():
            left.append(f"{folder} on the host")
        users = launcher.pool.users("testbox")  # type: ignore[attr-defined]
        if users:
            left.append(f"{users} users of the SSH connection")
        ports = [int(launcher.connection_info[p]) for p in PORT_NAMES]  # type: ignore[literal-required]
        left += [f"local forward {p} listening" for p in ports if port_listening(p)]
        return left

    def remote_marked_or(self, pid: int | None = None) -> list[str]:
        """The pids on the host with the marker, plus ``pid`` if it runs."""
        script = _MARKED
        if pid is not None:
            script += (f"\ntry:\n os.kill({pid}, 0)\nexcept OSError:\n pass\nelse:\n"
                       f" if open('/proc/{pid}/stat').read().rpartition(')')[2].split()[0]"
                       f" != 'Z':\n  print({pid})")
        return self.server.exec("python3", "-c", script, MARKER[::-1]).split()

    def remote_entries(self) -> list[str]:
        return self.server.exec("python3", "-c", _ENTRIES, self.remote_runtime).split()

    def purge(self) -> None:
        super().purge()
        for pid in self.remote_marked_or():
            self.server.exec("python3", "-c", _KILL, pid)

    def leftovers(self) -> list[str]:
        remote = [f"process {p} on the host" for p in self.remote_marked_or()]
        files = [f"{self.remote_runtime}/{e} on the host" for e in self.remote_entries()]
        return super().leftovers() + remote + files


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SSHD | LocalSSHD, str]]:
    """This module's own sshd (a container of the test image, or with KP_TEST_SSHD=local
    or no engine an sshd on 127.0.0.1) with the faulty kernelspecs installed on its host;
    and a runtime dir there for this module alone."""
    folder = tmp_path_factory.mktemp("ssh-faults")
    specs = fault_specs()
    with sshd_for_tests(folder, IMAGE) as server:
        if isinstance(server, LocalSSHD):
            # The local sshd's sessions have JUPYTER_PATH=<folder>/jupyter.
            write_specs(folder / "jupyter" / "kernels", specs)
            yield server, str(folder / "remote-runtime")
        else:
            server.exec("python3", "-c", _WRITE_SPECS, "/usr/local/share/jupyter/kernels",
                        json.dumps(specs))
            yield server, f"/tmp/{MARKER}-runtime"


@pytest.fixture(params=["local", "docker", "ssh"])
def target(request: pytest.FixtureRequest, kp_isolated: Path, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    """Each kind of kernel in turn; afterwards, whatever a failed test left is removed."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    made: Target
    if request.param == "local":
        made = LocalTarget(kp_isolated, tmp_path / "kernels")
    elif request.param == "docker":
        made = DockerTarget(kp_isolated, request.getfixturevalue("docker_client"))
    else:
        server, remote_runtime = request.getfixturevalue("sshd")
        made = SSHTarget(kp_isolated, server, remote_runtime)
    try:
        yield made
    finally:
        made.purge()


def settled(check: Callable[[], list[str]], seconds: float = 15) -> list[str]:
    """``check()`` once it is empty, or its last answer after ``seconds`` (what ends as a
    kernel's launch fails may take a moment: a remote supervisor's SIGTERM, then SIGKILL
    3 s later)."""
    deadline = time.monotonic() + seconds
    while (left := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


# --- the tests ------------------------------------------------------------------------


def test_kill_9_of_the_kernel_process(target: Target) -> None:
    """SIGKILL to the running kernel process itself: ``wait()`` returns -9 promptly (the
    time from the kill to its return is printed; over 5 s counts as a hang), ``poll()``
    agrees; after ``cleanup()`` nothing is left."""
    async def scenario() -> tuple[KernelLauncher, int | None, int | None, float]:
        launcher = await target.finder().launch(target.ipykernel_id)
        try:
            assert launcher.poll() is None
            await target.kill_kernel(launcher)
            killed = time.monotonic()
            try:
                status = await asyncio.wait_for(launcher.wait(), 5)
            except (asyncio.TimeoutError, TimeoutError):
                raise AssertionError(f"{target.kind}: wait() had not returned 5 s after"
                                     " the kernel was killed") from None
            took = time.monotonic() - killed
            return launcher, status, launcher.poll(), took
        finally:
            await asyncio.wait_for(launcher.cleanup(), 30)

    launcher, status, polled, took = asyncio.run(scenario())
    print(f"{target.kind}: wait() returned {status} {took * 1000:.0f} ms after kill -9")
    assert status == -9, f"{target.kind}: wait() returned {status}, not -9 (SIGKILL)"
    assert polled == status, f"poll() says {polled}, wait() said {status}"
    assert not settled(lambda: target.launcher_leftovers(launcher))
    assert not settled(target.leftovers)


async def failed_launch(target: Target, fault: str, options: LaunchOptions,
                        bound: float = HANG) -> tuple[KernelProviderError, float]:
    """Launch the faulty kernel, which must fail within ``bound`` seconds: its error (a
    kernel-providers one: anything else fails the test as a defect) and the seconds it
    took."""
    kernel_id = target.kernel_id(fault)
    start = time.monotonic()
    launch = asyncio.ensure_future(target.finder().launch(kernel_id, options))
    try:
        launcher = await asyncio.wait_for(asyncio.shield(launch), bound)
    except KernelProviderError as exc:
        return exc, time.monotonic() - start
    except Exception as exc:
        took = time.monotonic() - start
        if isinstance(exc, TimeoutError) and not launch.done():
            # The launch cleans up as it is cancelled: let it, then say it hung.
            launch.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(launch, 30)
            raise AssertionError(f"DEFECT: the launch of {kernel_id} hung: no error"
                                 f" {took:.0f} s after it began, with ready_timeout"
                                 f" {options.ready_timeout:g} s") from None
        raise AssertionError(
            f"DEFECT: the launch of {kernel_id} failed with {type(exc).__name__}, not a"
            f" kernel-providers error, after {took:.1f} s: {exc}") from exc
    await launcher.shutdown()
    raise AssertionError(f"{kernel_id} launched, though it is faulty: {launcher}")


def assert_nothing_left(target: Target) -> None:
    left = settled(target.leftovers)
    assert not left, f"{target.kind}: left after a failed launch: {left}"


def test_kernel_that_exits_while_starting(target: Target) -> None:
    """The kernel prints 'bye' and exits 4 at once: KernelDied (or LaunchFailed) naming
    the kernel, its output quoted, well before the (generous) ready timeout; nothing
    left."""
    error, took = asyncio.run(failed_launch(target, "exits", LaunchOptions(ready_timeout=20)))
    print(f"{target.kind}: {type(error).__name__} after {took:.2f} s"
          f" (status {getattr(error, 'status', '-')}): {error}")
    kernel_id = target.kernel_id("exits")
    assert isinstance(error, LaunchFailed) and not isinstance(error, ReadyTimeout), (
        f"{type(error).__name__}: {error}")
    assert kernel_id in str(error), f"the error does not name {kernel_id}: {error}"
    assert "bye" in error.output, f"the kernel's output is not quoted: {error.output!r}"
    if isinstance(error, KernelDied) and error.status is not None:
        assert error.status == 4, f"exit status {error.status}, not 4"
    assert took < HANG
    assert_nothing_left(target)


def test_kernel_that_never_answers(target: Target) -> None:
    """The kernel ignores its connection file and sleeps: with ready_timeout=3 the launch
    fails with ReadyTimeout naming the kernel and the timeout, in about 3 s; nothing
    left."""
    error, took = asyncio.run(failed_launch(target, "sleeps",
                                            LaunchOptions(ready_timeout=READY)))
    print(f"{target.kind}: {type(error).__name__} after {took:.2f} s: {error}")
    kernel_id = target.kernel_id("sleeps")
    assert isinstance(error, ReadyTimeout), f"{type(error).__name__}: {error}"
    assert kernel_id in str(error), f"the error does not name {kernel_id}: {error}"
    assert f"{READY:g} s" in str(error), f"the error does not name the timeout: {error}"
    assert READY - 0.5 <= took < HANG, f"failed after {took:.1f} s"
    assert_nothing_left(target)


@pytest.mark.parametrize("fault", ["garbage", "zmtp-garbage"])
def test_kernel_that_talks_garbage(target: Target, fault: str) -> None:
    """The kernel listens on its ports and sends random bytes to every connection (after
    a ZMTP signature for zmtp-garbage): with ready_timeout=3 the launch fails with a
    kernel-providers error (ReadyTimeout or LaunchFailed) naming the kernel, within the
    timeout and a margin; nothing left."""
    error, took = asyncio.run(failed_launch(target, fault, LaunchOptions(ready_timeout=READY),
                                            READY + MARGIN))
    print(f"{target.kind} {fault}: {type(error).__name__} after {took:.2f} s: {error}")
    kernel_id = target.kernel_id(fault)
    assert isinstance(error, LaunchFailed), (
        f"DEFECT: {type(error).__name__}, not ReadyTimeout/LaunchFailed: {error}")
    assert kernel_id in str(error), f"the error does not name {kernel_id}: {error}"
    assert_nothing_left(target)
