"""The ``example`` provider: one ipykernel kernel per configured Python interpreter."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kernel_providers.sdk import (
    KernelLauncher,
    KernelProvider,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    hookimpl,
    launch_local,
    report_problem,
)


@dataclass
class ExampleConfig:
    """``[providers.example]``: the interpreters to offer (each needs ipykernel)."""

    pythons: list[str] = field(default_factory=lambda: [sys.executable])


class ExampleProvider(KernelProvider[ExampleConfig]):
    """One kernel per configured interpreter, as ``example/<interpreter file name>``."""

    id: ClassVar[str] = "example"
    config_class: ClassVar[type[Any] | None] = ExampleConfig

    def __init__(self) -> None:
        self.config = ExampleConfig()  # replaced by the finder with the validated table

    def _pythons(self) -> dict[str, str]:
        """Kernel name -> interpreter, for the interpreters that exist (blocking I/O)."""
        found: dict[str, str] = {}
        for python in dict.fromkeys(str(Path(p).expanduser()) for p in self.config.pythons):
            if not Path(python).is_file():
                report_problem(f"{python}: no such interpreter; skipped")
                continue
            name = re.sub(r"[^a-z0-9._-]+", "-", Path(python).name.lower())
            if name in found:  # same file name elsewhere: a suffix made from the path
                name += "-" + hashlib.sha256(python.encode()).hexdigest()[:8]
            found[name] = python
        return found

    async def find_kernels(self) -> list[KernelType]:
        """A kernel type per existing interpreter; the file checks run off the event loop."""
        pythons = await asyncio.to_thread(self._pythons)
        return [KernelType(id=f"example/{name}", display_name=f"Python ({python})",
                           language="python", provider=self.id, metadata={"python": python})
                for name, python in pythons.items()]

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Start ipykernel with the kernel type's interpreter; the core does the rest."""
        python = kernel_type.metadata["python"]
        if not Path(python).is_file():
            raise LaunchFailed(f"cannot start {kernel_type.id!r}: {python} is gone; fix"
                               " [providers.example] pythons in the configuration file")
        argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        return await launch_local(kernel_type, argv, options)


@hookimpl
def register_kernel_providers() -> Iterator[ExampleProvider]:
    """Yield the example provider (the ``kernel_providers`` entry point names this module)."""
    yield ExampleProvider()
