"""Chaos suite, security: what a kernel's launch exposes, for a local kernel (the
kernelspec provider, on a kernelspec written here), a Docker kernel and an SSH kernel,
each started through the public API (``KernelFinder(Config(providers=...))``).

- the connection file the launcher returns is 0600 in a 0700 folder;
- the kernel's ports are bound to loopback only: read from the sockets themselves (the
  kernel's, the machine's, the SSH forwards', the remote kernel's), not from the config;
- the HMAC key is on no command line at any moment of a kernel's life (every process
  of this machine, sampled throughout; the container's and the SSH host's processes;
  ``docker inspect``);
- the key is in no log record (every logger at DEBUG) and not in the
  ``KERNEL_PROVIDERS_TRACE=1`` output, through launch, execute, restart and shutdown;
- a Docker kernel runs without extra privileges (configured, and as the kernel sees it),
  and no other container on its Docker network reaches its ports;
- an SSH host whose key changed is refused, naming the host (and calling it a change);
  an ssh config cannot switch host key checking off (``insecure_hosts`` alone does).

The Docker engine and the SSH server are this module's own (a container of the test
image; with ``KP_TEST_SSHD=local`` an sshd on 127.0.0.1): it looks only at containers
its own launches made, by id, so other containers on the engine do not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from kernel_providers import Config, KernelFinder, KernelLauncher, KernelProviderError
from kernel_providers.sdk import PORT_NAMES
from kernel_providers.testing import run_code, write_kernelspec
from kernel_providers_ssh.testing import SSHD, LocalSSHD

IMAGE = os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
LOCAL_NAME = "kp-security"
KERNELS = {"local": f"spec/{LOCAL_NAME}", "docker": f"docker/{IMAGE}",
           "ssh": "ssh/testbox/python3"}
IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
LOOPBACK = "127.0.0.1"

# Loggers that may set a level of their own (which would hide their DEBUG records from
# a root-level capture): every one is lowered to DEBUG explicitly.
LOGGERS = ["", "kernel_providers", "kernel_providers_docker", "kernel_providers_ssh",
           "kernel_providers_kernelspec", "asyncssh", "docker", "urllib3", "asyncio",
           "traitlets"]

# Docker's default capability set: a kernel in a container holds nothing beyond it.
DOCKER_DEFAULT_CAPS = {0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31}

# Run on a host (in a container, on the SSH host): every process's command line, as
# JSON. Its own command line is this script, which holds no key.
_CMDLINES = r"""
import json, os
out = {}
for p in filter(str.isdigit, os.listdir('/proc')):
    try:
        out[p] = open('/proc/%s/cmdline' % p, 'rb').read().decode('utf-8', 'replace')
    except OSError:
        pass
print(json.dumps(out))
"""

# Run on a host: the listening TCP sockets of process argv[1] ([family, hex address,
# port] from /proc/<pid>/net/tcp{,6}, matched by the inodes of its socket fds).
_LISTENERS = r"""
import json, os, sys
pid = sys.argv[1]
inodes = set()
for fd in os.listdir('/proc/%s/fd' % pid):
    try:
        target = os.readlink('/proc/%s/fd/%s' % (pid, fd))
    except OSError:
        continue
    if target.startswith('socket:['):
        inodes.add(target[8:-1])
found = []
for table, family in (('tcp', 4), ('tcp6', 6)):
    try:
        lines = open('/proc/%s/net/%s' % (pid, table)).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        fields = line.split()
        if fields[3] == '0A' and fields[9] in inodes:
            address, port = fields[1].split(':')
            found.append([family, address, int(port, 16)])
print(json.dumps(found))
"""

# Run in a container: the effective capabilities of each of its processes.
_CAPABILITIES = r"""
import json, os
out = {}
for p in filter(str.isdigit, os.listdir('/proc')):
    try:
        for line in open('/proc/%s/status' % p):
            if line.startswith('CapEff:'):
                out[p] = int(line.split()[1], 16)
    except OSError:
        pass
