"""Projects: a folder with a ``pyproject.toml`` or ``pixi.toml`` (or just a ``.venv``) and
the environments that belong to it. Found under configured project folders to a bounded
depth (each folder listed again only when its mtime changed), and upward from the
working directory: the nearest enclosing project is the one a notebook there wants."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from kernel_providers.sdk import report_problem

from .environments import Location, folder_entries, is_venv, mtime_stamp, unreadable

__all__ = ["ProjectTools", "ProjectWalk", "enclosing_project", "project_candidates",
           "project_venvs"]

MANIFESTS = ("pyproject.toml", "pixi.toml")
#: how deep under a project folder projects are looked for (the folder itself is 0)
DEPTH = 4
#: folders never walked into: they hold packages, not projects
_NOT_PROJECTS = {"node_modules", "__pycache__", "site-packages", "__pypackages__", "venv",
                 "env", "build", "dist"}


def _is_project(folder: Path) -> bool:
    try:
        return any((folder / name).is_file() for name in MANIFESTS) or \
            (folder / ".venv" / "pyvenv.cfg").is_file()
    except OSError:  # unreadable: not a project one can use
        return False


def _is_venv(prefix: Path) -> bool:
    try:
        return is_venv(prefix)
    except OSError:  # unreadable: the probe would skip it anyway
        return False


def project_candidates(start: Path) -> list[Path]:
    """Where a project enclosing ``start`` may be: ``start`` and its parents, up to but
    not including the home folder when ``start`` is inside it (a stray ~/pyproject.toml
    is no project of all)."""
    home = Path.home()
    chain: list[Path] = []
    folder = start
    while folder != home:
        chain.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    return chain


def enclosing_project(start: Path) -> Path | None:
    """The nearest project enclosing ``start``, if any."""
    return next((f for f in project_candidates(start) if _is_project(f)), None)


class ProjectWalk:
    """Project folders under some roots, to ``DEPTH`` levels; a folder is listed again
    only when its mtime changed (an entry added or removed), so a warm walk costs one
    stat per folder."""

    def __init__(self, provider: str) -> None:
        self.provider = provider  # (for the problems it reports)
        # folder -> (its mtime, its subfolders worth walking, whether it is a project)
        self._seen: dict[Path, tuple[int, list[Path], bool]] = {}
        self.walked: list[Path] = []  # the folders the last walk looked at

    def projects(self, roots: list[Path]) -> list[Path]:
        """The projects under ``roots`` (each root included), in path order."""
        found: list[Path] = []
        walked: list[Path] = []
        for root in roots:
            self._walk(root, 0, found, walked)
        self.walked = walked
        return sorted(set(found))

    def _walk(self, folder: Path, depth: int, found: list[Path], walked: list[Path]) -> None:
        stamp = mtime_stamp(str(folder))
        if stamp < 0:
            return
        walked.append(folder)
        seen = self._seen.get(folder)
        if seen is None or seen[0] != stamp:
            try:
                subfolders = sorted(e.path for e in os.scandir(folder) if e.is_dir()
                                    and not e.name.startswith(".")
                                    and e.name not in _NOT_PROJECTS)
            except OSError as exc:
                if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                    report_problem(unreadable(folder, exc, self.provider,
                                              "the projects in it are skipped"))
                subfolders = []
            seen = (stamp, [Path(p) for p in subfolders], _is_project(folder))
            self._seen[folder] = seen
        if seen[2]:
            found.append(folder)
        if depth < DEPTH:
            for sub in seen[1]:
                self._walk(sub, depth + 1, found, walked)


def _pyproject(project: Path) -> str:
    try:
        return (project / "pyproject.toml").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


#: project -> (mtimes of the folder and its pyproject.toml, (tool, normalized name))
_READ: dict[Path, tuple[tuple[int, int], tuple[str, str]]] = {}


def _read_project(project: Path) -> tuple[str, str]:
    """(tool, normalized project name) of ``project``: the tool that manages its
    environment (uv, pdm, poetry, hatch, or "project": a plain .venv), by its lock files
    first, then its pyproject's tables. Read again only when the folder (a lock file
    appears) or its pyproject.toml changed."""
    stamps = (mtime_stamp(str(project)), mtime_stamp(str(project / "pyproject.toml")))
    cached = _READ.get(project)
    if cached is not None and cached[0] == stamps:
        return cached[1]
    text = _pyproject(project)
    tool = "project"
    for marker, named in (("uv.lock", "uv"), ("pdm.lock", "pdm"), ("poetry.lock", "poetry")):
        if (project / marker).is_file():
            tool = named
            break
    else:
        for table, named in (("[tool.uv", "uv"), ("[tool.pdm", "pdm"),
                             ("[tool.poetry", "poetry"), ("[tool.hatch", "hatch")):
            if table in text:
                tool = named
                break
        else:
            if (project / "hatch.toml").is_file():
                tool = "hatch"
    match = re.search(r'(?ms)^\[project\].*?^name\s*=\s*["\']([^"\']+)', text)
    # As the tools name things after it (hatch's folders): PEP 503 normalized.
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else project.name
    _READ[project] = (stamps, (tool, name))
    return tool, name


def _data_dir(tool: str, variable: str) -> Path:
    if os.environ.get(variable):
        return Path(os.path.expanduser(os.environ[variable]))
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / tool
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(os.path.expanduser(base)) / tool


def _b64_hash(text: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm, text.encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode()[:8]


def _in_project(project: Path, tool: str) -> list[Path]:
    """The project's own environment folders: uv's UV_PROJECT_ENVIRONMENT if set, else
    .venv (PDM also uses venv/ and env/)."""
    named = os.environ.get("UV_PROJECT_ENVIRONMENT") if tool in ("uv", "project") else None
    if named:
        return [project / os.path.expanduser(named)]  # (an absolute path stays as is)
    return [project / d for d in ((".venv", "venv", "env") if tool == "pdm" else (".venv",))]


class ProjectTools:
    """What one listing looks up once for all its projects: hatch on PATH, and hatch's
    data folder (``<data>/env/virtual/<project>/<checksum of its path>``)."""

    def __init__(self) -> None:
        self.hatch = shutil.which("hatch")
        self._hatch_folders: dict[str, list[Path]] | None = None
        #: every folder and file looked at: an environment appearing there changes one
        self.read: list[Path] = []

    def hatch_storage(self, project: Path) -> list[Path]:
        """The folders hatch keeps ``project``'s environments in."""
        found = _hatch_find(self.hatch, project) if self.hatch is not None else []
        if found:
            self.read += [found[0].parent, found[0].parent.parent]
            return [found[0].parent]
        if self._hatch_folders is None:
            self._hatch_folders = {}
            virtual = _data_dir("hatch", "HATCH_DATA_DIR") / "env" / "virtual"
            self.read.append(virtual)
            for _, named in folder_entries(virtual):
                self.read.append(named)
                for checksum, folder in folder_entries(named):
                    self._hatch_folders.setdefault(checksum, []).append(folder)
        storage = self._hatch_folders.get(_b64_hash(str(project), "sha256"), [])
        self.read += storage
        return storage

    def pdm_location(self) -> Path:
        """Where PDM keeps its centralized virtualenvs."""
        location = _data_dir("pdm", "PDM_DATA_DIR") / "venvs"
        self.read.append(location)
        return location


