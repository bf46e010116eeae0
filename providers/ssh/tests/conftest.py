"""A real OpenSSH server as its own host, for the SSH provider's tests (see
kernel_providers_ssh.testing)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, KernelFinder
from kernel_providers.testing import unavailable
from kernel_providers_ssh.testing import SSHD, LocalSSHD, start_local_sshd, start_sshd

IMAGE = os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHD | LocalSSHD]:
    """The test server: sshd in a container as its own host; where no Docker engine
    runs, sshd on 127.0.0.1 of this machine (KP_TEST_SSHD=local forces that)."""
    folder = tmp_path_factory.mktemp("ssh")
    client = None
    if os.environ.get("KP_TEST_SSHD") != "local":
        try:
            import docker

            client = docker.from_env()
            client.ping()
        except Exception:
            client = None
    if client is None:
        if not Path("/usr/sbin/sshd").exists():
            unavailable("neither a Docker engine nor /usr/sbin/sshd (openssh-server)")
        local = start_local_sshd(folder)
        try:
            yield local
        finally:
            local.stop()
        return
    try:
        from docker.errors import ImageNotFound

        try:
            client.images.get(IMAGE)
        except ImageNotFound:
            subprocess.run(["bash", str(ROOT / "scripts" / "build-test-image"), IMAGE],
                           check=False, capture_output=True)
            try:
                client.images.get(IMAGE)
            except ImageNotFound as exc:
                unavailable(f"no test image {IMAGE}: {exc}")
        server = start_sshd(client, IMAGE, folder)
        try:
            yield server
        finally:
            server.stop()
    finally:
        client.close()


@pytest.fixture
def ssh_finder(sshd: SSHD | LocalSSHD, kp_isolated: Path) -> Callable[..., KernelFinder]:
    """``ssh_finder(**table)``: a finder whose [providers.ssh] points at the test sshd."""
    def make(**table: Any) -> KernelFinder:
        settings = {"hosts": ["testbox"], "python": sshd.python,
                    "ssh_config": str(sshd.ssh_config),
                    "known_hosts": str(sshd.known_hosts), "connect_timeout": 20, **table}
        return KernelFinder(Config(providers={"ssh": settings}))
    return make
