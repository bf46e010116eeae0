"""The ``spec`` provider: kernelspec folders, found where Jupyter looks, with its precedence."""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kernel_providers import (
    KernelLauncher,
    KernelProvider,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    launch_local,
    report_problem,
)

__all__ = ["KernelSpec", "KernelSpecConfig", "KernelSpecProvider", "read_kernel_spec"]

_VALID_NAME = re.compile(r"^[a-z0-9._-]+$")
_RESOURCE_FILES = ("kernel.js", "kernel.css")


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


@dataclass(frozen=True)
class KernelSpec:
    """A validated kernel.json and the folder it lives in."""

    name: str
    resource_dir: Path
    argv: list[str]
    display_name: str
    language: str
    env: dict[str, str]
    interrupt_mode: str
    metadata: dict[str, Any]

    @property
    def resources(self) -> dict[str, str]:
        """Logos, kernel.js and kernel.css shipped in the folder, by Jupyter's names."""
        found = {}
        try:
            entries = sorted(self.resource_dir.iterdir())
        except OSError:
            return {}
        for path in entries:
            if path.name.startswith("logo-"):
                key = "logo-svg" if path.suffix == ".svg" else path.stem
                found[key] = str(path)
            elif path.name in _RESOURCE_FILES:
                found[path.name] = str(path)
        return found


def _expect(spec: dict[str, Any], key: str, kind: type, default: Any, where: Path) -> Any:
    value = spec.get(key, default)
    if not isinstance(value, kind):
        raise ValueError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def read_kernel_spec(name: str, folder: Path) -> KernelSpec:
    """Read and validate ``folder/kernel.json``; ``ValueError`` says what is wrong."""
    path = folder / "kernel.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: must hold a JSON object")
    argv = _expect(spec, "argv", list, None, path) if "argv" in spec else None
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"{path}: 'argv' must be a non-empty list of strings")
    env = _expect(spec, "env", dict, {}, path)
    if not all(isinstance(v, str) for v in env.values()):
        raise ValueError(f"{path}: every value of 'env' must be a string")
    mode = _expect(spec, "interrupt_mode", str, "signal", path)
    if mode not in ("signal", "message"):
        raise ValueError(f"{path}: 'interrupt_mode' must be 'signal' or 'message'")
    return KernelSpec(
        name=name,
        resource_dir=folder,
        argv=argv,
        display_name=_expect(spec, "display_name", str, name, path),
        language=_expect(spec, "language", str, "", path),
        env=env,
        interrupt_mode=mode,
        metadata=_expect(spec, "metadata", dict, {}, path),
    )


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


class KernelSpecProvider(KernelProvider):
    """Every kernelspec on Jupyter's data path (``jupyter kernelspec list``), as
    ``spec/<name>``; the first folder on the path wins, as in Jupyter."""

    id: ClassVar[str] = "spec"
    config_class: ClassVar[type[Any] | None] = KernelSpecConfig

    def __init__(self) -> None:
        self.config = KernelSpecConfig()
        self._specs: dict[str, KernelSpec] = {}

    def kernel_dirs(self) -> list[Path]:
        """Folders searched, in precedence order (Jupyter's path, then ``extra_dirs``)."""
        from jupyter_core.paths import jupyter_path

        return [Path(p) for p in jupyter_path("kernels")] + [
            Path(p).expanduser() for p in self.config.extra_dirs]

    def _scan(self) -> tuple[dict[str, KernelSpec], list[str]]:
        specs: dict[str, KernelSpec] = {}
        problems: list[str] = []
        for directory in self.kernel_dirs():
            try:
                folders = sorted(p for p in directory.iterdir() if p.is_dir())
            except OSError:
                continue  # most of Jupyter's path does not exist on a given machine
            for folder in folders:
                name = folder.name.lower()
                if name in specs or not (folder / "kernel.json").is_file():
                    continue
                if any(fnmatch.fnmatch(name, pat) for pat in self.config.exclude):
                    continue
                if not _VALID_NAME.match(name):
                    problems.append(f"{folder}: kernel name {folder.name!r} is not valid"
                                    " (letters, digits, '.', '_' and '-' only); skipped")
                    continue
                try:
                    specs[name] = read_kernel_spec(name, folder)
                except ValueError as exc:
                    problems.append(f"{exc}; kernel skipped")
                    specs[name] = None  # type: ignore[assignment]  # shadows lower folders
        specs = {k: v for k, v in specs.items() if v is not None}
        if self.config.native_python and "python3" not in specs and not any(
                fnmatch.fnmatch("python3", pat) for pat in self.config.exclude):
            native = _native_python_spec()
            if native is not None:
                specs["python3"] = native
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
        )

    async def find_kernels(self) -> list[KernelType]:
        """Read every kernel.json (off the event loop); report malformed ones."""
        specs, problems = await asyncio.to_thread(self._scan)
        for problem in problems:
            report_problem(problem)
        self._specs = specs
        return [self._kernel_type(spec) for spec in specs.values()]

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Start the kernelspec's argv as a local process."""
        spec = self._specs.get(kernel_type.name)
        if spec is None:
            raise LaunchFailed(f"kernelspec {kernel_type.name!r} is no longer installed;"
                               " run `kernel-providers list --refresh`")
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
