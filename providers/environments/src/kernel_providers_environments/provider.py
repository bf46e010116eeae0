"""What the conda, venv and pixi providers share: a provider is its kinds' finders
(``locations``) and a probe; listing, naming, marking the working directory's project
and launching are done here, once, for every kind."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

from kernel_providers.sdk import (
    KernelLauncher,
    KernelProvider,
    KernelType,
    LaunchOptions,
    PerProcess,
    problems_reported,
)

from .environments import (
    Environment,
    Known,
    Location,
    ProbeCache,
    launch_in_environment,
    launch_inputs,
    list_kernels,
    mtime_stamp,
)
from .projects import enclosing_project, project_candidates

__all__ = ["EnvironmentProvider"]

#: what discovery depends on besides files (where the tools keep things)
_CONTEXT_VARIABLES = (
    "HOME", "PATH", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "CONDA_EXE",
    "MAMBA_EXE", "MAMBA_ROOT_PREFIX", "CONDA_ENVS_PATH", "CONDARC", "WORKON_HOME",
    "PYENV_ROOT", "POETRY_VIRTUALENVS_PATH", "UV_PROJECT_ENVIRONMENT",
    "UV_PYTHON_INSTALL_DIR", "HATCH_DATA_DIR", "PIXI_HOME")
#: an mtime this close to a listing may be followed by a change within the same tick
_RECENT_NS = 2_000_000_000


@dataclass
class _Listing:
    """A listing and what it read: reused while the context and every stamp hold."""

    context: tuple[str | None, ...]
    stamps: list[tuple[str, int]]
    kernels: list[KernelType]


def _working_directory() -> Path | None:
    """The working directory; None when it was removed (no project encloses it)."""
    try:
        return Path.cwd()
    except OSError:
        return None


C = TypeVar("C")

#: one thread scans for every environment provider, one after another: scans are
#: stat() calls, and threads running them side by side mostly wait for each other's
#: GIL hand-overs (a warm listing of 180 environments took ~14 ms in three threads,
#: ~8 ms in one)
#: (one per process: a forked child has none of its parent's threads)
_SCANS: PerProcess[concurrent.futures.ThreadPoolExecutor] = PerProcess(
    lambda: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kernel-providers-envs"))


class EnvironmentProvider(KernelProvider[C]):
    """Environments found by ``locations`` (in a thread: file reads only), probed with
    ``probe`` (validated by the mtimes of ``watched``), each kernel started activated
    as its kind's tool activates it."""

    cache_ttl: ClassVar[float | None] = 0  # validated by mtimes, cheaply, every time

    @staticmethod
    def probe(prefix: Path) -> Environment:
        """Read the environment folder ``prefix`` (no Python started)."""
        raise NotImplementedError

    @staticmethod
    def watched(prefix: Path) -> list[Path]:
        """The paths whose mtimes validate the probe of ``prefix``."""
        raise NotImplementedError

    def __init__(self, config: C) -> None:
        self.config = config
        self._probes = ProbeCache(type(self).watched, type(self).probe, self.id)
        self._kernels: Known = {}
        self._inputs: list[Path] = []  # what the last listing read, besides environments
        #: the project enclosing the working directory, as of this listing
        self.here: Path | None = None
        self._last: _Listing | None = None

    def locations(self) -> tuple[list[Location], list[Path]]:
        """The environments of this provider's kinds, in name-precedence order, and the
        folders and files read to find them (a change there is a change of listing);
        ``here`` is the working directory's project."""
        raise NotImplementedError

    def _scan(self) -> list[KernelType]:
        # A warm listing: nothing it read changed (one stat per path): the last answer.
        cwd = _working_directory()
        context = (str(cwd), repr(self.config), *map(os.environ.get, _CONTEXT_VARIABLES))
        last = self._last
        if last is not None and last.context == context and all(
                mtime_stamp(p) == stamp for p, stamp in last.stamps):
            return last.kernels
        started = time.time_ns()
        with problems_reported() as problems:
            self.here = enclosing_project(cwd) if cwd is not None else None
            claims, inputs = self.locations()
            exclude: list[str] = getattr(self.config, "exclude", [])
            kernels, known = list_kernels(claims, self._probes, exclude, self.id, self.here)
        self._inputs = inputs
        self._kernels = known  # swapped whole: concurrent launches never see it half built
        # A problem may be put right without changing an mtime (a chmod): not reused.
        self._last = None if problems else self._reusable(context, started, inputs, known,
                                                          kernels, cwd)
        return kernels

    def _reusable(self, context: tuple[str | None, ...], started: int, inputs: list[Path],
                  known: Known, kernels: list[KernelType], cwd: Path | None
                  ) -> _Listing | None:
        """What makes this listing reusable: the stamps of the paths it read (the
        working directory and its parents too), taken when they were read; None when a
        path changed as it was read (or too recently to tell: coarse mtimes) or an
        environment must be probed again each time."""
        stamps = [(str(p), mtime_stamp(str(p))) for p in
                  [*inputs, *(project_candidates(cwd) if cwd is not None else [])]]
        for location, env, _ in known.values():
            entry = self._probes.stamps(location.prefix)
            if entry is None or env.recheck:
                return None
            stamps += entry
        if any(stamp >= started - _RECENT_NS for _, stamp in stamps):
            return None
        return _Listing(context, stamps, kernels)

    async def find_kernels(self) -> list[KernelType]:
        """The environments of this provider's kinds, probed by their files: no Python
        is started. Those of the working directory's project are marked
        ``"project": true``; those without ipykernel are not launchable (``list --all``
        shows them with the command that installs it)."""
        # (in this task's context: report_problem reaches this discovery)
        scan = functools.partial(contextvars.copy_context().run, self._scan)
        return await asyncio.get_running_loop().run_in_executor(_SCANS.get(), scan)

    def launch_inputs(self, kernel_type: KernelType) -> list[str] | None:
        """What the listing read, and the environment's files (see the base class)."""
        return launch_inputs(self._kernels, kernel_type.id, self._inputs, self._probes)

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Start the kernel activated in its environment, as its tool would."""
        location, env, spec_name = self.listed(self._kernels, kernel_type)
        return await launch_in_environment(kernel_type, location, env, spec_name, options)
