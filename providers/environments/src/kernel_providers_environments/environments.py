"""The one model every environment kind shares, and what all of them use: a kind's
finder yields :class:`Location` s (where an environment is, what it is called, how it is
activated, which project it belongs to); the folder is probed without starting Python
(:class:`Environment`, cached by mtimes); names are made stable and collision-free;
kernel types are built and launched the same way for every kind."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kernel_providers.sdk import (
    KernelLauncher,
    KernelSpec,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    launch_local,
    one_line,
    report_problem,
    scan_kernel_dirs,
)

from .activation import activate, activation_inputs

__all__ = [
    "Environment",
    "Location",
    "ProbeCache",
    "environment_kernels",
    "find_python",
    "folder_entries",
    "has_package",
    "is_venv",
    "launch_in_environment",
    "launch_inputs",
    "list_kernels",
    "looks_like",
    "mtime_stamp",
    "site_packages",
    "unique_names",
    "unreadable",
]

_WINDOWS = sys.platform == "win32"
_PYTHON_DIR = re.compile(r"^python(\d+\.\d+)t?$")
_MISSING = (FileNotFoundError, NotADirectoryError)


@dataclass(frozen=True)
class Location:
    """An environment as a kind's finder found it."""

    #: the name it claims (kernel ids are ``<provider>/<name>``; collisions get a suffix)
    name: str
    prefix: Path
    #: what users call it: conda, venv, pyenv, uv-python, uv, pdm, poetry, hatch,
    #: project (a project's plain .venv), pixi, pixi-global
    kind: str
    #: how a kernel starts inside it (see activation.py): conda, venv, interpreter, pixi
    activation: str = "venv"
    #: the project folder it belongs to (None: not a project's)
    project: Path | None = None
    #: conda knows it by name (``conda activate NAME``), not only by path
    named: bool = False
    #: the pixi environment's name inside its project (pixi kinds only)
    pixi_env: str | None = None


@dataclass(frozen=True)
class Environment:
    """One environment folder and what it offers, as read from its files."""

    prefix: Path
    kind: str  # the probe's own idea of it: "conda", "venv" or "pyenv"
    python: Path | None = None
    python_version: str | None = None
    has_ipykernel: bool = False
    kernelspecs: dict[str, KernelSpec] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    #: probe it again on the next listing whatever the mtimes: what is wrong (a chmod, a
    #: kernel.json fixed in place) can be put right without changing a watched mtime
    recheck: bool = False


def unreadable(path: object, exc: OSError, provider: str, skipped: str) -> str:
    """The problem line for ``path``, which exists but ``exc`` kept from being read: the
    path, what is wrong, what to do, and what is ``skipped``."""
    hint = (f"; fix its permissions or exclude it (`exclude` in [providers.{provider}])"
            if isinstance(exc, PermissionError) else "")
    return one_line(f"{path}: cannot read it ({exc.strerror or exc}){hint}; {skipped}")


def is_venv(prefix: Path) -> bool:
    """Whether ``prefix`` is a virtualenv (it has pyvenv.cfg); OSError when it cannot be
    read."""
    return (prefix / "pyvenv.cfg").is_file()


def find_python(prefix: Path) -> Path | None:
    """The environment's own interpreter, if it has one."""
    names = (["python.exe", "Scripts/python.exe"] if _WINDOWS
             else ["bin/python3", "bin/python"])
    for name in names:
        candidate = prefix / name
        if candidate.exists():
            return candidate
    return None


def site_packages(prefix: Path) -> tuple[Path | None, str | None]:
    """The environment's site-packages folder and the Python version it belongs to;
    OSError when a folder on the way exists but cannot be read."""
    if _WINDOWS:
        folder = prefix / "Lib" / "site-packages"
        return (folder if folder.is_dir() else None), None
    try:
        entries = sorted(os.listdir(prefix / "lib"), reverse=True)
    except _MISSING:
        return None, None
    for entry in entries:
        match = _PYTHON_DIR.match(entry)
        if match and (prefix / "lib" / entry / "site-packages").is_dir():
            return prefix / "lib" / entry / "site-packages", match.group(1)
    return None, None


