"""Kernels in containers: start one, and the launcher contract on top of it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_providers.sdk import (
    PORT_NAMES,
    KernelProviderError,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    Undo,
    WatchedLauncher,
    client_connection,
    kernel_connection,
    one_line,
    owner_tag,
    process_stamp,
    ready_seconds,
    remove_connection_file,
    substitute_argv,
    undo_if_orphaned,
)

from .config import SIZE
from .engine import check_socket

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

__all__ = ["CONTAINER_PORTS", "DockerLauncher", "LaunchTarget", "PortsTaken",
           "start_container"]

# Fixed ports inside the container's own network namespace: nothing else binds there.
CONTAINER_PORTS = {"shell_port": 50001, "iopub_port": 50002, "stdin_port": 50003,
                   "control_port": 50004, "hb_port": 50005}
CONNECTION_DIR = "/tmp"
CONNECTION_NAME = "kernel-providers-connection.json"
MANAGED = "io.kernel-providers.managed"
KERNEL_ID = "io.kernel-providers.kernel-id"
LAUNCHER = "io.kernel-providers.launcher"
#: an HMAC of the container's name, launcher and kernel id that only this user on this
#: machine can make (see kernel_providers.ownership): what `cleanup` checks first
OWNER = "io.kernel-providers.owner"
#: How long a kernel's watch waits for its engine to answer again (a dockerd restart
#: takes a second or two) before it reports the kernel lost, unless the kernel's
#: heartbeat still answers (a live-restore engine keeps its containers running).
ENGINE_GRACE = 10.0


@dataclass
class LaunchTarget:
    """What to run for one kernel type: image, argv, and container options."""

    image: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    #: where the launch's folder (its cwd, else ours) is mounted and the kernel works
    mount_cwd: str | None = None
    mem_limit: str | None = None
    cpus: float | None = None
    network: str | None = None
    user: str | None = None
    pull: str = "never"
    pull_timeout: float = 900.0


class PortsTaken(LaunchFailed):
    """A host port the caller dictated is in use (by another container or process)."""


_PORT_TAKEN = ("port is already allocated", "address already in use")


def exit_status(code: int | None) -> int | None:
    """Docker's exit code as Popen reports it: the init process exits 128+N when the
    kernel was killed by signal N, which becomes -N."""
    if code is not None and 128 < code < 128 + 65:
        return -(code - 128)
    return code


class DockerLauncher(WatchedLauncher):
    """A kernel in a container. ``container`` is the docker SDK object."""

    def __init__(self, kernel_type: KernelType, connection_info: Any, connection_file: str,
                 options: LaunchOptions, client: DockerClient, container: Container,
                 undo: Undo | None = None) -> None:
        super().__init__(kernel_type, connection_info, connection_file, options)
        self.client, self.container = client, container
        self._claim_file: Path | None = None
        # Should this process end before cleanup, its reaper removes the container.
        self.cancel_at_cleanup(undo or removal_if_orphaned(container.id))
        self._loop = asyncio.get_running_loop()
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name=f"docker-watch-{container.short_id}")
        self._watcher.start()

    def _watch(self) -> None:
        # A thread of its own (not the loop's executor): following logs and waiting
        # block for the kernel's whole life.
        code: int | None = None
        since: int | None = None  # after an engine restart: logs from then on
        while True:
            try:
                for chunk in self.container.logs(stream=True, follow=True, since=since):
                    self.collected.append(chunk)
                code = int(self.container.wait().get("StatusCode", -1))
                break
            except Exception as exc:  # the container was removed, or the engine went away
                if _gone(exc):
                    break
                since = int(time.time())
                outcome = self._engine_back()
                if outcome == "running":  # a live-restore engine kept the kernel
                    time.sleep(0.1)  # (an engine still stopping may say so once more)
                    continue
                code = outcome if isinstance(outcome, int) else None
                break
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self.ended_with, exit_status(code))

    def _engine_back(self) -> int | str | None:
        """After the engine stopped answering the watch: wait for it and read the
        container's state. "running" (a live-restore engine kept the kernel), else the
        exit code, else None (the container is gone, or the engine stayed away for
        ENGINE_GRACE while the kernel's heartbeat did not answer either: the output then
        says what happened and what to do)."""
        engine = self.engine
        deadline = time.monotonic() + ENGINE_GRACE
        while True:
            try:
                check_socket(engine)
                self.container.reload()
            except Exception as exc:
                if _gone(exc):
                    return None
                if time.monotonic() < deadline:
                    time.sleep(0.25)
                elif not _heartbeat_answers(self.connection_info):
                    self._note(f"lost the Docker engine at {engine} while the kernel ran (no"
                               f" answer for {ENGINE_GRACE:g} s, nor from the kernel): its"
                               f" container {self.container.short_id} may still exist; once"
                               " the engine is back, `kernel-providers cleanup` removes it")
                    return None
                continue
            state = self.container.attrs.get("State", {})
            if state.get("Running"):
                return "running"
            code = int(state.get("ExitCode", -1))
            self._note(f"the Docker engine at {engine} stopped while the kernel ran, and its"
                       f" container ended with it (exit code {code}); dockerd ends its"
                       " containers when it stops unless live-restore is on"
                       " (\"live-restore\": true in /etc/docker/daemon.json)")
            return code

    def _note(self, text: str) -> None:
        """Add our account of the kernel's end to its output (errors quote its end)."""
        self.collected.append(f"\n[kernel-providers] {text}\n".encode())

    def _engine_away(self, action: str, exc: Exception) -> KernelProviderError:
        """The error of an action the engine did not take: which container, which
        engine, what happened, what to do."""
        reason = one_line(str(exc)) or type(exc).__name__
        return KernelProviderError(
            f"could not {action} the container {self.container.short_id} of"
            f" {self.kernel_type.id}: the Docker engine at {self.engine} did not take the"
            f" request ({reason}); check `docker info`, and once the engine is back,"
            " `kernel-providers cleanup` removes the container")

    @property
    def engine(self) -> str:
        """The address of the kernel's Docker engine (for messages)."""
        return str(getattr(self.client.api, "engine", None) or self.client.api.base_url)

    async def signal(self, signum: int) -> None:
        """Deliver ``signum`` to the kernel: the container's init forwards it."""
        if self.poll() is not None:
            return
        from docker.errors import APIError, NotFound

        try:
            await asyncio.to_thread(check_socket, self.engine)
            await asyncio.to_thread(self.container.kill, signal=int(signum))
        except (NotFound, APIError):
            pass  # already gone or stopping
        except Exception as exc:  # the engine is away
            raise self._engine_away(f"send signal {int(signum)} to", exc) from None

    def hold_claim(self, claim_file: Path) -> None:
        """Keep ``claim_file`` (this process re-attached to the container) until cleanup."""
        self._claim_file = claim_file
        self.cancel_at_cleanup(undo_if_orphaned({"remove_file": str(claim_file)}))

    def attach_state(self) -> dict[str, Any] | None:
        """The container's id: a container outlives the process that started it."""
        return {"container_id": self.container.id}

    async def free_resources(self) -> None:
        """Remove the container (its connection file goes with it)."""
        from docker.errors import NotFound

        try:
            await asyncio.to_thread(check_socket, self.engine)
            await asyncio.to_thread(self.container.remove, force=True)
        except NotFound:
            pass
        except Exception as exc:  # the engine is away
            raise self._engine_away("remove", exc) from None
        if self._claim_file is not None:
            self._claim_file.unlink(missing_ok=True)
        await asyncio.to_thread(self._watcher.join, 5)


