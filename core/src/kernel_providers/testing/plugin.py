"""pytest plugin of kernel-providers (entry point ``pytest11``): isolation fixtures.

``kp_isolated`` gives a test its own Jupyter runtime dir (connection files) and an empty
configuration file, so the kernels and settings of the machine running the tests never
leak in. The conformance suite uses it automatically.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def kp_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime dir, cache dir (exec plans) and an empty config file; yields the
    runtime dir."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    config = tmp_path / "kernel_providers.toml"
    config.write_text("")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("KERNEL_PROVIDERS_CONFIG", str(config))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield runtime
