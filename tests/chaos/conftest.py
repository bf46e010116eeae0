"""The chaos suite: every test here is part of the reliability report (its kind is its
module's name: ``test_ssh_faults.py`` -> "ssh faults"). Shared fixtures: the test image's
engine client and a test sshd of each module's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_providers.testing import docker_image_problem, unavailable

#: the image scripts/build-test-image makes (python3-ipykernel, openssh-server)
IMAGE = "kernel-providers-test:bookworm"


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    """A client of the engine holding the test image (fails in CI without one)."""
    problem = docker_image_problem(IMAGE)
    if problem:
        unavailable(problem)
    import docker

    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """This module's own sshd: a container of the test image, or (KP_TEST_SSHD=local, or
    no engine) an sshd on 127.0.0.1 of this machine."""
    from kernel_providers_ssh.testing import sshd_for_tests

    with sshd_for_tests(tmp_path_factory.mktemp("sshd"), IMAGE) as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    chaos = Path(__file__).parent
    for item in items:
        if item.path.parent == chaos:  # (a test id may hold '/': spec/python3)
            kind = item.path.stem.removeprefix("test_")
            item.add_marker(pytest.mark.reliability(kind.replace("_", " ")))
