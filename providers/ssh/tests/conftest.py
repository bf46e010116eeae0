"""A real OpenSSH server as its own host: a container of the test image (Debian
openssh-server + python3-ipykernel), published on a loopback port, with a client key
made here and its host key in a test known_hosts."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, KernelFinder

IMAGE = os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
ROOT = Path(__file__).resolve().parents[3]
REMOTE_RUNTIME = "/root/.local/share/kernel-providers/runtime"

# Runs in the container as its command: sshd's keys and login, a kernelspec that exits
# at once (for the failure test), then sshd in the foreground.
SETUP = r"""
set -e
mkdir -p /run/sshd /root/.ssh /usr/local/share/jupyter/kernels/exits
chmod 700 /root/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
ssh-keygen -A >/dev/null
cat > /usr/local/share/jupyter/kernels/exits/kernel.json <<'JSON'
{"argv": ["python3", "-c", "print('ssh-exits-marker'); raise SystemExit(6)"],
 "display_name": "Exits", "language": "python"}
JSON
exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)


@dataclass
class SSHHost:
    """The test sshd: its container, port, and the client files pointing at it."""

    container: Any
    port: int
    ssh_config: Path
    known_hosts: Path
    key: Path

    def exec(self, *argv: str) -> str:
        result = self.container.exec_run(list(argv))
        return str(result.output.decode())


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHHost]:
    try:
        import asyncssh

        from kernel_providers_docker.engine import connect

        client = connect()
        client.images.get(IMAGE)
    except Exception as exc:
        if "ImageNotFound" in type(exc).__name__:
            subprocess.run(["bash", str(ROOT / "scripts" / "build-test-image"), IMAGE],
                           check=False, capture_output=True)
            try:
                client.images.get(IMAGE)
            except Exception as again:
                _unavailable(f"no test image {IMAGE}: {again}")
        else:
            _unavailable(f"no Docker engine to run the test sshd in: {exc}")
    folder = tmp_path_factory.mktemp("ssh")
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(folder / "id_test"))
    os.chmod(folder / "id_test", 0o600)
    container = client.containers.run(
        IMAGE, ["sh", "-c", SETUP], detach=True,
        environment={"AUTHORIZED_KEY": key.export_public_key().decode().strip()},
        ports={"22/tcp": ("127.0.0.1", None)}, labels={"io.kernel-providers.test": "sshd"})
    try:
        host_key = ""
        for _ in range(100):
            container.reload()
            host_key = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output
            ports = container.attrs["NetworkSettings"]["Ports"].get("22/tcp")
            if container.status == "running" and ports and host_key.startswith(b"ssh-"):
                port = int(ports[0]["HostPort"])
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"test sshd did not start: {container.logs().decode()}")
        known_hosts = folder / "known_hosts"
        kind, blob = host_key.decode().split()[:2]
        known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
        closed.close()
        config = folder / "ssh_config"
        config.write_text(
            f"Host testbox testbox2 unverified\n  HostName 127.0.0.1\n  Port {port}\n"
            f"  User root\n  IdentityFile {folder / 'id_test'}\n  IdentitiesOnly yes\n\n"
            f"Host deadbox\n  HostName 127.0.0.1\n  Port {dead_port}\n  User root\n")
        yield SSHHost(container, port, config, known_hosts, folder / "id_test")
    finally:
        container.remove(force=True)
        client.close()


@pytest.fixture
def ssh_finder(sshd: SSHHost, kp_isolated: Path) -> Callable[..., KernelFinder]:
    """``ssh_finder(**table)``: a finder whose [providers.ssh] points at the test sshd."""
    def make(**table: Any) -> KernelFinder:
        settings = {"hosts": ["testbox"], "ssh_config": str(sshd.ssh_config),
                    "known_hosts": str(sshd.known_hosts), "connect_timeout": 20, **table}
        return KernelFinder(Config(providers={"ssh": settings}))
    return make