def has_package(folder: Path | None, name: str) -> bool:
    """Whether ``name`` is installed in a site-packages folder (package dir or metadata);
    OSError when the folder cannot be read (whether it is, nobody can tell)."""
    if folder is None:
        return False
    try:
        entries = os.listdir(folder)
    except _MISSING:
        return False
    prefix = name + "-"
    return name in entries or any(
        e.startswith(prefix) and e.endswith((".dist-info", ".egg-info")) for e in entries)


def short_hash(path: Path) -> str:
    """Six hex digits naming a path: tells apart two environments with one name."""
    return hashlib.sha256(str(path).encode()).hexdigest()[:6]


def unique_names(claims: Iterable[tuple[str, Path]]) -> dict[Path, str]:
    """Stable names: the first claim of a name keeps it (callers order claims as the
    tool itself resolves names, e.g. conda's envs_dirs order); later claimants get a
    suffix derived from their path, never from discovery order."""
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for name, prefix in claims:
        if prefix in names:
            continue
        if name in taken:
            name = f"{name}-{short_hash(prefix)}"
        taken.add(name)
        names[prefix] = name
    return names


def excluded(name: str, prefix: Path, patterns: Iterable[str]) -> bool:
    """Whether a glob pattern matches the environment's name or its path."""
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(str(prefix), p) for p in patterns)


def folder_entries(directory: Path) -> list[tuple[str, Path]]:
    """(name, path) of each entry of ``directory``, in name order (stable names for
    stable ids); none when it is missing, or unreadable (then reported)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        if not isinstance(exc, _MISSING):
            report_problem(one_line(f"{directory}: cannot list it ({exc.strerror}); fix its"
                                    " permissions; the environments in it are skipped"))
        return []
    return [(name, directory / name) for name in names]


def looks_like(test: Callable[[Path], object], prefix: Path, name: str,
               exclude: Iterable[str], provider: str) -> bool:
    """Whether ``test(prefix)`` (does the folder hold an environment?); False when the
    folder cannot be read: reported, unless excluded, as that folder's problem alone."""
    try:
        return bool(test(prefix))
    except OSError as exc:
        if not excluded(name, prefix, exclude):
            report_problem(unreadable(prefix, exc, provider, "skipped"))
        return False


