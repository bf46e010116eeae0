"""The ``venv`` provider: virtualenvs (virtualenvwrapper, pipenv, poetry, ``~/.venvs``),
projects' environments (uv, PDM, poetry and hatch, in the project or where the tool keeps
them), pyenv versions and uv-managed Pythons, found by their files alone."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .environments import (
    Environment,
    Location,
    env_kernelspecs,
    find_python,
    folder_entries,
    has_package,
    is_venv,
    looks_like,
    site_packages,
)
from .projects import ProjectTools, ProjectWalk, project_venvs
from .provider import EnvironmentProvider

__all__ = ["VenvConfig", "VenvProvider", "default_venv_dirs", "probe_venv"]


@dataclass
class VenvConfig:
    """``[providers.venv]`` options."""

    #: folders holding virtualenvs; ``None`` means the usual places (see the docs)
    dirs: list[str] | None = None
    #: folders holding projects (a pyproject.toml, pixi.toml or .venv), searched 4 deep
    project_dirs: list[str] = field(default_factory=list)
    #: environment names or paths (globs) to leave out
    exclude: list[str] = field(default_factory=list)
    #: offer the environment of the project enclosing the current directory
    include_cwd: bool = True


def _env_path(var: str, default: str) -> Path:
    return Path(os.path.expanduser(os.environ.get(var) or default))


def default_venv_dirs() -> list[tuple[Path, str]]:
    """(folder, kind) pairs searched when ``dirs`` is not configured, in name order:
    virtualenvwrapper, ~/.venvs, pipenv, poetry, then pyenv versions and uv's Pythons."""
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
        (_env_path("UV_PYTHON_INSTALL_DIR", str(xdg_data / "uv" / "python")), "uv-python"),
    ]


def _watched(prefix: Path) -> list[Path]:
    return [prefix / "pyvenv.cfg", site_packages(prefix)[0] or prefix / "lib",
            prefix / "share" / "jupyter" / "kernels"]


def probe_venv(prefix: Path) -> Environment:
    """A virtualenv or a plain interpreter's prefix, by its files."""
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


class VenvProvider(EnvironmentProvider[VenvConfig]):
    """Every virtualenv (``pyvenv.cfg``), project environment, pyenv version and uv
    Python with ipykernel installed, as ``venv/<name>``; kernelspecs inside them as
    ``venv/<name>/<spec>``."""

    id: ClassVar[str] = "venv"
    config_class: ClassVar[type[Any] | None] = VenvConfig
    probe = staticmethod(probe_venv)
    watched = staticmethod(_watched)

    def __init__(self) -> None:
        super().__init__(VenvConfig())
        self.walk = ProjectWalk(self.id)

    def search_dirs(self) -> list[tuple[Path, str]]:
        """(folder, kind) pairs searched for environments, in name-precedence order."""
        if self.config.dirs is None:
            return default_venv_dirs()
        return [(Path(os.path.expanduser(d)), "venv") for d in self.config.dirs]

    def project_roots(self) -> list[Path]:
        """The configured project folders (the pixi provider searches them too)."""
        return [Path(os.path.expanduser(d)) for d in self.config.project_dirs]

    def projects(self) -> list[Path]:
        """Every project: the one enclosing the working directory first, then those under
        the project folders."""
        here = self.here if self.config.include_cwd else None
        under = self.walk.projects(self.project_roots())
        return [*([here] if here is not None else []), *(p for p in under if p != here)]

    def locations(self) -> tuple[list[Location], list[Path]]:
        claims: list[Location] = []
        inputs: list[Path] = []
        exclude = self.config.exclude
        for directory, kind in self.search_dirs():
            inputs.append(directory)
            for child, prefix in folder_entries(directory):
                if looks_like(is_venv, prefix, child, exclude, self.id):
                    claims.append(Location(child, prefix, "venv"))
                elif kind in ("pyenv", "uv-python") and looks_like(
                        find_python, prefix, child, exclude, self.id):
                    claims.append(Location(child, prefix, kind, "interpreter"))
        tools = ProjectTools()
        for project in self.projects():
            inputs.append(project)  # an environment appears there, or goes
            claims += project_venvs(project, tools)
        inputs += [*self.walk.walked, *tools.read]
        return claims, inputs