def _gone(exc: Exception) -> bool:
    """Whether ``exc`` says the container no longer exists (not: the engine is away)."""
    from docker.errors import NotFound

    return isinstance(exc, NotFound)


def removal_if_orphaned(container_id: str) -> Undo:
    """Have this process's reaper remove the container (by id or name) should the
    process end first."""
    return undo_if_orphaned({"call": "kernel_providers_docker.engine:remove_container",
                             "kwargs": {"container_id": container_id}})


def _connection_tar(info: dict[str, Any], user: str | None) -> bytes:
    data = json.dumps(info).encode()
    member = tarfile.TarInfo(CONNECTION_NAME)
    member.size, member.mode, member.mtime = len(data), 0o600, int(time.time())
    if user:
        uid, _, gid = user.partition(":")
        if uid.isdigit():
            member.uid = int(uid)
            member.gid = int(gid) if gid.isdigit() else int(uid)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def _mounts(specs: list[str]) -> dict[str, dict[str, str]]:
    volumes = {}
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise LaunchFailed(f"bad mount {spec!r}: use 'host-path:container-path[:ro]'")
        mode = parts[2] if len(parts) == 3 else "rw"
        source = os.path.abspath(os.path.expanduser(parts[0]))
        if not os.path.exists(source):  # Docker would make it, as root
            raise LaunchFailed(f"mount {spec!r}: {source} does not exist on this machine;"
                               " create it, or fix `mounts` in [providers.docker]")
        volumes[source] = {"bind": parts[1], "mode": mode}
    return volumes


