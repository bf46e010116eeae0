"""An example kernel-providers plugin: a kernel per configured Python interpreter."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kernel_providers import (
    KernelLauncher,
    KernelProvider,
    KernelType,
    LaunchOptions,
    hookimpl,
    launch_local,
    report_problem,
)


@dataclass
class ExampleConfig:
    """``[providers.example]``: the interpreters to offer (they need ipykernel)."""

    pythons: list[str] = field(default_factory=lambda: [sys.executable])


class ExampleProvider(KernelProvider):
    """One kernel per configured interpreter, as ``example/<name>``."""

    id = "example"
    config_class = ExampleConfig

    def __init__(self) -> None:
        self.config = ExampleConfig()

    def _pythons(self) -> dict[str, str]:
        found = {}
        for python in self.config.pythons:
            if not Path(python).exists():
                report_problem(f"{python}: no such interpreter; skipped")
                continue
            name = re.sub(r"[^a-z0-9.-]+", "-", Path(python).name.lower())
            found[name if name not in found else f"{name}-{len(found)}"] = python
        return found

    async def find_kernels(self) -> list[KernelType]:
        """A kernel type per existing interpreter (file checks run off the event loop)."""
        pythons = await asyncio.to_thread(self._pythons)
        return [KernelType(id=f"example/{name}", display_name=f"Python ({path})",
                           language="python", provider=self.id, metadata={"python": path})
                for name, path in pythons.items()]

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Start ipykernel with that interpreter; the core does the rest."""
        argv = [kernel_type.metadata["python"], "-m", "ipykernel_launcher",
                "-f", "{connection_file}"]
        return await launch_local(kernel_type, argv, options)


@hookimpl
def register_kernel_providers() -> Iterator[KernelProvider]:
    """Yield the example provider."""
    yield ExampleProvider()
