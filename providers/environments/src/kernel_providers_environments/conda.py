"""The ``conda`` provider: conda, mamba and micromamba environments, found from the files
conda keeps (and its own environment list when an executable is at hand)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kernel_providers.sdk import KernelType, one_line, report_problem

from .environments import (
    Environment,
    Location,
    env_kernelspecs,
    find_python,
    folder_entries,
    has_package,
    looks_like,
    mtime_stamp,
    site_packages,
)
from .provider import EnvironmentProvider

__all__ = ["CondaConfig", "CondaProvider", "is_conda", "probe_conda", "read_envs_dirs"]

_WELL_KNOWN_ROOTS = ("miniconda3", "anaconda3", "miniforge3", "mambaforge", "micromamba",
                     ".local/share/mamba")


@dataclass
class CondaConfig:
    """``[providers.conda]`` options."""

    #: more folders holding environments, searched before conda's own
    envs_dirs: list[str] = field(default_factory=list)
    #: environment names or prefixes (globs) to leave out
    exclude: list[str] = field(default_factory=list)
    #: offer the root ("base") environment
    include_root: bool = True
    #: ask conda / mamba / micromamba for its environment list (run once per change)
    use_executable: bool = True


def read_envs_dirs(text: str) -> list[str]:
    """The ``envs_dirs`` list of a .condarc (block or flow YAML list), without a YAML
    library: the core's only dependencies are pluggy and pyzmq."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^envs_dirs\s*:\s*(.*)$", line)
        if not match:
            continue
        rest = match.group(1).split(" #")[0].strip()
        if rest.startswith("["):
            return [_unquote(item) for item in rest.strip("[]").split(",") if item.strip()]
        items = []
        for following in lines[i + 1:]:
            stripped = following.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if not stripped.startswith("-"):
                break
            items.append(_unquote(stripped[1:].split(" #")[0]))
        return items
    return []


def _unquote(value: str) -> str:
    return value.strip().strip("'\"")


def _expand(path: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(path)))


def is_conda(prefix: Path) -> bool:
    """Whether ``prefix`` is a conda prefix (it has conda-meta)."""
    return (prefix / "conda-meta").is_dir()


def _root_of(executable: str) -> Path | None:
    path = Path(executable).resolve()
    if path.parent.name in ("bin", "condabin", "Scripts"):
        return path.parent.parent  # root_prefixes checks it is one
    return None


def watched_conda(prefix: Path) -> list[Path]:
    """The folders whose mtimes validate a conda prefix's probe."""
    return [prefix / "conda-meta", prefix / "share" / "jupyter" / "kernels",
            site_packages(prefix)[0] or prefix / "lib"]


def probe_conda(prefix: Path) -> Environment:
    """A conda prefix, by its package records (no Python started)."""
    problems: list[str] = []
    meta = prefix / "conda-meta"
    # An OSError (conda-meta gone or unreadable ...) goes to ProbeCache.get: reported,
    # and probed again next time (a chmod changes no mtime).
    records = os.listdir(meta)
    packages: dict[str, tuple[str, Path]] = {}
    for record in records:
        if record.endswith(".json") and record.count("-") >= 2:
            name, package_version, _ = record[:-5].rsplit("-", 2)
            packages[name] = (package_version, meta / record)
    has_ipykernel = False
    if "ipykernel" in packages:
        path = packages["ipykernel"][1]
        try:
            json.loads(path.read_text(encoding="utf-8"))
            has_ipykernel = True
        except PermissionError:
            raise  # ProbeCache.get: reported, and probed again next time
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: unreadable package record ({exc}); the"
                            " environment's Python kernel is skipped")
    sp, sp_version = site_packages(prefix)
    if not has_ipykernel and not problems:
        has_ipykernel = has_package(sp, "ipykernel")  # pip-installed into the env
    python_record = packages.get("python")
    version = (".".join(python_record[0].split(".")[:2]) if python_record
               else sp_version)  # "3.11", for the display name
    python = find_python(prefix)
    if has_ipykernel and python is None:
        problems.append(f"{prefix}: ipykernel is installed but the interpreter"
                        f" {prefix / 'bin' / 'python'} is missing; install it"
                        f" (`conda install -p {prefix} python`) or exclude the"
                        " environment; skipped")
        has_ipykernel = False
    env_vars: dict[str, str] = {}
    state = meta / "state"
    if state.exists():
        try:
            env_vars = {str(k): str(v) for k, v in
                        json.loads(state.read_text(encoding="utf-8"))
                        .get("env_vars", {}).items()}
        except PermissionError:
            raise  # ProbeCache.get: reported, and probed again next time
        except (OSError, ValueError, AttributeError) as exc:
            problems.append(f"{state}: unreadable ({exc}); its env_vars are not set")
    specs, spec_problems = env_kernelspecs(prefix)
    return Environment(prefix, "conda", python, version, has_ipykernel, specs, env_vars,
                       tuple(problems + spec_problems), bool(spec_problems))