#: The network kernels join unless configured otherwise: a bridge without traffic
#: between its containers, so no other container can reach a kernel's ports (the
#: published ones on 127.0.0.1 still work; the key alone does not keep iopub private).
ISOLATED_NETWORK = "kernel-providers-isolated"
_networks: set[str] = set()  # engines (by address) where the network is known to exist


def _isolated_network(client: DockerClient) -> str:
    """The isolated network's name, made on the engine if missing (any process may race
    us to it: a conflict means it exists)."""
    from docker.errors import APIError

    engine = str(client.api.base_url)
    if engine not in _networks:
        if not client.networks.list(names=[ISOLATED_NETWORK]):
            try:
                client.networks.create(
                    ISOLATED_NETWORK, driver="bridge", labels={MANAGED: "1"},
                    options={"com.docker.network.bridge.enable_icc": "false"})
            except APIError as exc:
                if exc.status_code != 409:  # 409: made meanwhile by another process
                    raise
        _networks.add(engine)
    return ISOLATED_NETWORK


def _check_target(kernel_type: KernelType, target: LaunchTarget) -> None:
    """Refuse settings Docker would reject with an SDK error, naming the setting."""
    if target.network == "host":
        raise LaunchFailed(
            f"cannot start {kernel_type.id} with network = 'host': its ports are published"
            " on 127.0.0.1 only, which the host network cannot do (it would expose the"
            " kernel on every interface); use a bridge network in [providers.docker]")
    if target.mem_limit is not None and not SIZE.fullmatch(target.mem_limit):
        raise LaunchFailed(
            f"cannot start {kernel_type.id}: mem_limit = {target.mem_limit!r} is not a size;"
            " write a number with a unit b, k, m or g (e.g. '512m', '2g') in"
            " [providers.docker]")


def _host_cwd(kernel_type: KernelType, target: LaunchTarget,
              options: LaunchOptions) -> str | None:
    """The folder to mount at ``target.mount_cwd``: the caller's cwd, else ours.

    Without mount_cwd the container has none of this machine's folders, so a cwd (a
    path on this machine) means nothing there: the image's working dir applies.
    """
    if not target.mount_cwd:
        return None
    try:
        host = os.path.abspath(options.cwd or os.getcwd())
    except FileNotFoundError:  # our own cwd was deleted
        host = "(the current directory, deleted)"
    if not os.path.isdir(host):  # Docker would create a missing one, owned by root
        problem = "is not a folder" if os.path.exists(host) else "does not exist"
        raise LaunchFailed(
            f"cannot start {kernel_type.id}: its working folder {host} {problem} on this"
            f" machine ([providers.docker] mount_cwd mounts it at {target.mount_cwd});"
            " pass an existing folder as cwd, or start from one")
    return host


def _create_and_start(client: DockerClient, kernel_type: KernelType, target: LaunchTarget,
                      options: LaunchOptions, inner: dict[str, Any],
                      host_ports: dict[str, int | None], host_cwd: str | None
                      ) -> tuple[Container, Undo]:
    from docker.types import Mount

    argv = substitute_argv([*target.argv, *options.extra_argv],
                           f"{CONNECTION_DIR}/{CONNECTION_NAME}")
    # A structured bind (not a "host:container" string): any path works, ':' included.
    cwd_mount = [Mount(target.mount_cwd, host_cwd, type="bind")] if host_cwd else None
    name, stamp = f"kernel-providers-{secrets.token_hex(6)}", process_stamp()
    # Registered before the container exists (by its name): a process killed right
    # after the create still has its reaper remove it.
    undo = removal_if_orphaned(name)
    try:
        container = client.containers.create(
            target.image, command=argv, detach=True, init=True, name=name,
            environment={**target.env, **options.env},
            labels={MANAGED: "1", KERNEL_ID: kernel_type.id, LAUNCHER: stamp,
                    OWNER: owner_tag(name, stamp, kernel_type.id)},
            ports={f"{CONTAINER_PORTS[p]}/tcp": ("127.0.0.1", host_ports.get(p))
                   for p in PORT_NAMES},
            volumes=_mounts(target.mounts) or None, mounts=cwd_mount,
            working_dir=target.mount_cwd if host_cwd else None,
            mem_limit=target.mem_limit,
            nano_cpus=int(target.cpus * 1e9) if target.cpus else None,
            network=target.network or _isolated_network(client), user=target.user,
        )
    except BaseException:
        undo.cancel()
        raise
    try:
        container.put_archive(CONNECTION_DIR, _connection_tar(inner, target.user))
        container.start()
        container.reload()
    except BaseException:
        with contextlib.suppress(Exception):
            container.remove(force=True)
            undo.cancel()
        raise
    return container, undo


