"""Real Jupyter clients against the bridge: a test kernelspec, and Docker / SSH kernels
where an engine is available (in CI it must be)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_providers.testing import docker_image_problem, unavailable

IMAGE = os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


@pytest.fixture
def jupyter_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                kp_isolated: Path) -> Iterator[Path]:
    """Private Jupyter dirs with one test kernelspec, ``kp-bridge``; the bridge's shared
    finder is reset so it sees them. Yields the Jupyter config dir."""
    data = tmp_path / "jupyter-data"
    spec = data / "kernels" / "kp-bridge"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(
        {"argv": IPYKERNEL, "display_name": "KP Bridge", "language": "python"}))
    # A kernelspec only kernel-providers sees (not on Jupyter's path): a client that
    # finds it is using the bridge.
    hidden = tmp_path / "hidden-kernels" / "kp-bridge-only"
    hidden.mkdir(parents=True)
    (hidden / "kernel.json").write_text(json.dumps(
        {"argv": IPYKERNEL, "display_name": "KP Bridge only", "language": "python"}))
    (hidden / "logo-64x64.png").write_bytes(b"\x89PNG kp-logo")
    Path(os.environ["KERNEL_PROVIDERS_CONFIG"]).write_text(
        f"[providers.spec]\nextra_dirs = [{json.dumps(str(hidden.parent))}]\n")
    config = tmp_path / "jupyter-config"
    config.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(data))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user-data"))
    monkeypatch.setenv("KERNEL_PROVIDERS_DISABLE", "conda,venv,example,ssh")
    import kernel_providers_jupyter.shared as shared

    shared.forget_shared_finder()
    yield config
    shared.forget_shared_finder()


def docker_available() -> bool:
    problem = docker_image_problem(IMAGE)
    if problem:
        unavailable(problem)
    return True


@pytest.fixture
def docker_kernel(jupyter_env: Path) -> str:
    """The bridged name of the Docker test image's kernel (skips without an engine)."""
    docker_available()
    from kernel_providers_jupyter import jupyter_name

    return jupyter_name(f"docker/{IMAGE}")


@pytest.fixture(name="our_containers")
def our_containers_fixture() -> Any:
    """``our_containers()``: ids of the containers kernel-providers manages."""
    return our_containers


def our_containers() -> set[str]:
    import docker

    client = docker.from_env()
    try:
        return {c.id for c in client.containers.list(
            all=True, filters={"label": "io.kernel-providers.managed=1"})}
    finally:
        client.close()