def mtime_stamp(path: str) -> int:
    """``path``'s modification time in ns, -1 when it is missing (a cache key part)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


class ProbeCache:
    """Probe results per environment, reused while the folders that a probe depends on
    (given by ``watched``, e.g. conda-meta, site-packages, the kernelspecs folder) keep
    their mtimes: installing or removing a package, or a kernelspec, changes one of
    them. The kernel types built from an environment are kept alongside."""

    def __init__(self, watched: Callable[[Path], list[Path]],
                 probe: Callable[[Path], Environment], provider: str) -> None:
        self._watched, self._probe, self._provider = watched, probe, provider
        # prefix -> (watched paths, their mtimes, environment, kernel types by location)
        self._entries: dict[Path, tuple[list[str], tuple[int, ...], Environment,
                                        dict[tuple[Location, bool], list[KernelType]]]] = {}

    def get(self, prefix: Path) -> Environment:
        """The environment at ``prefix``, probed again only if it changed."""
        entry = self._entries.get(prefix)
        if entry is not None and not entry[2].recheck and \
                tuple(mtime_stamp(p) for p in entry[0]) == entry[1]:
            return entry[2]
        paths = self.watched_paths(prefix)
        stamps = tuple(mtime_stamp(p) for p in paths)
        try:
            env = self._probe(prefix)
        except OSError as exc:  # a folder inside cannot be read: this environment alone
            env = Environment(prefix, self._provider, recheck=True, problems=(unreadable(
                exc.filename or prefix, exc, self._provider, f"environment {prefix} skipped"),))
        self._entries[prefix] = (paths, stamps, env, {})
        return env

    def stamps(self, prefix: Path) -> list[tuple[str, int]] | None:
        """(path, stamp) pairs the cached probe of ``prefix`` holds (None: not probed)."""
        entry = self._entries.get(prefix)
        return None if entry is None else list(zip(entry[0], entry[1], strict=True))

    def watched_paths(self, prefix: Path) -> list[str]:
        """The paths whose mtimes validate the probe of ``prefix``."""
        try:
            own = self._watched(prefix)
        except OSError:
            own = []  # unreadable: the probe reports it
        return [str(p) for p in [prefix, prefix / "lib", *own]]

    def kernels(self, env: Environment, location: Location, provider: str,
                ours: bool) -> list[KernelType]:
        """``environment_kernels`` for ``env``, built once per probe and location."""
        memo = self._entries[env.prefix][3]
        key = (location, ours)
        if key not in memo:
            memo[key] = environment_kernels(env, location, provider, ours)
        return memo[key]


Known = dict[str, tuple[Location, Environment, str | None]]


def list_kernels(claims: Iterable[Location], probes: ProbeCache, exclude: Iterable[str],
                 provider: str, project: Path | None = None
                 ) -> tuple[list[KernelType], Known]:
    """Name the claimed environments (stable, collision-free), probe each (from cache
    when unchanged), report its problems and return its kernel types, plus ``kernel id
    -> (location, environment, kernelspec or None)`` for launching. Kernel types of
    ``project`` (the working directory's) are marked ``"project": true``."""
    claimed: dict[Path, Location] = {}
    for location in claims:
        claimed.setdefault(location.prefix, location)
    names = unique_names((c.name, c.prefix) for c in claimed.values())
    kernels: list[KernelType] = []
    known: Known = {}
    for prefix, name in names.items():
        if excluded(name, prefix, exclude):
            continue
        if one_line(name) != name:  # a newline in an id would break every listing of it
            report_problem(one_line(
                f"{prefix}: the environment name {name!r} holds control characters, which"
                " a kernel id cannot; rename the folder (or exclude it); skipped"))
            continue
        location = claimed[prefix]
        if location.name != name:
            location = replace(location, name=name)
        env = probes.get(prefix)
        for problem in env.problems:
            report_problem(one_line(problem))
        ours = project is not None and location.project == project
        for kernel in probes.kernels(env, location, provider, ours):
            kernels.append(kernel)
            known[kernel.id] = (location, env, kernel.metadata.get("kernelspec"))
    return kernels, known


def launch_inputs(known: Known, kernel_id: str, listed: Iterable[Path],
                  probes: ProbeCache) -> list[str] | None:
    """What a launch of ``kernel_id`` depends on (see ``KernelProvider.launch_inputs``):
    the folders and files discovery read to name environments (``listed``), and the
    environment's own folders, interpreter, kernelspec and activation files."""
    entry = known.get(kernel_id)
    if entry is None:
        return None
    location, env, spec_name = entry
    paths = [*listed, *probes.watched_paths(env.prefix)]
    if env.python is not None:
        paths.append(env.python)
    if spec_name is not None:
        paths.append(env.kernelspecs[spec_name].resource_dir / "kernel.json")
    paths += activation_inputs(location)
    return [str(p) for p in paths]


async def launch_in_environment(kernel_type: KernelType, location: Location,
                                env: Environment, spec_name: str | None,
                                options: LaunchOptions) -> KernelLauncher:
    """Start one of an environment's kernels activated as its kind's tool activates it:
    its Python's ipykernel (``spec_name`` None) or the kernelspec ``spec_name`` inside
    it. LaunchFailed when it cannot start (no ipykernel: the command that installs it)
    or the environment changed since it was listed."""
    if spec_name is None:
        if not kernel_type.metadata.get("launchable", True):
            raise LaunchFailed(f"cannot start {kernel_type.id}: {env.prefix} has no"
                               f" ipykernel; {kernel_type.metadata.get('hint')}")
        if env.python is None or not env.python.exists():
            raise LaunchFailed(f"cannot start {kernel_type.id}: {env.prefix} has no Python"
                               " any more (environment removed after listing?)")
        argv = [str(env.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        spec_env: dict[str, str] = {}
        resource_dir = None
    else:
        spec = env.kernelspecs[spec_name]
        if not (spec.resource_dir / "kernel.json").exists():
            raise LaunchFailed(f"cannot start {kernel_type.id}: {spec.resource_dir} is"
                               " gone (environment changed after listing?)")
        argv, spec_env, resource_dir = spec.argv, spec.env, str(spec.resource_dir)
    runner, activation = activate(location, env)
    return await launch_local(kernel_type, [*runner, *argv], options,
                              env={**activation, **spec_env}, resource_dir=resource_dir)


def env_kernelspecs(prefix: Path) -> tuple[dict[str, KernelSpec], list[str]]:
    """Kernelspecs installed inside the environment (``share/jupyter/kernels``), and a
    problem line for each that is skipped (malformed, unreadable)."""
    return scan_kernel_dirs([prefix / "share" / "jupyter" / "kernels"])


#: the label in display names, by kind ("conda: analysis", "uv: webapp")
_LABELS = {"pyenv": "pyenv", "uv-python": "uv python", "pixi-global": "pixi global"}


def environment_kernels(env: Environment, location: Location, provider: str,
                        ours: bool = False) -> list[KernelType]:
    """The kernel types of one environment: its Python kernel as ``<provider>/<name>``
    (not launchable without ipykernel: listed by ``list --all`` with the command that
    installs it), and each other kernelspec inside it as ``<provider>/<name>/<spec>``.
    ``ours``: it belongs to the working directory's project."""
    name = location.name
    label = _LABELS.get(location.kind, location.kind)
    base: dict[str, Any] = {"prefix": str(env.prefix), "environment_kind": location.kind,
                            "environment_name": name}
    if location.project is not None:
        base["project_dir"] = str(location.project)
    if ours:
        base["project"] = True
    kernels = []
    if env.python is not None and (env.has_ipykernel or not env.problems):
        own = env.kernelspecs.get("python3") if env.has_ipykernel else None
        version = f" {env.python_version}" if env.python_version else ""
        launchable = {} if env.has_ipykernel else {
            "launchable": False, "hint": install_hint(location)}
        kernels.append(KernelType(
            id=f"{provider}/{name}", display_name=f"Python{version} ({label}: {name})",
            language="python", provider=provider,
            metadata={**base, "python": str(env.python),
                      "python_version": env.python_version, **launchable},
            resources=own.resources if own is not None else {}))
    for spec_name, spec in sorted(env.kernelspecs.items()):
        if spec_name == "python3" and env.has_ipykernel:
            continue  # ipykernel's own spec: the same kernel as the one above
        kernels.append(KernelType(
            id=f"{provider}/{name}/{spec_name}",
            display_name=f"{spec.display_name} ({label}: {name})",
            language=spec.language, provider=provider,
            metadata={**spec.metadata, **base, "kernelspec": spec_name,
                      "resource_dir": str(spec.resource_dir)},
            resources=spec.resources,
            interrupt_mode=spec.interrupt_mode,  # type: ignore[arg-type]
            parameters=spec.parameters,
        ))
    return kernels


def install_hint(location: Location) -> str:
    """The one command that installs ipykernel into the environment, with its own tool."""
    project = location.project
    where = f"in {project}: " if project is not None else ""
    if location.kind in ("pixi", "pixi-global"):
        if location.kind == "pixi-global":
            return f"run `pixi global add --environment {location.name} ipykernel`"
        feature = "" if location.pixi_env in (None, "default") else \
            f" --feature {location.pixi_env}"
        return f"{where}run `pixi add{feature} ipykernel`"
    command = {"uv": "uv add --dev ipykernel", "pdm": "pdm add -dG dev ipykernel",
               "poetry": "poetry add --group dev ipykernel"}.get(location.kind)
    if command is not None:
        return f"{where}run `{command}`"
    if location.activation == "conda":
        target = f"-n {location.name}" if location.named else f"-p {location.prefix}"
        return f"run `conda install {target} ipykernel`"
    python = find_python(location.prefix) or location.prefix / "bin" / "python"
    return f"run `{python} -m pip install ipykernel`"
