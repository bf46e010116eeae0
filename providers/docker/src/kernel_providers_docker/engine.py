"""Reaching the Docker engine as the docker CLI does (DOCKER_HOST, then the current
docker context), with errors that say what to do."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_providers.sdk import KernelProvider, ProviderUnavailable

if TYPE_CHECKING:
    import docker

__all__ = ["check_socket", "connect", "engine_url", "remove_container"]

# Enough connections for every kernel's log stream and wait call, plus requests.
_POOL_SIZE = 256
# One client per engine address for the whole process: its connection pool is shared by
# every finder and kernel (clients are never left to the garbage collector).
_clients: dict[str, docker.DockerClient] = {}
_lock = threading.Lock()
_DEFAULT_URL = "unix:///var/run/docker.sock"

# How long the engine may take to answer one request, in seconds. An engine that accepts
# connections but never answers (hung) must cost a bounded wait, not the SDK's 60 s per
# call: a thread stuck in a socket cannot be stopped, it outlives the listing that gave
# up on it, holds a worker of the event loop's shared thread pool and delays the
# process's exit. A live engine answers the handshake (version, ping) at once and a
# query (GET: list, inspect) within moments; actions (create, start, remove, pull) may
# take longer and keep the SDK's 60 s (waits and log streams have none, as before).
_HANDSHAKE_TIMEOUT = 5.0
_QUERY_TIMEOUT = 10.0
_ACTION_TIMEOUT = 60.0
# During a discovery every request also ends this much before the finder stops waiting,
# so the listing shows our message (which engine, what to do), not a bare timeout.
_MARGIN = 0.5


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
    return os.environ.get("DOCKER_HOST") or _context_host() or _DEFAULT_URL


def connect() -> docker.DockerClient:
    """The client for the engine, checked with a ping. Raises ProviderUnavailable."""
    url = engine_url()
    with _lock:
        client = _clients.get(url)
    if client is None:
        # Not under the lock: behind a hung engine's handshake every other caller would
        # queue, each waiting its turn past its own deadline (one more thread per refresh).
        fresh = _connect(url)
        with _lock:
            client = _clients.setdefault(url, fresh)
        if client is not fresh:
            fresh.close()
    return client


def _request_timeout(method: str, kwargs: dict[str, Any]) -> tuple[float | None, bool]:
    """The timeout of one request to the engine (see _QUERY_TIMEOUT), and whether it is
    what the current discovery has left (shorter than the request's own)."""
    timeout: float | None = kwargs.get("timeout", _ACTION_TIMEOUT)
    if method == "GET" and not kwargs.get("stream"):
        timeout = _QUERY_TIMEOUT if timeout is None else min(timeout, _QUERY_TIMEOUT)
    left = KernelProvider.discovery_time_left()
    if left is not None:
        cap = max(left - min(_MARGIN, left / 2), 0.01)
        if timeout is None or cap < timeout:
            return cap, True
    return timeout, False


def _no_answer(engine: str, seconds: float, accepted: bool,
               listing: bool) -> ProviderUnavailable:
    """The error of a request the engine left unanswered: which engine, what happened,
    what to do (``listing``: the wait was what discovery_timeout left)."""
    what = ("accepted a connection but did not answer" if accepted
            else "did not accept a connection")
    return ProviderUnavailable(
        f"the Docker engine at {engine} {what} within {seconds:.2g} s"
        + (" (what discovery_timeout left)" if listing else "")
        + ": it is hung or overloaded; check `docker info` and restart it (e.g. `sudo"
        " systemctl restart docker`), or set DOCKER_HOST to another engine, or"
        " KERNEL_PROVIDERS_DISABLE=docker to stop asking"
        + ("; if it is only slow, raise discovery_timeout in the config" if listing else ""))


@functools.cache
def _client_class() -> type[docker.DockerClient]:
    # Defined on first use: the docker SDK is imported only when an engine is asked.
    import docker
    import requests
    from docker.transport import unixconn

    class ClosingUnixConnection(unixconn.UnixHTTPConnection):  # type: ignore[misc]
        def connect(self) -> None:
            # The SDK's own leaks the socket when the engine refuses the connection
            # (stopping, restarting): a ResourceWarning per request until it is back.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(self.unix_socket)
            except BaseException:
                sock.close()
                raise
            self.sock = sock

    class ClosingUnixPool(unixconn.UnixHTTPConnectionPool):  # type: ignore[misc]
        def _new_conn(self) -> ClosingUnixConnection:
            return ClosingUnixConnection(self.base_url, self.socket_path, self.timeout)

    class ClosingUnixAdapter(unixconn.UnixHTTPAdapter):  # type: ignore[misc]
        def get_connection(self, url: str, proxies: Any = None) -> ClosingUnixPool:
            with self.pools.lock:
                pool = self.pools.get(url)
                if pool is None:
                    pool = self.pools[url] = ClosingUnixPool(
                        url, self.socket_path, self.timeout, maxsize=self.max_pool_size)
            return pool  # type: ignore[no-any-return]

    class BoundedAPIClient(docker.APIClient):  # type: ignore[misc]
        """Every request bounded (_request_timeout); a request that times out raises
        ProviderUnavailable naming the engine and what to do. Unix sockets are closed
        when a connection fails (ClosingUnixConnection)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.engine = str(kwargs.get("base_url") or _DEFAULT_URL)  # before the
            super().__init__(*args, **kwargs)  # base class asks the engine its version
            adapter = getattr(self, "_custom_adapter", None)
            if adapter is not None and type(adapter) is unixconn.UnixHTTPAdapter:
                adapter.__class__ = ClosingUnixAdapter  # same state, our connections
                adapter.pools.clear()  # (closes the version request's pool)

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            kwargs["timeout"], listing = _request_timeout(method, kwargs)
            try:
                return super().request(method, url, *args, **kwargs)
            except requests.exceptions.Timeout as exc:
                accepted = not isinstance(exc, requests.exceptions.ConnectTimeout)
                raise _no_answer(self.engine, kwargs["timeout"], accepted, listing
                                 ) from None

    class BoundedDockerClient(docker.DockerClient):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.api = BoundedAPIClient(*args, **kwargs)

    return BoundedDockerClient


def check_socket(url: str) -> None:
    """Raise ProviderUnavailable if the engine's unix socket takes no connection. Asked
    before the SDK is: it fails fast, and without the socket the SDK leaks when a unix
    socket is missing."""
    if not url.startswith("unix://"):
        return
    path = url[len("unix://"):]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(_request_timeout("GET", {"timeout": _HANDSHAKE_TIMEOUT})[0])
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
        from docker.errors import DockerException
    except ImportError:  # pragma: no cover - the distribution depends on it
        raise ProviderUnavailable("the docker SDK is not installed: pip install docker"
                                  ) from None
    check_socket(url)
    client = None
    options = {"max_pool_size": _POOL_SIZE, "timeout": _HANDSHAKE_TIMEOUT}
    try:
        if os.environ.get("DOCKER_HOST") or url == _DEFAULT_URL:
            client = _client_class().from_env(**options)
        else:
            client = _client_class()(base_url=url, **options)
        client.ping()
        client.api.timeout = _ACTION_TIMEOUT  # the handshake is over
    except ProviderUnavailable:
        if client is not None:
            client.close()
        raise
    except DockerException as exc:
        if client is not None:
            client.close()
        if isinstance(exc.__cause__, ProviderUnavailable):  # no answer to "version?"
            raise exc.__cause__ from None
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
