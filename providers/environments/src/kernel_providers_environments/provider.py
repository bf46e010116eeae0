"""What the conda, venv and pixi providers share: a provider is its kinds' finders
(``locations``) and a probe; listing, naming, marking the working directory's project
and launching are done here, once, for every kind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar, TypeVar

from kernel_providers.sdk import KernelLauncher, KernelProvider, KernelType, LaunchOptions

from .environments import (
    Environment,
    Known,
    Location,
    ProbeCache,
    launch_in_environment,
    launch_inputs,
    list_kernels,
)
from .projects import enclosing_project

__all__ = ["EnvironmentProvider"]

C = TypeVar("C")


class EnvironmentProvider(KernelProvider[C]):
    """Environments found by ``locations`` (in a thread: file reads only), probed with
    ``probe`` (validated by the mtimes of ``watched``), each kernel started activated
    as its kind's tool activates it."""

    cache_ttl: ClassVar[float | None] = 0  # validated by mtimes, cheaply, every time

    @staticmethod
    def probe(prefix: Path) -> Environment:
        """Read the environment folder ``prefix`` (no Python started)."""
        raise NotImplementedError

    @staticmethod
    def watched(prefix: Path) -> list[Path]:
        """The paths whose mtimes validate the probe of ``prefix``."""
        raise NotImplementedError

    def __init__(self, config: C) -> None:
        self.config = config
        self._probes = ProbeCache(type(self).watched, type(self).probe, self.id)
        self._kernels: Known = {}
        self._inputs: list[Path] = []  # what the last listing read, besides environments

    def locations(self) -> tuple[list[Location], list[Path]]:
        """The environments of this provider's kinds, in name-precedence order, and the
        folders and files read to find them (a change there is a change of listing)."""
        raise NotImplementedError

    def _scan(self) -> list[KernelType]:
        claims, inputs = self.locations()
        exclude: list[str] = getattr(self.config, "exclude", [])
        kernels, known = list_kernels(claims, self._probes, exclude, self.id,
                                      enclosing_project(Path.cwd()))
        self._inputs = inputs
        self._kernels = known  # swapped whole: concurrent launches never see it half built
        return kernels

    async def find_kernels(self) -> list[KernelType]:
        """The environments of this provider's kinds, probed by their files: no Python
        is started. Those of the working directory's project are marked
        ``"project": true``; those without ipykernel are not launchable (``list --all``
        shows them with the command that installs it)."""
        return await asyncio.to_thread(self._scan)

    def launch_inputs(self, kernel_type: KernelType) -> list[str] | None:
        """What the listing read, and the environment's files (see the base class)."""
        return launch_inputs(self._kernels, kernel_type.id, self._inputs, self._probes)

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Start the kernel activated in its environment, as its tool would."""
        location, env, spec_name = self.listed(self._kernels, kernel_type)
        return await launch_in_environment(kernel_type, location, env, spec_name, options)