print(json.dumps(out))
"""


# --- the three kinds of kernel ---------------------------------------------------------


@dataclass
class Target:
    """One kind of kernel under test: how to make a finder for it, and what it runs on
    (the engine client for Docker, the server for SSH)."""

    kind: str
    kernel_id: str
    make_finder: Callable[..., KernelFinder]
    docker: Any = None
    server: SSHD | LocalSSHD | None = None
    containers: list[str] = field(default_factory=list)

    async def launch(self, finder: KernelFinder | None = None) -> KernelLauncher:
        """Launch this kind's kernel (through ``finder``, else a new one); remember the
        container of a Docker kernel, for the leftover check."""
        launcher = await (finder or self.make_finder()).launch(self.kernel_id)
        self.record(launcher)
        return launcher

    def record(self, launcher: KernelLauncher) -> None:
        """Remember what ``launcher`` holds that must be gone after the test."""
        container = getattr(launcher, "container", None)
        if container is not None:
            self.containers.append(container.id)


def ssh_settings(server: SSHD | LocalSSHD, **table: Any) -> dict[str, Any]:
    """``[providers.ssh]`` pointing at ``server``, with ``table`` over it."""
    return {"hosts": ["testbox"], "python": server.python,
            "ssh_config": str(server.ssh_config), "known_hosts": str(server.known_hosts),
            "connect_timeout": 20, **table}


@pytest.fixture(params=list(KERNELS))
def target(request: pytest.FixtureRequest, kp_isolated: Path, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    """Each kind of kernel in turn; checks afterwards that no container of the test's
    launches is left."""
    kind: str = request.param
    # The kernels' IPython history and profile stay in the test's folder.
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    if kind == "local":
        kernels = tmp_path / "kernels"
        write_kernelspec(kernels, LOCAL_NAME, {"argv": IPYKERNEL,
                                               "display_name": "KP Security",
                                               "language": "python"})
        yield Target(kind, KERNELS[kind], lambda: KernelFinder(Config(
            providers={"spec": {"extra_dirs": [str(kernels)]}})))
        return
    if kind == "ssh":
        server: SSHD | LocalSSHD = request.getfixturevalue("sshd")
        yield Target(kind, KERNELS[kind], lambda **table: KernelFinder(Config(
            providers={"ssh": ssh_settings(server, **table)})), server=server)
        return
    client = request.getfixturevalue("docker_client")
    made = Target(kind, KERNELS[kind], lambda: KernelFinder(Config(
        providers={"docker": {}})), docker=client)
    yield made
    assert not leftover_containers(client, made.containers), "containers left behind"


def leftover_containers(client: Any, ids: list[str]) -> list[str]:
    """Those of ``ids`` that still exist (removed now, so one failure leaves nothing)."""
    from docker.errors import NotFound

    left = []
    for container_id in ids:
        try:
            client.containers.get(container_id).remove(force=True)
        except NotFound:
            continue
        left.append(container_id)
    return left


# --- reading the machine ---------------------------------------------------------------


def all_cmdlines() -> dict[int, bytes]:
    """Every process's command line on this machine (containers' processes included:
    they are this machine's processes too)."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found[int(entry.name)] = Path(entry.path, "cmdline").read_bytes()
    return found


class CmdlineRecorder:
    """Samples every command line of this machine in a thread, as often as it can, for
    as long as it runs: a process that holds the key on its command line for a moment
    (a helper during the launch) is seen too. The key is not known before the launch
    returns, so every distinct command line is kept and searched afterwards."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="cmdline-recorder")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.update(all_cmdlines().values())
            self.rounds += 1
            self._stop.wait(0.005)

    def __enter__(self) -> CmdlineRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def holding(self, secret: str) -> list[str]:
        """The recorded command lines that contain ``secret``."""
        return [c.replace(b"\0", b" ").decode("utf-8", "replace")
                for c in self.seen if secret.encode() in c]

    def saw(self, part: bytes) -> bool:
        """Whether some recorded command line contains ``part``."""
        return any(part in c for c in self.seen)


def decode_address(family: int, hex_address: str) -> str:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host order)."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, words)


def remote_listeners(server: SSHD | LocalSSHD, pid: int) -> set[tuple[str, int]]:
    """The listening TCP sockets (address, port) of process ``pid`` on ``server``'s host."""
    out = server.exec("python3", "-c", _LISTENERS, str(pid))
    return {(decode_address(f, a), p) for f, a, p in json.loads(out)}


