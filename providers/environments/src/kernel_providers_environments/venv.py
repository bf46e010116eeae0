"""The ``venv`` provider: virtualenvs (virtualenvwrapper, pipenv, poetry, uv, project
``.venv`` folders) and pyenv versions, found by their files alone."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kernel_providers.sdk import (
    KernelLauncher,
    KernelProvider,
    KernelType,
    LaunchOptions,
)

from .activation import venv_activation
from .environments import (
    Environment,
    Known,
    ProbeCache,
    env_kernelspecs,
    find_python,
    folder_entries,
    has_package,
    launch_in_environment,
    launch_inputs,
    list_kernels,
    looks_like,
    site_packages,
    unique_names,
)

__all__ = ["VenvConfig", "VenvProvider", "default_venv_dirs"]


@dataclass
class VenvConfig:
    """``[providers.venv]`` options."""

    #: folders holding virtualenvs; ``None`` means the usual places (see the docs)
    dirs: list[str] | None = None
    #: project folders whose ``.venv`` is offered (each folder, and its subfolders)
    project_dirs: list[str] = field(default_factory=list)
    #: environment names or paths (globs) to leave out
    exclude: list[str] = field(default_factory=list)
    #: offer the ``.venv`` of the current directory
    include_cwd: bool = True


def _env_path(var: str, default: str) -> Path:
    return Path(os.path.expanduser(os.environ.get(var) or default))


def default_venv_dirs() -> list[tuple[Path, str]]:
    """(folder, kind) pairs searched when ``dirs`` is not configured, in name order:
    virtualenvwrapper, ~/.venvs, pipenv, poetry, then pyenv versions."""
    xdg_data = _env_path("XDG_DATA_HOME", "~/.local/share")
    if sys.platform == "darwin":
        poetry = Path.home() / "Library" / "Caches" / "pypoetry" / "virtualenvs"
    else:
        poetry = _env_path("XDG_CACHE_HOME", "~/.cache") / "pypoetry" / "virtualenvs"
    return [
        (_env_path("WORKON_HOME", "~/.virtualenvs"), "venv"),
        (Path.home() / ".venvs", "venv"),
        (xdg_data / "virtualenvs", "venv"),  # pipenv
        (_env_path("POETRY_VIRTUALENVS_PATH", str(poetry)), "venv"),
        (_env_path("PYENV_ROOT", "~/.pyenv") / "versions", "pyenv"),
    ]


def _is_venv(prefix: Path) -> bool:
    return (prefix / "pyvenv.cfg").is_file()


def _has_venv(project: Path) -> bool:
    return _is_venv(project / ".venv")


class VenvProvider(KernelProvider[VenvConfig]):
    """Every virtualenv (``pyvenv.cfg``) and pyenv version with ipykernel installed, as
    ``venv/<name>``; kernelspecs inside them as ``venv/<name>/<spec>``."""

    id: ClassVar[str] = "venv"
    config_class: ClassVar[type[Any] | None] = VenvConfig
    cache_ttl: ClassVar[float | None] = 0  # validated by mtimes, cheaply, every time

    def __init__(self) -> None:
        self.config = VenvConfig()
        self._probes = ProbeCache(self._watched, self._probe, self.id)
        self._kernels: Known = {}
        self._listed: list[Path] = []  # folders the last scan listed

    def search_dirs(self) -> list[tuple[Path, str]]:
        """(folder, kind) pairs searched for environments, in name-precedence order."""
        if self.config.dirs is None:
            return default_venv_dirs()
        return [(Path(os.path.expanduser(d)), "venv") for d in self.config.dirs]

    def _claims(self) -> list[tuple[str, Path, str]]:
        claims: list[tuple[str, Path, str]] = []
        listed = [directory for directory, _ in self.search_dirs()]
        exclude = self.config.exclude
        for directory, kind in self.search_dirs():
            for child, prefix in folder_entries(directory):
                if looks_like(_is_venv, prefix, child, exclude, self.id):
                    claims.append((child, prefix, "venv"))
                elif kind == "pyenv" and looks_like(find_python, prefix, child, exclude,
                                                    self.id):
                    claims.append((child, prefix, "pyenv"))
        projects = [Path.cwd()] if self.config.include_cwd else []
        for folder in self.config.project_dirs:
            root = Path(os.path.expanduser(folder))
            projects.append(root)
            listed.append(root)
            projects += [p for name, p in folder_entries(root)
                         if looks_like(Path.is_dir, p, name, exclude, self.id)]
        for project in projects:
            listed.append(project / ".venv" / "pyvenv.cfg")  # one appears, or goes
            if looks_like(_has_venv, project, project.name, exclude, self.id):
                claims.append((project.name, project / ".venv", "project"))
        self._listed = listed
        return claims

    @staticmethod
    def _watched(prefix: Path) -> list[Path]:
        return [prefix / "pyvenv.cfg", site_packages(prefix)[0] or prefix / "lib",
                prefix / "share" / "jupyter" / "kernels"]

    @staticmethod
    def _probe(prefix: Path) -> Environment:
        problems: list[str] = []
        version = None
        cfg = prefix / "pyvenv.cfg"
        kind = "venv" if cfg.exists() else "pyenv"
        if kind == "venv":
            try:  # an OSError goes to ProbeCache.get: reported, and probed again next time
                for line in cfg.read_text(encoding="utf-8").splitlines():
                    key, _, value = line.partition("=")
                    if key.strip() in ("version", "version_info") and value.strip():
                        version = ".".join(value.strip().split(".")[:2])
            except UnicodeDecodeError as exc:
                return Environment(prefix, kind, problems=(
                    f"{cfg}: unreadable ({exc}); environment skipped",))
        sp, sp_version = site_packages(prefix)
        python = find_python(prefix)
        has_ipykernel = has_package(sp, "ipykernel")
        if python is None:
            problems.append(f"{prefix}: its interpreter is missing (the Python it was"
                            " created from was removed?); recreate it (`python3 -m venv"
                            f" --clear {prefix}`, then reinstall) or exclude it; skipped")
            has_ipykernel = False
        specs, spec_problems = env_kernelspecs(prefix)
        return Environment(prefix, kind, python, version or sp_version, has_ipykernel,
                           specs, {}, tuple(problems + spec_problems), bool(spec_problems))

    def _scan(self) -> list[KernelType]:
        claims = self._claims()
        kinds = {prefix: kind for _, prefix, kind in claims}
        names = unique_names((name, prefix) for name, prefix, _ in claims)
        kernels, known = list_kernels(names, self._probes, self.config.exclude, self.id, kinds)
        self._kernels = known  # swapped whole: concurrent launches never see it half built
        return kernels

    async def find_kernels(self) -> list[KernelType]:
        """Virtualenvs and pyenv versions, probed by their files: no Python is started."""
        return await asyncio.to_thread(self._scan)

    def launch_inputs(self, kernel_type: KernelType) -> list[str] | None:
        """The searched folders, and the environment's files (see the base class)."""
        return launch_inputs(self._kernels, kernel_type.id, self._listed, self._probes)

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Start the kernel with the environment activated (PATH, VIRTUAL_ENV)."""
        env, _, spec_name = self.listed(self._kernels, kernel_type)
        activation = venv_activation(env.prefix, is_venv=env.kind != "pyenv")
        return await launch_in_environment(kernel_type, env, spec_name, options, activation)
