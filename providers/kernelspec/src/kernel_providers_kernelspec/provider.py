"""The ``spec`` provider: kernelspec folders, found where Jupyter looks, with its precedence."""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kernel_providers.sdk import (
    KernelLauncher,
    KernelProvider,
    KernelSpec,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    alias_of,
    kernel_dirs_stamp,
    launch_local,
    read_kernel_spec,
    report_problem,
    scan_kernel_dirs,
)

__all__ = ["KernelSpecConfig", "KernelSpecProvider"]


@dataclass
class KernelSpecConfig:
    """``[providers.spec]`` options."""

    #: more folders holding ``<name>/kernel.json``, searched after Jupyter's path
    extra_dirs: list[str] = field(default_factory=list)
    #: kernel names (globs) to leave out, e.g. ``["python2", "test-*"]``
    exclude: list[str] = field(default_factory=list)
    #: offer ipykernel's own ``python3`` kernel when no kernelspec of that name exists
    #: (as Jupyter does)
    native_python: bool = True


def _native_python_spec() -> KernelSpec | None:
    # Jupyter offers ipykernel's own kernel when no "python3" kernelspec is installed.
    found = importlib.util.find_spec("ipykernel")
    if found is None or not found.origin:
        return None
    return KernelSpec(
        name="python3",
        resource_dir=Path(found.origin).parent / "resources",
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name="Python 3 (ipykernel)",
        language="python",
        env={},
        interrupt_mode="signal",
        metadata={"debugger": True},
    )


def _python_argv(argv: list[str]) -> list[str]:
    # As jupyter_client does: a bare "python" means the Python running the manager.
    major, minor = sys.version_info[:2]
    if argv[0] in ("python", f"python{major}", f"python{major}.{minor}"):
        return [sys.executable, *argv[1:]]
    return argv


class KernelSpecProvider(KernelProvider[KernelSpecConfig]):
    """Every kernelspec on Jupyter's data path (``jupyter kernelspec list``), as
    ``spec/<name>``; the first folder on the path wins, as in Jupyter."""

    id: ClassVar[str] = "spec"
    config_class: ClassVar[type[Any] | None] = KernelSpecConfig
    cache_ttl: ClassVar[float | None] = 0  # validated by the folders' mtimes, every time

    def __init__(self) -> None:
        self.config = KernelSpecConfig()
        self._specs: dict[str, KernelSpec] = {}
        self._scanned: tuple[object, dict[str, KernelSpec], list[str]] | None = None

    def kernel_dirs(self) -> list[Path]:
        """Folders searched, in precedence order (Jupyter's path, then ``extra_dirs``)."""
        from jupyter_core.paths import jupyter_path

        return [Path(p) for p in jupyter_path("kernels")] + [
            Path(p).expanduser() for p in self.config.extra_dirs]

    def _scan(self) -> tuple[dict[str, KernelSpec], list[str]]:
        dirs = self.kernel_dirs()
        key = (kernel_dirs_stamp(dirs), tuple(self.config.exclude), self.config.native_python)
        if self._scanned is not None and self._scanned[0] == key:
            return self._scanned[1], self._scanned[2]
        specs, problems = scan_kernel_dirs(dirs, self.config.exclude)
        # Folders `kernel-providers jupyter sync` wrote stand for other providers' kernels.
        specs = {name: spec for name, spec in specs.items() if alias_of(spec) is None}
        if self.config.native_python and "python3" not in specs and not any(
                fnmatch.fnmatch("python3", pat) for pat in self.config.exclude):
            native = _native_python_spec()
            if native is not None:
                specs["python3"] = native
        self._scanned = (key, specs, problems)
        return specs, problems

    def _kernel_type(self, spec: KernelSpec) -> KernelType:
        return KernelType(
            id=f"spec/{spec.name}",
            display_name=spec.display_name,
            language=spec.language,
            provider=self.id,
            metadata={**spec.metadata, "resource_dir": str(spec.resource_dir)},
            resources=spec.resources,
            interrupt_mode=spec.interrupt_mode,  # type: ignore[arg-type]
            parameters=spec.parameters,
        )

    async def find_kernels(self) -> list[KernelType]:
        """Read every kernel.json (off the event loop); report malformed ones."""
        specs, problems = await asyncio.to_thread(self._scan)
        for problem in problems:
            report_problem(problem)
        self._specs = specs
        return [self._kernel_type(spec) for spec in specs.values()]

    def launch_inputs(self, kernel_type: KernelType) -> list[str] | None:
        """The searched folders (a kernelspec added before this one wins) and the
        kernelspec's folder and kernel.json (see the base class)."""
        spec = self._specs.get(kernel_type.name)
        if spec is None or alias_of(spec) is not None:
            return None
        folder = spec.resource_dir
        return [*map(str, self.kernel_dirs()), str(folder), str(folder / "kernel.json")]

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Start the kernelspec's argv as a local process."""
        spec = self.listed(self._specs, kernel_type, kernel_type.name)
        folder = spec.resource_dir
        if spec.name != "python3" or folder.joinpath("kernel.json").exists():
            try:  # re-read: the file may have changed or gone since it was listed
                spec = read_kernel_spec(spec.name, folder)
            except ValueError as exc:
                raise LaunchFailed(f"cannot start kernel {kernel_type.id!r}: {exc}") from None
        strategy = spec.metadata.get("kernel_providers", {}).get("port_strategy")
        return await launch_local(
            kernel_type, _python_argv(spec.argv), options, env=spec.env,
            resource_dir=str(folder), port_strategy=strategy)