def process_listeners(pid: int) -> set[tuple[str, int]]:
    """The listening TCP sockets of process ``pid`` of this machine and its children."""
    process = psutil.Process(pid)
    found = set()
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            found |= {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN}
    return found


def machine_listeners(ports: set[int]) -> set[tuple[str, int]]:
    """Every listening TCP socket of this machine (any process) on one of ``ports``."""
    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port in ports}


def other_addresses() -> list[str]:
    """This machine's addresses that are not loopback (where a kernel must not answer);
    IPv6 link-local ones left out (they need a scope to be reached)."""
    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            ip = address.address
            ipv4 = address.family == socket.AF_INET and not ip.startswith("127.")
            ipv6 = (address.family == socket.AF_INET6 and ip != "::1" and "%" not in ip
                    and not ip.startswith("fe80"))
            if ipv4 or ipv6:
                found.append(ip)
    return found


def answers(address: str, port: int) -> bool:
    """Whether a TCP connection to ``address``:``port`` is accepted."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex((address, port)) == 0


def client_ports(launcher: KernelLauncher) -> set[int]:
    """The five ports the client is given."""
    return {int(launcher.connection_info[p]) for p in PORT_NAMES}  # type: ignore[literal-required]


def mode(path: str | Path, remote: Callable[..., str] | None = None) -> int:
    """The permission bits of ``path`` (on a host, through its ``exec``)."""
    if remote is not None:
        return int(remote("stat", "-c", "%a", str(path)).strip(), 8) & 0o777
    return stat.S_IMODE(os.stat(path).st_mode) & 0o777


# --- the tests ------------------------------------------------------------------------


def test_connection_file_is_private(target: Target, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher's connection file is 0600 and ours, in a 0700 folder; the kernel's
    own copy in the container / on the host too; gone after shutdown. Under umask 0 and
    with a runtime dir the launch has to make itself: the modes are the launcher's own
    doing, not the test's nor the umask's."""
    fresh = tmp_path / "made-by-the-launch" / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(fresh))

    async def scenario() -> None:
        umask = os.umask(0)
        try:
            launcher = await target.launch()
        finally:
            os.umask(umask)
        try:
            file = Path(launcher.connection_file)
            assert file.parent == fresh
            assert mode(file) == 0o600, f"{file} is {mode(file):o}"
            assert mode(file.parent) == 0o700, f"{file.parent} is {mode(file.parent):o}"
            assert file.stat().st_uid == os.getuid()
            assert json.loads(file.read_text())["key"] == launcher.connection_info["key"]
            if target.kind == "docker":
                inside = "/tmp/kernel-providers-connection.json"
                container = launcher.container  # type: ignore[attr-defined]
                assert mode(inside, lambda *a: container.exec_run(list(a)).output.decode()
                            ) == 0o600
            if target.server is not None:
                remote: str = launcher.remote_file  # type: ignore[attr-defined]
                assert mode(remote, target.server.exec) == 0o600
                # 0700 (the kernel, as jupyter_client does, may add the sticky bit)
                assert mode(os.path.dirname(remote), target.server.exec) == 0o700
        finally:
            await launcher.shutdown()
        assert not file.exists()

    asyncio.run(scenario())