class CondaProvider(EnvironmentProvider[CondaConfig]):
    """Every conda environment with ipykernel (``conda/<env>``) and every kernelspec
    installed inside one (``conda/<env>/<spec>``), launched activated; environments of
    every conda install at once (miniconda, miniforge, mambaforge, micromamba's root),
    each once."""

    id: ClassVar[str] = "conda"
    config_class: ClassVar[type[Any] | None] = CondaConfig
    probe = staticmethod(probe_conda)
    watched = staticmethod(watched_conda)

    def __init__(self) -> None:
        super().__init__(CondaConfig())
        self._listed: tuple[tuple[int, ...], list[Path]] | None = None
        self._found: tuple[list[Path], list[Path], list[Path], list[Path]] = ([], [], [], [])

    # --- where conda keeps environments ------------------------------------------------

    def executable(self) -> str | None:
        """The conda, mamba or micromamba executable to ask, if any."""
        for var in ("CONDA_EXE", "MAMBA_EXE"):
            if os.environ.get(var) and os.path.exists(os.environ[var]):  # never raises
                return os.environ[var]
        for name in ("conda", "mamba", "micromamba"):
            found = shutil.which(name)
            if found:
                return found
        return None

    @staticmethod
    def root_candidates(exe: str | None) -> list[Path]:
        """Where a root (base) prefix may be: the executable's install (``exe``),
        MAMBA_ROOT_PREFIX, well-known install folders."""
        candidates = [_root_of(exe)] if exe else []
        if os.environ.get("MAMBA_ROOT_PREFIX"):
            candidates.append(_expand(os.environ["MAMBA_ROOT_PREFIX"]))
        home = Path.home()
        candidates += [home / name for name in _WELL_KNOWN_ROOTS]
        candidates += [Path("/opt/conda"), Path("/opt/miniconda3"), Path("/opt/miniforge3")]
        return [c for c in candidates if c is not None]

    def root_prefixes(self, candidates: list[Path]) -> list[Path]:
        """The ``candidates`` that are conda prefixes (one that cannot be read is
        reported)."""
        roots: list[Path] = []
        for root in candidates:
            if root not in roots and looks_like(is_conda, root, root.name,
                                                self.config.exclude, self.id):
                roots.append(root)
        return roots

    def condarc_files(self, roots: list[Path]) -> list[Path]:
        """The .condarc files conda reads, in its order."""
        home = Path.home()
        xdg = _expand(os.environ.get("XDG_CONFIG_HOME") or "~/.config")
        files = [Path("/etc/conda/.condarc"), Path("/etc/conda/condarc")]
        files += [root / ".condarc" for root in roots]
        files += [xdg / "conda" / ".condarc", xdg / "conda" / "condarc",
                  home / ".conda" / ".condarc", home / ".condarc"]
        if os.environ.get("CONDARC"):
            files.append(_expand(os.environ["CONDARC"]))
        return files

    def envs_dirs(self, roots: list[Path], condarcs: list[Path]) -> list[Path]:
        """Folders of named environments, in the order conda resolves names."""
        dirs = [_expand(d) for d in self.config.envs_dirs]
        dirs += [_expand(d) for d in os.environ.get("CONDA_ENVS_PATH", "").split(os.pathsep)
                 if d]
        for rc in condarcs:
            try:
                dirs += [_expand(d) for d in read_envs_dirs(rc.read_text(encoding="utf-8"))]
            except (FileNotFoundError, NotADirectoryError):
                continue
            except (OSError, UnicodeDecodeError) as exc:  # a problem, not the end of conda
                why = exc.strerror if isinstance(exc, OSError) else f"not UTF-8: {exc}"
                report_problem(one_line(f"{rc}: cannot read it ({why}); fix it; the"
                                        " envs_dirs it names are not searched"))
        dirs += [root / "envs" for root in roots]
        dirs.append(Path.home() / ".conda" / "envs")
        unique: list[Path] = []
        for d in dirs:
            if d not in unique:
                unique.append(d)
        return unique

    # --- the executable's own list -----------------------------------------------------

    async def _executable_envs(self, exe: str | None, watched: list[Path]) -> list[Path]:
        if exe is None or not self.config.use_executable:
            return []
        stamp = tuple(mtime_stamp(p) for p in [exe, *map(str, watched)])
        if self._listed is not None and self._listed[0] == stamp:
            return self._listed[1]
        prefixes: list[Path] = []
        # Within the discovery's time, with a second to spare for conda's own files.
        left = self.discovery_time_left()
        seconds = _EXECUTABLE_SECONDS if left is None else min(_EXECUTABLE_SECONDS,
                                                               max(left - 1, 0.5))
        try:
            out = await _env_list(exe, seconds)
            prefixes = [Path(p) for p in json.loads(out).get("envs", [])]
        except (asyncio.TimeoutError, TimeoutError):
            report_problem(f"`{exe} env list --json` did not answer within"
                           f" {seconds:g} s (ended); listing from conda's files"
                           " only (set use_executable = false in [providers.conda] to stop"
                           " asking it)")
        except (OSError, ValueError, AttributeError) as exc:
            report_problem(f"`{exe} env list --json` failed ({type(exc).__name__}: {exc});"
                           " listing from conda's files only")
        self._listed = (stamp, prefixes)
        return prefixes

    def locations(self) -> tuple[list[Location], list[Path]]:
        listed, roots, dirs, inputs = self._found
        claims: list[Location] = []
        if self.config.include_root:
            claims += [Location("base" if i == 0 else root.name, root, "conda", "conda",
                                named=True) for i, root in enumerate(roots)]
        exclude = self.config.exclude
        for directory in dirs:
            for child, prefix in folder_entries(directory):
                if looks_like(is_conda, prefix, child, exclude, self.id):
                    claims.append(Location(child, prefix, "conda", "conda", named=True))
        root_set = set(roots)
        extra = {p for p in listed + self._environments_txt() if p not in root_set
                 and looks_like(is_conda, p, p.name, exclude, self.id)}
        # conda names an environment in an envs dir (or a root); others by their path
        claims += [Location(p.name, p, "conda", "conda") for p in sorted(extra)]
        return claims, inputs

    @staticmethod
    def _environments_txt() -> list[Path]:
        path = Path.home() / ".conda" / "environments.txt"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        return [Path(line.strip()) for line in lines if line.strip()]

    async def find_kernels(self) -> list[KernelType]:
        """Conda environments from conda's files (and its executable), probed by reading
        their package records: no Python is started."""
        exe = self.executable()
        candidates = self.root_candidates(exe)
        roots = self.root_prefixes(candidates)
        condarcs = self.condarc_files(roots)
        dirs = self.envs_dirs(roots, condarcs)
        watched = [Path.home() / ".conda" / "environments.txt", *condarcs, *dirs]
        listed = await self._executable_envs(exe, watched)
        # a new root install (~/miniforge3 ...) is a candidate appearing (or getting
        # its conda-meta): watched, not the whole home folder, which changes all day
        inputs = [*watched, *candidates, *([Path(exe)] if exe else [])]
        self._found = (listed, roots, dirs, inputs)
        return await super().find_kernels()


#: how long `conda env list` may take at most (less when the discovery has less time
#: left), so that conda's files still list when the executable hangs
_EXECUTABLE_SECONDS = 8.0


async def _env_list(exe: str, seconds: float) -> bytes:
    """The output of ``exe env list --json``. The executable and whatever it started
    (conda is often a script) end with the call, even when it times out or the listing
    is cancelled: nothing is left running."""
    proc = await asyncio.create_subprocess_exec(
        exe, "env", "list", "--json", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds)
        return out
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: whatever it started
        if proc.returncode is None:
            await asyncio.shield(proc.wait())

