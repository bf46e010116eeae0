"""A real Docker engine and a test image built from Debian packages.

On a user's machine without an engine these tests skip with the reason; in CI
(``CI`` set) a missing engine or image is a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, KernelFinder
from kernel_providers.testing import unavailable

IMAGE = os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """The engine client the provider itself uses (one per engine, per process)."""
    from kernel_providers_docker.engine import connect

    try:
        return connect()
    except Exception as exc:
        unavailable(f"no Docker engine: {exc}")


@pytest.fixture(scope="session")
def test_image(docker_client: Any) -> str:
    """The test image (debootstrap + python3-ipykernel + openssh-server, labelled)."""
    from docker.errors import ImageNotFound

    try:
        docker_client.images.get(IMAGE)
    except ImageNotFound:
        result = subprocess.run(["bash", str(ROOT / "scripts" / "build-test-image"), IMAGE],
                                capture_output=True, text=True)
        if result.returncode != 0:
            unavailable(f"cannot build {IMAGE}: {result.stderr[-2000:]}")
    return IMAGE


def our_containers(client: Any) -> set[str]:
    return {c.id for c in client.containers.list(
        all=True, filters={"label": "io.kernel-providers.managed=1"})}


@pytest.fixture
def docker_finder(test_image: str, kp_isolated: Path, docker_client: Any
                  ) -> Iterator[Any]:
    """``docker_finder(**table)``: a finder with ``[providers.docker]`` set to ``table``;
    checks that the test leaves no container of ours behind."""
    before = our_containers(docker_client)

    def make(**table: Any) -> KernelFinder:
        return KernelFinder(Config(providers={"docker": table}))

    yield make
    leftovers = our_containers(docker_client) - before
    for container_id in leftovers:
        docker_client.containers.get(container_id).remove(force=True)
    assert not leftovers, f"containers left behind: {leftovers}"