def _hatch_envs(project: Path, name: str, tools: ProjectTools) -> list[tuple[str, Path]]:
    """(env name, folder) of a hatch project's virtual environments, in the folder hatch
    keeps them: as ``hatch env find`` says when hatch is on PATH (it knows the user's
    hatch config), else by hatch's layout in its data folder."""
    envs = []
    for folder in tools.hatch_storage(project):
        for env_name, env in folder_entries(folder):
            if _is_venv(env):
                envs.append(("default" if env_name == name else env_name, env))
    return envs


#: project -> (mtimes of hatch and the project's hatch config, what `hatch env find` said)
_HATCH_FOUND: dict[Path, tuple[tuple[int, ...], list[Path]]] = {}


def _hatch_find(hatch: str, project: Path) -> list[Path]:
    """Where ``hatch env find`` puts the project's default environment (asked again only
    when hatch or the project's hatch config changed: it takes a few hundred ms)."""
    stamps = tuple(mtime_stamp(str(p)) for p in (Path(hatch), project / "pyproject.toml",
                                                 project / "hatch.toml"))
    cached = _HATCH_FOUND.get(project)
    if cached is not None and cached[0] == stamps:
        return cached[1]
    found: list[Path] = []
    try:
        done = subprocess.run([hatch, "env", "find"], cwd=project, capture_output=True,
                              text=True, timeout=15, stdin=subprocess.DEVNULL, check=False)
        if done.returncode == 0:
            found = [Path(line.strip()) for line in done.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired):
        pass  # its data folder, then
    _HATCH_FOUND[project] = (stamps, found)
    return found


def _pdm_envs(project: Path, tools: ProjectTools) -> list[Path]:
    """PDM's centralized virtualenvs of ``project`` (``<venv location>/<folder name>-
    <hash of its path>-<python>``)."""
    location = tools.pdm_location()
    prefix = f"{project.name}-{_b64_hash(project.as_posix(), 'md5')}-"
    try:
        return sorted(location / e for e in os.listdir(location) if e.startswith(prefix))
    except OSError:
        return []


def project_venvs(project: Path, tools: ProjectTools) -> list[Location]:
    """The virtualenvs that belong to ``project``, by its tool's rules: the in-project
    one first (it is what the tool uses), then hatch's or PDM's centralized ones."""
    tool, name = _read_project(project)
    own = _in_project(project, tool)
    tools.read += [project / "pyproject.toml", *own]
    found = [Location(project.name, p, tool, "venv", project) for p in own if _is_venv(p)]
    if tool == "hatch":
        found += [Location(project.name if env == "default" else f"{project.name}-{env}",
                           p, "hatch", "venv", project)
                  for env, p in _hatch_envs(project, name, tools)]
    elif tool == "pdm":
        found += [Location(project.name if not found and i == 0 else p.name, p, "pdm", "venv",
                           project) for i, p in enumerate(_pdm_envs(project, tools))]
    return found
