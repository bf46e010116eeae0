"""The ``pixi`` provider: the environments of pixi projects (``.pixi/envs/<env>``, conda
prefixes) as ``pixi/<project>`` and ``pixi/<project>:<env>``, activated as ``pixi shell``
does (its variables, the manifest's activation env and scripts), and pixi's global
environments (``~/.pixi/envs/<name>``) as ``pixi/<name>``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .conda import is_conda, probe_conda, watched_conda
from .environments import Location, folder_entries, looks_like
from .projects import ProjectWalk
from .provider import EnvironmentProvider

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = ["PixiConfig", "PixiManifest", "PixiProvider", "manifest_path"]


@dataclass
class PixiConfig:
    """``[providers.pixi]`` options."""

    #: folders holding pixi projects, searched 4 deep; ``None``: [providers.venv]'s
    project_dirs: list[str] | None = None
    #: environment names or paths (globs) to leave out
    exclude: list[str] = field(default_factory=list)
    #: offer the environments of the project enclosing the current directory
    include_cwd: bool = True
    #: offer pixi's global environments ($PIXI_HOME/envs)
    include_global: bool = True


def manifest_path(project: Path) -> Path:
    """The project's pixi manifest: pixi.toml, else pyproject.toml ([tool.pixi])."""
    own = project / "pixi.toml"
    return own if own.is_file() else project / "pyproject.toml"


@dataclass
class PixiManifest:
    """What activation needs from a pixi manifest."""

    path: Path
    name: str
    version: str
    table: dict[str, Any]

    @classmethod
    def read(cls, project: Path) -> PixiManifest:
        """The manifest of ``project`` (an unreadable one: the project folder's name)."""
        path = manifest_path(project)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, ValueError):
            data = {}
        table = data if path.name == "pixi.toml" else data.get("tool", {}).get("pixi", {})
        meta = table.get("workspace") or table.get("project") or data.get("project") or {}
        return cls(path, str(meta.get("name") or project.name), str(meta.get("version", "")),
                   table)

    def features(self, env_name: str) -> list[dict[str, Any]]:
        """The tables of the features that make up ``env_name`` (the default feature
        first unless the environment leaves it out)."""
        spec = self.table.get("environments", {}).get(env_name, [])
        names, default = (spec, True) if isinstance(spec, list) else (
            spec.get("features", []), not spec.get("no-default-feature", False))
        features = self.table.get("feature", {})
        return [*([self.table] if default else []),
                *(features.get(n, {}) for n in names if isinstance(n, str))]

    def activation(self, env_name: str) -> tuple[list[str], dict[str, str]]:
        """(activation scripts relative to the project, variables) of ``env_name``."""
        scripts: list[str] = []
        variables: dict[str, str] = {}
        for feature in self.features(env_name):
            activation = feature.get("activation", {})
            scripts += [str(s) for s in activation.get("scripts", []) if str(s).endswith(".sh")
                        or sys.platform == "win32"]
            variables.update({str(k): str(v) for k, v in activation.get("env", {}).items()})
        return scripts, variables


def _is_pixi_project(project: Path) -> bool:
    return (project / ".pixi" / "envs").is_dir()


class PixiProvider(EnvironmentProvider[PixiConfig]):
    """Every pixi environment with ipykernel, and kernelspecs inside them
    (``pixi/<project>/<spec>``)."""

    id: ClassVar[str] = "pixi"
    config_class: ClassVar[type[Any] | None] = PixiConfig
    probe = staticmethod(probe_conda)
    watched = staticmethod(watched_conda)

    def __init__(self, project_dirs: Any = None) -> None:
        super().__init__(PixiConfig())
        self.walk = ProjectWalk(self.id)
        #: where project folders come from when project_dirs is not configured
        self.default_roots = project_dirs

    def _roots(self) -> list[Path]:
        if self.config.project_dirs is not None:
            return [Path(os.path.expanduser(d)) for d in self.config.project_dirs]
        return list(self.default_roots()) if self.default_roots is not None else []

    def locations(self) -> tuple[list[Location], list[Path]]:
        claims: list[Location] = []
        inputs: list[Path] = []
        exclude = self.config.exclude
        here = self.here if self.config.include_cwd else None
        projects = [*([here] if here is not None else []),
                    *(p for p in self.walk.projects(self._roots()) if p != here)]
        for project in projects:
            envs = project / ".pixi" / "envs"
            inputs.append(envs if _is_pixi_project(project) else project)
            for env_name, prefix in folder_entries(envs) if _is_pixi_project(project) else []:
                if looks_like(is_conda, prefix, env_name, exclude, self.id):
                    name = project.name if env_name == "default" else \
                        f"{project.name}:{env_name}"
                    claims.append(Location(name, prefix, "pixi", "pixi", project,
                                           pixi_env=env_name))
        if self.config.include_global:
            home = Path(os.path.expanduser(os.environ.get("PIXI_HOME") or "~/.pixi"))
            inputs.append(home / "envs")
            for name, prefix in folder_entries(home / "envs"):
                if looks_like(is_conda, prefix, name, exclude, self.id):
                    claims.append(Location(name, prefix, "pixi-global", "conda", named=True))
        inputs += self.walk.walked
        return claims, inputs