def test_ports_are_bound_to_loopback_only(target: Target) -> None:
    """Every socket the client's ports lead to listens on 127.0.0.1 alone, and none of
    this machine's other addresses answers on them."""
    async def scenario() -> None:
        launcher = await target.launch()
        try:
            ports = client_ports(launcher)
            assert launcher.connection_info["ip"] == LOOPBACK
            assert len(ports) == 5
            if target.kind == "local":
                listening = process_listeners(launcher.pid)  # type: ignore[attr-defined]
                assert ports <= {port for _, port in listening}, (
                    f"the kernel does not listen on all its ports {ports}: {listening}")
            elif target.kind == "docker":
                listening = check_published_on_loopback(launcher, ports)
            else:
                # asyncssh's local forwards live in this process
                listening = {s for s in process_listeners(os.getpid()) if s[1] in ports}
                assert {port for _, port in listening} == ports
                remote = remote_listeners(
                    target.server, launcher.remote_pid)  # type: ignore[arg-type,attr-defined]
                assert len(remote) >= 5, f"the remote kernel listens on {remote}"
                assert {ip for ip, _ in remote} == {LOOPBACK}, (
                    f"the kernel on the SSH host listens beyond loopback: {remote}")
            wide = {s for s in listening if s[0] != LOOPBACK}
            assert not wide, f"listening beyond loopback: {sorted(wide)}"
            reached = [(a, p) for a in other_addresses() for p in sorted(ports)
                       if answers(a, p)]
            assert not reached, f"the kernel's ports answer on other addresses: {reached}"
            print(f"{target.kind}: {sorted(listening)} listening; not reachable on"
                  f" {other_addresses()}")
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def check_published_on_loopback(launcher: KernelLauncher, ports: set[int]
                                ) -> set[tuple[str, int]]:
    """A Docker kernel's ports are published on 127.0.0.1 only (as the engine reports
    them) and nothing on this machine listens on them beyond loopback; returns the
    machine's listeners on them (the engine's proxy, if it runs one)."""
    container = launcher.container  # type: ignore[attr-defined]
    container.reload()
    bindings = container.attrs["HostConfig"]["PortBindings"]
    published = container.attrs["NetworkSettings"]["Ports"]
    for where, table in (("PortBindings", bindings), ("NetworkSettings.Ports", published)):
        hosts = {b["HostIp"] for v in table.values() for b in v or []}
        assert hosts == {LOOPBACK}, f"{where} publishes on {hosts}: {table}"
    host_ports = {int(b["HostPort"]) for v in published.values() for b in v or []}
    assert host_ports == ports
    return machine_listeners(ports)


def test_key_is_on_no_command_line(target: Target) -> None:
    """Through launch, execute, restart and shutdown, no process of this machine ever
    has the key on its command line; nor the container's processes or its inspect data,
    nor the SSH host's processes."""
    async def scenario() -> None:
        finder = target.make_finder()
        with CmdlineRecorder() as recorder:
            launcher = await target.launch(finder)
            try:
                key = launcher.connection_info["key"]
                await run_code(launcher, "print('x')")
                check_remote_cmdlines(target, launcher, key)
                launcher = await launcher.restart()
                target.record(launcher)
                assert launcher.connection_info["key"] == key
                await run_code(launcher, "print('y')")
                check_remote_cmdlines(target, launcher, key)
            finally:
                await launcher.shutdown()
        # The recorder did see the kernels start: it would have seen their arguments.
        assert recorder.saw(b"ipykernel_launcher"), "no kernel command line was recorded"
        holders = recorder.holding(key)
        assert not holders, f"the key is on these command lines: {holders}"
        print(f"{target.kind}: {len(recorder.seen)} command lines in {recorder.rounds}"
              " samples, none with the key")

    asyncio.run(scenario())


def check_remote_cmdlines(target: Target, launcher: KernelLauncher, key: str) -> None:
    """The key is on no command line where the kernel runs, nor in ``docker inspect``."""
    if target.kind == "docker":
        container = launcher.container  # type: ignore[attr-defined]
        container.reload()
        assert key not in json.dumps(container.attrs), "the key is in docker inspect"
        assert key not in json.dumps(container.top()), "the key is in docker top"
        inside = json.loads(container.exec_run(["python3", "-c", _CMDLINES]).output)
        assert any("ipykernel_launcher" in c for c in inside.values())
        assert not [c for c in inside.values() if key in c], (
            "the key is on a command line in the container")
    elif target.server is not None:
        there = json.loads(target.server.exec("python3", "-c", _CMDLINES))
        assert any("ipykernel_launcher" in c for c in there.values())
        assert not [c for c in there.values() if key in c], (
            "the key is on a command line of the SSH host")


