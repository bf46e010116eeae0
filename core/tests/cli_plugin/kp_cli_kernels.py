"""The provider the CLI tests (core/tests/test_cli.py) start their kernels with, installed
as the fake distribution kp-cli-kernels 1.0 (this folder goes on the command's PYTHONPATH),
so the core's command is tested through a real entry-point plugin with no provider
distribution installed.

Its kernels are the kernel.json folders in ``$KP_CLI_KERNELS``, as ``kp/<name>``, read with
the core's kernelspec helpers (malformed ones are reported as problems) and started as
local processes; ``[providers.kp] exclude`` leaves names (globs) out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kernel_providers.sdk import (
    KernelLauncher,
    KernelProvider,
    KernelSpec,
    KernelType,
    LaunchOptions,
    hookimpl,
    launch_local,
    report_problem,
    scan_kernel_dirs,
)


@dataclass
class CliKernelsConfig:
    """``[providers.kp]`` options."""

    exclude: list[str] = field(default_factory=list)


class CliKernelsProvider(KernelProvider[CliKernelsConfig]):
    """The kernelspecs in ``$KP_CLI_KERNELS``."""

    id: ClassVar[str] = "kp"
    config_class: ClassVar[type[Any] | None] = CliKernelsConfig

    def __init__(self) -> None:
        self.config = CliKernelsConfig()
        self._specs: dict[str, KernelSpec] = {}

    async def find_kernels(self) -> list[KernelType]:
        folder = Path(os.environ["KP_CLI_KERNELS"])
        self._specs, problems = scan_kernel_dirs([folder], self.config.exclude)
        for problem in problems:
            report_problem(problem)
        return [KernelType(id=f"kp/{spec.name}", display_name=spec.display_name,
                           language=spec.language, provider=self.id,
                           metadata={"resource_dir": str(spec.resource_dir)},
                           interrupt_mode=spec.interrupt_mode)  # type: ignore[arg-type]
                for spec in self._specs.values()]

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        spec = self.listed(self._specs, kernel_type, kernel_type.name)
        return await launch_local(kernel_type, spec.argv, options, env=spec.env,
                                  resource_dir=str(spec.resource_dir))


@hookimpl
def register_kernel_providers() -> Iterator[KernelProvider[Any]]:
    yield CliKernelsProvider()
