"""The ``docker`` provider: labelled and configured images, a container per kernel."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from kernel_providers.sdk import (
    ConfigError,
    ConnectionInfo,
    KernelLauncher,
    KernelProvider,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    claim,
    claimed,
    report_problem,
    stamp_alive,
    verify_tag,
)

from .config import IPYKERNEL_ARGV, PULL_POLICIES, DockerConfig, ImageEntry, parse_images
from .images import image_kernel_type, label_spec
from .launcher import (
    KERNEL_ID,
    LAUNCHER,
    MANAGED,
    OWNER,
    LaunchTarget,
    PortsTaken,
    start_container,
)

if TYPE_CHECKING:
    from docker import DockerClient

__all__ = ["DockerProvider"]


@dataclass
class _Kernel:
    kernel_type: KernelType
    target: LaunchTarget


class DockerProvider(KernelProvider[DockerConfig]):
    """Every local image labelled ``io.jupyter.kernelspec`` and every configured image,
    as ``docker/<image>``; each kernel runs in a container of its own."""

    id: ClassVar[str] = "docker"
    config_class: ClassVar[type[Any] | None] = DockerConfig

    def __init__(self) -> None:
        self.config = DockerConfig()
        self._client: DockerClient | None = None
        self._kernels: dict[str, _Kernel] = {}

    def client(self) -> DockerClient:
        """The engine client (connected on first use; ProviderUnavailable if it can't)."""
        if self._client is None:
            from .engine import connect

            self._client = connect()
        return self._client

    def _target(self, image: str, argv: list[str], env: dict[str, str],
                entry: Any = None) -> LaunchTarget:
        c = self.config
        pull = (entry.pull if entry is not None and entry.pull else c.pull)
        if pull not in PULL_POLICIES:
            raise ConfigError(f"[providers.docker] pull must be one of {PULL_POLICIES}")
        mounts = [*c.mounts, *(entry.mounts if entry is not None else [])]

        def pick(name: str) -> Any:
            value = getattr(entry, name, None) if entry is not None else None
            return value if value is not None else getattr(c, name)

        return LaunchTarget(
            image=image, argv=argv, env={**c.env, **env}, mounts=mounts,
            mount_cwd=c.mount_cwd, mem_limit=pick("mem_limit"), cpus=pick("cpus"),
            network=pick("network"), user=pick("user"), pull=pull,
            pull_timeout=c.pull_timeout)

    def _scan(self) -> list[KernelType]:
        from docker.errors import ImageNotFound

        client = self.client()
        kernels: dict[str, _Kernel] = {}
        if self.config.labelled_images:
            for image in client.images.list(filters={"label": "io.jupyter.kernelspec"}):
                for tag in image.tags:
                    try:
                        spec = label_spec(image, tag)
                    except ValueError as exc:
                        report_problem(f"{exc}; image skipped")
                        continue
                    assert spec is not None
                    kernel = image_kernel_type(tag, tag, spec.display_name, spec.language,
                                               spec.interrupt_mode, spec.metadata, image.id)
                    kernels[kernel.id] = self._with_parameters(
                        kernel, self._target(tag, spec.argv, spec.env), None)
        for entry in parse_images(self.config.images, "[providers.docker]"):
            spec, image_id = None, None
            try:
                image = client.images.get(entry.image)
                image_id = image.id
                spec = label_spec(image, entry.image)
            except ImageNotFound:
                if (entry.pull or self.config.pull) == "never":
                    report_problem(f"image {entry.image!r} is not present on the Docker"
                                   f" engine: `docker pull {entry.image}`, or set pull ="
                                   " 'missing' to pull it at launch; not listed")
                    continue
            except ValueError:
                spec = None  # a bad label: the entry's own settings still apply
            argv = entry.argv or (spec.argv if spec else IPYKERNEL_ARGV)
            kernel = image_kernel_type(
                entry.name, entry.image,
                entry.display_name or (spec.display_name if spec else entry.image),
                entry.language if entry.argv or not spec else spec.language,
                entry.interrupt_mode, {"present": image_id is not None}, image_id)
            kernels[kernel.id] = self._with_parameters(kernel, self._target(
                entry.image, argv, {**(spec.env if spec else {}), **entry.env}, entry), entry)
        self._kernels = kernels
        return [k.kernel_type for k in kernels.values()]

    def _with_parameters(self, kernel: KernelType, target: LaunchTarget,
                         entry: ImageEntry | None) -> _Kernel:
        """The kernel type with the parameters it honours (see parameters.py)."""
        from .parameters import declared_parameters

        schema = declared_parameters(self.config, target, entry)
        return _Kernel(dataclasses.replace(kernel, parameters=schema), target)

    async def find_kernels(self) -> list[KernelType]:
        """Images from the engine (labelled) and from the configuration."""
        return await asyncio.to_thread(self._scan)

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Start the kernel in a new container, its ports published on 127.0.0.1."""
        from .parameters import apply_parameters

        kernel = self.listed(self._kernels, kernel_type)
        target = apply_parameters(kernel_type.id, self.config, kernel.target,
                                  options.parameters)
        client = await asyncio.to_thread(self.client)
        try:
            return await start_container(client, kernel_type, target, options)
        except PortsTaken:
            # A container of a launcher that died (a SIGKILLed shim the client restarts
            # on the same ports) may hold them: remove orphans, then try once more.
            if not await self.cleanup_orphans():
                raise
            return await start_container(client, kernel_type, target, options)

    async def attach(self, kernel_type: KernelType, state: dict[str, Any],
                     connection_info: ConnectionInfo) -> KernelLauncher:
        """Re-attach to a running container (``state`` from DockerLauncher.attach_state)."""
        from docker.errors import NotFound

        from kernel_providers.sdk import write_connection_file

        from .launcher import DockerLauncher

        client = await asyncio.to_thread(self.client)
        container_id = str(state.get("container_id", ""))
        try:
            container = await asyncio.to_thread(client.containers.get, container_id)
        except NotFound:
            raise LaunchFailed(f"container {container_id[:12]} of {kernel_type.id} is gone;"
                               " start the kernel again") from None
        if container.status != "running":
            raise LaunchFailed(f"container {container_id[:12]} of {kernel_type.id} is"
                               f" {container.status}; start the kernel again")
        path = write_connection_file(connection_info)
        launcher = DockerLauncher(kernel_type, connection_info, str(path), LaunchOptions(),
                                  client, container)
        # Its labels name the launcher that started it: say that we own it now.
        launcher.hold_claim(claim(f"docker:{container.id}"))
        return launcher

    async def cleanup_orphans(self) -> list[str]:
        """Remove containers of ours whose launching process (on this host) is gone."""
        return await asyncio.to_thread(self._remove_orphans)

    def _remove_orphans(self) -> list[str]:
        from docker.errors import NotFound

        removed = []
        for container in self.client().containers.list(all=True,
                                                        filters={"label": f"{MANAGED}=1"}):
            if not _orphan_of_ours(container):
                continue
            with contextlib.suppress(NotFound):
                container.remove(force=True)
                kernel_id = container.labels.get(KERNEL_ID, "?")
                removed.append(f"container {container.short_id} ({kernel_id})")
        return removed


def _orphan_of_ours(container: Any) -> bool:
    """Whether ``container`` was launched by this user on this machine (its owner tag
    verifies: not a look-alike, not another machine's) and nobody owns it any more: its
    launcher is gone and no live process re-attached to it."""
    labels = container.labels
    stamp, kernel_id = labels.get(LAUNCHER, ""), labels.get(KERNEL_ID, "")
    if not verify_tag(labels.get(OWNER, ""), container.name, stamp, kernel_id):
        return False
    return stamp_alive(stamp) is False and not claimed(f"docker:{container.id}")
