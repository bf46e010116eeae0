"""The ``ssh`` provider: every kernelspec of every configured host, ``ssh/<host>/<spec>``."""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from kernel_providers.sdk import (
    KernelLauncher,
    KernelProvider,
    KernelType,
    LaunchOptions,
    ProviderUnavailable,
    report_problem,
)

from .config import SSHConfig
from .hosts import HostPool
from .launcher import start_remote_kernel
from .remote import DISCOVERY, bootstrap_command, first_lines

__all__ = ["SSHProvider"]


class SSHProvider(KernelProvider[SSHConfig]):
    """Kernels on remote hosts: one SSH round trip per host lists its kernelspecs; a
    kernel runs under a remote supervisor, its channels forwarded to local ports."""

    id: ClassVar[str] = "ssh"
    config_class: ClassVar[type[Any] | None] = SSHConfig

    def __init__(self) -> None:
        self.config = SSHConfig()
        self._pool: HostPool | None = None
        self._specs: dict[str, tuple[str, dict[str, Any], str]] = {}

    @property
    def pool(self) -> HostPool:
        """The per-host connections (made with the current config)."""
        if self._pool is None or self._pool.config is not self.config:
            self._pool = HostPool(self.config)
        return self._pool

    async def _host_kernels(self, host: str) -> list[KernelType]:
        try:
            return await self._ask_host(host)
        finally:
            await self.pool.close_idle(host)  # kept open only while kernels use it

    async def _ask_host(self, host: str) -> list[KernelType]:
        conn = await self.pool.connect(host)
        try:
            result = await asyncio.wait_for(
                conn.run(bootstrap_command(self.config.python), input=first_lines(DISCOVERY),
                         check=False), self.config.connect_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise ProviderUnavailable(f"ssh host {host!r} did not list its kernels within"
                                      f" {self.config.connect_timeout:g} s") from None
        try:
            found = json.loads(str(result.stdout))
        except ValueError:
            raise ProviderUnavailable(
                f"ssh host {host!r}: {self.config.python} could not list kernels (exit"
                f" {result.exit_status}): {str(result.stderr).strip()[-300:]}; is Python 3"
                " installed there? set python in [providers.ssh]") from None
        kernels = []
        for name, item in sorted(found.get("kernelspecs", {}).items()):
            spec = item.get("spec") or {}
            argv = spec.get("argv")
            if not isinstance(argv, list) or not argv:
                report_problem(f"ssh host {host!r}: kernelspec {name!r} has no argv; skipped")
                continue
            kernel = KernelType(
                id=f"ssh/{host}/{name}",
                display_name=f"{spec.get('display_name', name)} (ssh: {host})",
                language=str(spec.get("language", "")), provider=self.id,
                metadata={**(spec.get("metadata") or {}), "host": host,
                          "remote_hostname": found.get("hostname"),
                          "remote_resource_dir": item.get("resource_dir", "")},
                interrupt_mode=spec.get("interrupt_mode", "signal"))
            self._specs[kernel.id] = (host, spec, item.get("resource_dir", ""))
            kernels.append(kernel)
        return kernels

    async def find_kernels(self) -> list[KernelType]:
        """All hosts concurrently, each under the connect timeout; an unreachable host is
        reported and the others still list."""
        results = await asyncio.gather(*(self._host_kernels(h) for h in self.config.hosts),
                                       return_exceptions=True)
        kernels: list[KernelType] = []
        for host, result in zip(self.config.hosts, results, strict=True):
            if isinstance(result, BaseException):
                report_problem(str(result) if isinstance(result, ProviderUnavailable)
                               else f"ssh host {host!r}: {type(result).__name__}: {result}")
            else:
                kernels += result
        if self.config.hosts and not kernels and all(
                isinstance(r, BaseException) for r in results):
            raise ProviderUnavailable("no configured ssh host answered (see the problems)")
        return kernels

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Start the kernel on its host under the supervisor and forward its ports."""
        known = self.listed(self._specs, kernel_type)
        host, spec, resource_dir = known
        return await start_remote_kernel(self.pool, host, kernel_type, list(spec["argv"]),
                                         dict(spec.get("env") or {}), resource_dir, options)