def test_key_is_in_no_log_or_trace(target: Target, caplog: pytest.LogCaptureFixture,
                                   capfd: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With every logger at DEBUG and KERNEL_PROVIDERS_TRACE=1 (set before the finder is
    made), launch, execute, restart and shutdown log and print nothing holding the key."""
    monkeypatch.setenv("KERNEL_PROVIDERS_TRACE", "1")
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)

    async def scenario() -> str:
        finder = target.make_finder()
        launcher = await target.launch(finder)
        key = str(launcher.connection_info["key"])
        try:
            assert (await run_code(launcher, "print(1)"))[0] == "1\n"
            launcher = await launcher.restart()
            target.record(launcher)
            assert (await run_code(launcher, "print(2)"))[0] == "2\n"
        finally:
            await launcher.shutdown()
        return key

    key = asyncio.run(scenario())
    out, err = capfd.readouterr()
    # The capture did work: the trace printed the hook calls, the log has records.
    assert "kernel_launch_options" in err, "KERNEL_PROVIDERS_TRACE printed nothing"
    assert caplog.records, "no log record was captured"
    for where, text in (("the log", caplog.text), ("stderr (trace)", err), ("stdout", out)):
        assert key not in text, f"the key is in {where}: " + excerpt(text, key)
    for record in caplog.records:  # also in a record's arguments and extras
        assert key not in repr(vars(record)), f"the key is in log record {record}"
    print(f"{target.kind}: {len(caplog.records)} log records, {len(err)} characters of"
          " trace, none with the key")


def excerpt(text: str, secret: str) -> str:
    """The text around ``secret`` in ``text``, the secret itself masked."""
    at = text.find(secret)
    return text[max(0, at - 300):at + len(secret) + 100].replace(secret, "<KEY>")


def test_docker_kernel_has_no_extra_privileges(docker_client: Any, kp_isolated: Path
                                               ) -> None:
    """The container is not privileged, adds no capability, device, host namespace or
    relaxed security option, mounts no engine socket; and its processes hold no
    capability beyond Docker's default set."""
    target = Target("docker", KERNELS["docker"],
                    lambda: KernelFinder(Config(providers={"docker": {}})), docker=docker_client)

    async def scenario() -> None:
        launcher = await target.launch()
        try:
            container = launcher.container  # type: ignore[attr-defined]
            container.reload()
            host = container.attrs["HostConfig"]
            assert host["Privileged"] is False
            assert not host.get("CapAdd"), f"capabilities added: {host['CapAdd']}"
            assert not host.get("Devices"), f"devices: {host['Devices']}"
            assert not host.get("DeviceRequests"), f"devices: {host['DeviceRequests']}"
            assert not host.get("DeviceCgroupRules"), host["DeviceCgroupRules"]
            for namespace in ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode"):
                assert host.get(namespace) != "host", f"{namespace} is host"
            relaxed = [o for o in host.get("SecurityOpt") or []
                       if "unconfined" in o or o in ("label=disable", "label:disable")]
            assert not relaxed, f"security options relaxed: {relaxed}"
            mounts = json.dumps(container.attrs.get("Mounts")) + json.dumps(host.get("Binds"))
            assert "docker.sock" not in mounts, f"the engine's socket is mounted: {mounts}"
            caps = json.loads(container.exec_run(["python3", "-c", _CAPABILITIES]).output)
            assert len(caps) >= 2  # init and the kernel, at least
            beyond = {pid: sorted(b for b in range(64) if value >> b & 1
                                  and b not in DOCKER_DEFAULT_CAPS)
                      for pid, value in caps.items()}
            assert not any(beyond.values()), f"capabilities beyond Docker's default: {beyond}"
        finally:
            await launcher.shutdown()
        assert not leftover_containers(docker_client, target.containers)

    asyncio.run(scenario())


# Run in a helper container on the kernel's Docker network: which of the kernel's
# ports (in its container) accept a TCP connection, then whether a subscriber there
# reads what the kernel publishes on iopub (no key is needed to read). argv: the
# kernel's address, its iopub port, the marker to wait for, then the ports to try.
_NEIGHBOUR = r"""
import json, socket, sys, time
address, iopub, marker, ports = sys.argv[1], sys.argv[2], sys.argv[3].encode(), sys.argv[4:]
reached = []
for port in ports:
    with socket.socket() as probe:
        probe.settimeout(3)
        if probe.connect_ex((address, int(port))) == 0:
            reached.append(int(port))
print(json.dumps({"reached": reached}), flush=True)
read = False
if reached:
    import zmq
    sub = zmq.Context().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 1000)
    sub.connect("tcp://%s:%s" % (address, iopub))
    print(json.dumps({"subscribed": True}), flush=True)
    deadline = time.time() + 20
    while time.time() < deadline and not read:
        try:
            read = any(marker in part for part in sub.recv_multipart())
        except zmq.Again:
            pass
print(json.dumps({"read": read}), flush=True)
"""


def test_docker_kernel_is_unreachable_from_other_containers(docker_client: Any,
                                                            kp_isolated: Path) -> None:
    """The kernel's ports are published on this machine's loopback only, so no other
    container on the kernel's Docker network reaches them either (a container there is
    not this machine's loopback): none of them accepts a connection from a neighbour,
    and a neighbour cannot read the kernel's output on iopub."""
    from kernel_providers_docker.launcher import CONTAINER_PORTS

    target = Target("docker", KERNELS["docker"],
                    lambda: KernelFinder(Config(providers={"docker": {}})), docker=docker_client)
    marker = f"kp-neighbour-{os.getpid()}-{time.monotonic_ns()}"

    async def scenario() -> dict[str, Any]:
        launcher = await target.launch()
        neighbour = None
        try:
            container = launcher.container  # type: ignore[attr-defined]
            container.reload()
            network, settings = next(iter(container.attrs["NetworkSettings"]["Networks"]
                                          .items()))
            ports = [str(p) for p in CONTAINER_PORTS.values()]
            neighbour = docker_client.containers.run(
                IMAGE, ["python3", "-c", _NEIGHBOUR, settings["IPAddress"],
                        str(CONTAINER_PORTS["iopub_port"]), marker, *ports],
                detach=True, network=network, labels={"io.kernel-providers.test": marker})
            seen = await neighbour_says(neighbour, "subscribed", "read", 60)
            if seen.get("subscribed"):
                for _ in range(6):  # the subscription takes a moment to join
                    await run_code(launcher, f"print({marker!r})")
                    await asyncio.sleep(0.5)
            seen.update(await neighbour_says(neighbour, "read", "read", 60))
            seen["network"] = network
            return seen
        finally:
            if neighbour is not None:
                neighbour.remove(force=True)
            await launcher.shutdown()

    seen = asyncio.run(scenario())
    assert not leftover_containers(docker_client, target.containers)
    assert not seen["reached"], (
        f"DEFECT: another container on the Docker network {seen['network']!r} reaches the"
        f" kernel's ports {seen['reached']} in its container (the kernel binds 0.0.0.0"
        " there; only the host side is published on 127.0.0.1)"
        + ("; and it READ the kernel's output on iopub without the key"
           if seen.get("read") else ""))


async def neighbour_says(neighbour: Any, first: str, last: str, seconds: float
                         ) -> dict[str, Any]:
    """What the neighbour container printed (JSON lines, merged) once it printed
    ``first`` or ``last`` or ended."""
    deadline = time.monotonic() + seconds
    said: dict[str, Any] = {}
    while time.monotonic() < deadline:
        logs = (await asyncio.to_thread(neighbour.logs)).decode()
        said = {k: v for line in logs.splitlines() if line.startswith("{")
                for k, v in json.loads(line).items()}
        neighbour.reload()
        if first in said or last in said or neighbour.status == "exited":
            return said
        await asyncio.sleep(0.2)
    raise AssertionError(f"the neighbour container said only {said} in {seconds:g} s")


def changed_known_hosts(server: SSHD | LocalSSHD, folder: Path) -> Path:
    """A known_hosts that holds another key (of the same type) for the server's address:
    as after the host was reinstalled, or someone impersonates it."""
    import asyncssh

    host_field, kind, real = server.known_hosts.read_text().split()[:3]
    other = asyncssh.generate_private_key(kind).export_public_key().decode().split()[1]
    assert other != real
    changed = folder / "known_hosts_changed"
    changed.write_text(f"{host_field} {kind} {other}\n")
    return changed


def refusal(server: SSHD | LocalSSHD, folder: Path) -> tuple[str, KernelFinder]:
    """Launch the SSH kernel against a changed host key: the error's message (it must
    fail), and the finder."""
    finder = KernelFinder(Config(providers={"ssh": ssh_settings(
        server, known_hosts=str(changed_known_hosts(server, folder)))}))
    with pytest.raises(KernelProviderError) as refused:
        asyncio.run(finder.launch(KERNELS["ssh"]))
    return str(refused.value), finder


def test_changed_host_key_is_refused(sshd: SSHD | LocalSSHD, kp_isolated: Path,
                                     tmp_path: Path) -> None:
    """known_hosts holds a different key for the host: no connection is made, the launch
    fails naming the host and its key, nothing is left here."""
    message, finder = refusal(sshd, tmp_path)
    print(f"refused with: {message}")
    assert "testbox" in message, f"the message does not name the host: {message}"
    assert "host key" in message, f"the message does not name the host key: {message}"
    pool = finder.providers["ssh"].pool  # type: ignore[attr-defined]
    assert pool.users("testbox") == 0
    assert list(kp_isolated.iterdir()) == []  # no connection file was written


def test_changed_host_key_is_called_a_change(sshd: SSHD | LocalSSHD, kp_isolated: Path,
                                             tmp_path: Path) -> None:
    """A host key that differs from the one known_hosts holds is not merely unknown: as
    OpenSSH does ("REMOTE HOST IDENTIFICATION HAS CHANGED"), the message says the key
    changed and that someone may be impersonating the host, instead of advising to add
    the key to known_hosts (which is the fix for an unknown key only)."""
    message, _ = refusal(sshd, tmp_path)
    lowered = message.lower()
    assert "changed" in lowered and "impersonat" in lowered, (
        "DEFECT: a CHANGED ssh host key is reported as if it were merely unknown; the"
        " message neither says that the key changed nor that the host may be"
        f" impersonated (and advises adding the key to known_hosts): {message!r}")


def test_ssh_config_cannot_switch_host_key_checking_off(sshd: SSHD | LocalSSHD,
                                                        kp_isolated: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """The one opt-out of host key checking is ``insecure_hosts``: an ssh config that
    says ``UserKnownHostsFile none`` for the host (no known_hosts file, as OpenSSH reads
    it: nothing is known, so in batch mode nothing is accepted) must not make an unknown
    host key acceptable."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts to fall back on
    config = tmp_path / "ssh_config_none"
    config.write_text(sshd.ssh_config.read_text().replace(
        f"UserKnownHostsFile {sshd.known_hosts}", "UserKnownHostsFile none"))
    assert "UserKnownHostsFile none" in config.read_text()
    settings = {k: v for k, v in ssh_settings(sshd, ssh_config=str(config)).items()
                if k != "known_hosts"}  # as a user who relies on ~/.ssh/known_hosts
    finder = KernelFinder(Config(providers={"ssh": settings}))

    async def scenario() -> str | None:
        try:
            launcher = await finder.launch(KERNELS["ssh"])
        except KernelProviderError as exc:
            return str(exc)
        await launcher.shutdown()
        return None

    refused = asyncio.run(scenario())
    assert refused is not None, (
        "DEFECT: an ssh config with `UserKnownHostsFile none` switches host key checking"
        " off: a kernel was started on a host whose key is known nowhere, without the"
        " host being listed in insecure_hosts (asyncssh reads `none` as no checking;"
        " the provider passes no known_hosts when its own setting is unset)")
    assert "testbox" in refused and "host key" in refused, refused
