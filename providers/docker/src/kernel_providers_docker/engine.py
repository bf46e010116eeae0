"""Reaching the Docker engine as the docker CLI does (DOCKER_HOST, then the current
docker context), with errors that say what to do."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from kernel_providers.sdk import ProviderUnavailable

if TYPE_CHECKING:
    import docker

__all__ = ["connect", "engine_url", "remove_container"]

# Enough connections for every kernel's log stream and wait call, plus requests.
_POOL_SIZE = 256
# One client per engine address for the whole process: its connection pool is shared by
# every finder and kernel (clients are never left to the garbage collector).
_clients: dict[str, docker.DockerClient] = {}
_lock = threading.Lock()


def _context_host() -> str | None:
    name = os.environ.get("DOCKER_CONTEXT")
    if not name:
        config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
        try:
            name = json.loads((config / "config.json").read_text()).get("currentContext")
        except (OSError, ValueError, AttributeError):
            name = None
    if not name or name == "default":
        return None
    from docker.context import ContextAPI

    context = ContextAPI.get_context(name)
    if context is None:
        raise ProviderUnavailable(f"docker context {name!r} does not exist; check"
                                  " `docker context ls` or DOCKER_CONTEXT")
    return str(context.Host) if context.Host else None


def engine_url() -> str:
    """The engine address the client will use (for messages)."""
    return os.environ.get("DOCKER_HOST") or _context_host() or "unix:///var/run/docker.sock"


def connect() -> docker.DockerClient:
    """The client for the engine, checked with a ping. Raises ProviderUnavailable."""
    url = engine_url()
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = _connect(url)
    return client


def _check_socket(url: str) -> None:
    # Fail fast (and without the socket the SDK leaks when a unix socket is missing).
    if not url.startswith("unix://"):
        return
    path = url[len("unix://"):]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(path)
    except PermissionError:
        raise ProviderUnavailable(
            f"permission denied on the Docker socket ({url}): add your user to the"
            " 'docker' group (then log in again), or set DOCKER_HOST") from None
    except OSError as exc:
        raise ProviderUnavailable(
            f"Docker engine not reachable at {url}: is dockerd running? ({exc.strerror});"
            " set DOCKER_HOST, or KERNEL_PROVIDERS_DISABLE=docker to stop asking") from None
    finally:
        sock.close()


def _connect(url: str) -> docker.DockerClient:
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:  # pragma: no cover - the distribution depends on it
        raise ProviderUnavailable("the docker SDK is not installed: pip install docker"
                                  ) from None
    _check_socket(url)
    client = None
    try:
        if os.environ.get("DOCKER_HOST") or url == "unix:///var/run/docker.sock":
            client = docker.from_env(max_pool_size=_POOL_SIZE)
        else:
            client = docker.DockerClient(base_url=url, max_pool_size=_POOL_SIZE)
        client.ping()
    except DockerException as exc:
        if client is not None:
            client.close()
        text = str(exc)
        if "Permission denied" in text:
            raise ProviderUnavailable(
                f"permission denied on the Docker socket ({url}): add your user to the"
                " 'docker' group (then log in again), or set DOCKER_HOST") from None
        raise ProviderUnavailable(
            f"Docker engine not reachable at {url}: is dockerd running? ({text.strip()});"
            " set DOCKER_HOST, or KERNEL_PROVIDERS_DISABLE=docker to stop asking") from None
    return client


def remove_container(container_id: str) -> None:
    """Remove a kernel's container: the reaper's undo when the process that launched it
    ended without cleaning up (see ``kernel_providers.orphans``)."""
    from docker.errors import NotFound

    with contextlib.suppress(NotFound):
        connect().api.remove_container(container_id, force=True)