async def _made(make: Any, *args: Any) -> tuple[Container, Undo]:
    """``make(*args)`` (create and start a container) in a thread. Cancelled meanwhile
    (Ctrl-C, SIGTERM), it waits for the thread and removes what it made before the
    cancellation goes on: the thread cannot be stopped, and the reaper would only act
    once this process is gone."""
    made = asyncio.ensure_future(asyncio.to_thread(make, *args))
    try:
        return await asyncio.shield(made)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            container, undo = await made
            await asyncio.to_thread(container.remove, force=True)
            undo.cancel()
        raise


async def start_container(client: DockerClient, kernel_type: KernelType,
                          target: LaunchTarget, options: LaunchOptions) -> DockerLauncher:
    """Create and start the kernel's container; returns once the kernel listens on its
    published ports.

    The connection file goes into the container (0600) through the API, never on a
    command line or in an image layer. Nothing is left behind if this raises.
    """
    from docker.errors import APIError, DockerException, ImageNotFound

    from .images import ensure_image

    _check_target(kernel_type, target)  # before a pull: fail fast
    host_cwd = _host_cwd(kernel_type, target, options)
    inner, dictated = kernel_connection(kernel_type, options, CONTAINER_PORTS, ip="0.0.0.0")
    await ensure_image(client, target.image, target.pull, target.pull_timeout)
    reuse = dictated or options.connection_info or {}
    wanted: dict[str, int | None] = {p: reuse.get(p) for p in PORT_NAMES}  # type: ignore[misc]
    try:
        try:
            container, undo = await _made(
                _create_and_start, client, kernel_type, target, options, inner, wanted,
                host_cwd)
        except APIError as exc:
            if not any(wanted.values()) or not any(t in str(exc) for t in _PORT_TAKEN):
                raise
            if dictated is not None:
                ports = ", ".join(str(wanted[p]) for p in PORT_NAMES)
                raise PortsTaken(
                    f"Docker could not publish {kernel_type.id} on the ports the connection"
                    f" file {options.connection_file} asks for (127.0.0.1: {ports}): one is"
                    f" in use ({exc.explanation or exc}); start the kernel again (the client"
                    " picks new ports) or end what holds the port") from None
            # A restart asked for its old host ports and one was taken: take new ones.
            container, undo = await _made(
                _create_and_start, client, kernel_type, target, options, inner, {}, host_cwd)
    except ImageNotFound:
        raise LaunchFailed(f"image {target.image!r} is not present on the Docker engine;"
                           f" `docker pull {target.image}` or set pull = 'missing'") from None
    except APIError as exc:
        raise LaunchFailed(f"Docker could not start {kernel_type.id}:"
                           f" {exc.explanation or exc}") from None
    except DockerException as exc:  # the SDK refused a setting before asking the engine
        raise LaunchFailed(f"Docker could not start {kernel_type.id}: {exc}; check its"
                           " settings in [providers.docker]") from None
    try:
        published = container.attrs["NetworkSettings"]["Ports"]
        reachable: dict[str, Any] = {**inner, "ip": "127.0.0.1"}
        for name, port in CONTAINER_PORTS.items():
            reachable[name] = int(published[f"{port}/tcp"][0]["HostPort"])
        info, path, owned = client_connection(kernel_type, options, reachable, dictated)
    except Exception as exc:
        logs = ""
        with contextlib.suppress(Exception):
            logs = (await asyncio.to_thread(container.logs)).decode("utf-8", "replace")
        await asyncio.to_thread(container.remove, force=True)
        undo.cancel()
        raise LaunchFailed(f"container of {kernel_type.id} ended or published no ports"
                           f" ({type(exc).__name__}: {exc})", logs) from None
    try:
        launcher = DockerLauncher(kernel_type, info, path, options, client, container, undo)
    except BaseException:
        if owned:
            remove_connection_file(path)
        await asyncio.to_thread(container.remove, force=True)
        undo.cancel()
        raise
    # Docker accepts a connection on a published port at once and drops it while
    # nothing listens in the container. A client that connects in that window loses its
    # iopub subscription until it next reads iopub (`jupyter console` sends code first
    # and waits forever for its output): return only once the kernel listens, as a
    # local kernel's launch returns once its ports are bound.
    await launcher.listening_or_cleaned_up(ready_seconds(options))
    return launcher


def _heartbeat_answers(info: Any) -> bool:
    # Imported here: the protocol (pyzmq) is not needed to list kernels.
    from kernel_providers.sdk import heartbeat_answers

    return heartbeat_answers(info, timeout=1.0)
