"""Testing helpers for providers: the conformance suite every provider must pass.

In a provider's tests::

    from kernel_providers.testing import ConformanceSuite

    class TestMyProvider(ConformanceSuite):
        kernel_id = "mine/python3"
        failing_kernel_id = "mine/broken"   # a kernel that exits at once, or None

The pytest plugin (loaded automatically once the core is installed) isolates every
test's runtime dir and configuration file; see :mod:`kernel_providers.testing.plugin`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

from .conformance import ConformanceSuite, run_code

__all__ = ["ConformanceSuite", "command_argv", "command_environment", "docker_engine_problem",
           "docker_image_problem", "port_listening", "process_alive", "process_gone",
           "run_code", "unavailable", "write_kernelspec"]


def unavailable(reason: str) -> NoReturn:
    """A test cannot run here (its Docker engine or sshd is missing, a provider offers no
    kernel it needs): fail in CI (``CI`` set), where every test must run; skip with the
    reason on a user's machine. The one place tests skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (in CI every test must run: see .ci/run)")
    pytest.skip(reason)


def docker_engine_problem() -> str | None:
    """Why no Docker engine answers here (its unix socket, DOCKER_HOST's or the default),
    or None. Probes the socket itself: the SDK leaks one when the engine is missing (a
    ResourceWarning, which the test settings make an error)."""
    url = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if url.startswith("unix://"):
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.settimeout(5)
                probe.connect(url[len("unix://"):])
            except OSError as exc:
                return f"no Docker engine at {url}: {exc}"
    return None


def docker_image_problem(image: str) -> str | None:
    """Why a test cannot use a Docker engine holding ``image`` here (the engine or the
    image is missing), or None; pass a problem to :func:`unavailable`."""
    try:
        import docker
    except ImportError as exc:
        return f"no Docker SDK: {exc}"
    problem = docker_engine_problem()
    if problem is not None:
        return problem
    try:
        client = docker.from_env()
    except Exception as exc:
        return f"no Docker engine: {exc}"
    try:
        client.images.get(image)
    except Exception as exc:
        return f"no test image {image} (scripts/build-test-image): {exc}"
    finally:
        client.close()
    return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def process_gone(pid: int, seconds: float = 30) -> bool:
    """Poll until process ``pid`` has ended (True) or ``seconds`` passed (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.1)
    return not process_alive(pid)


def command_environment(folder: Path, disable: str, **extra: str) -> dict[str, str]:
    """An environment for running the ``kernel-providers`` command in a test: this
    process's, minus switches that change its output, with a private 0700 runtime dir,
    an empty config file and private Jupyter path, data, cache and IPython dirs under
    ``folder``; ``disable`` goes to KERNEL_PROVIDERS_DISABLE, ``extra`` on top."""
    runtime = folder / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)  # (kp_isolated's, when a test has both)
    runtime.chmod(0o700)  # whatever the umask
    config = folder / "kernel_providers.toml"
    config.write_text("")
    env = dict(os.environ)
    for name in ("NO_COLOR", "FORCE_COLOR", "CI", "KERNEL_PROVIDERS_TRACE",
                 "KERNEL_PROVIDERS_NO_AUTOLOAD", "PYTHONWARNINGS"):
        env.pop(name, None)
    env.update({
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "KERNEL_PROVIDERS_CONFIG": str(config),
        "JUPYTER_PATH": str(folder / "jupyter"),
        "JUPYTER_DATA_DIR": str(folder / "data"),
        "XDG_CACHE_HOME": str(folder / "cache"),
        "IPYTHONDIR": str(folder / "ipython"),
        "KERNEL_PROVIDERS_DISABLE": disable,
        **extra,
    })
    return env


def command_argv(*args: str) -> list[str]:
    """The argv of the installed ``kernel-providers`` command with ``args``: the script
    beside this interpreter, else the first on PATH, else ``python -m kernel_providers``."""
    script = Path(sys.executable).with_name("kernel-providers")
    found = str(script) if script.exists() else shutil.which("kernel-providers")
    return [*([found] if found else [sys.executable, "-m", "kernel_providers"]), *args]


def write_kernelspec(kernels: Path, name: str, spec: Any) -> Path:
    """Write ``kernels/<name>/kernel.json``: bytes and str as they are, anything else as
    JSON; returns its path."""
    (kernels / name).mkdir(parents=True, exist_ok=True)
    path = kernels / name / "kernel.json"
    if isinstance(spec, bytes):
        path.write_bytes(spec)
    else:
        path.write_text(spec if isinstance(spec, str) else json.dumps(spec), encoding="utf-8")
    return path


def port_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0

