"""A real OpenSSH server for tests and benchmarks: a container of the test image
(Debian openssh-server + python3-ipykernel, see scripts/build-test-image) published on
a loopback port, a client key made here, its host key in a private known_hosts, and an
ssh_config naming it ``testbox`` (plus ``deadbox``, a closed port). Needs the docker SDK.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SSHD", "start_sshd"]

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



@dataclass
class SSHD:
    """The test sshd: its container, port, and the client files pointing at it."""

    container: Any
    port: int
    ssh_config: Path
    known_hosts: Path
    key: Path

    def exec(self, *argv: str) -> str:
        """Run a command in the server's container; its output."""
        return str(self.container.exec_run(list(argv)).output.decode())

    def stop(self) -> None:
        """Remove the container."""
        self.container.remove(force=True)


def start_sshd(client: Any, image: str, folder: Path) -> SSHD:
    """Start the server from ``image`` with the docker SDK ``client``; client files go
    into ``folder``. The caller stops it."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(folder / "id_test"))
    os.chmod(folder / "id_test", 0o600)
    container = client.containers.run(
        image, ["sh", "-c", SETUP], detach=True,
        environment={"AUTHORIZED_KEY": key.export_public_key().decode().strip()},
        ports={"22/tcp": ("127.0.0.1", None)}, labels={"io.kernel-providers.test": "sshd"})
    try:
        for _ in range(200):
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
            f"  User root\n  IdentityFile {folder / 'id_test'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known_hosts}\n\n"
            f"Host deadbox\n  HostName 127.0.0.1\n  Port {dead_port}\n  User root\n")
    except BaseException:
        container.remove(force=True)
        raise
    return SSHD(container, port, config, known_hosts, folder / "id_test")
