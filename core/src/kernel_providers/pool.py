"""A warm pool: kernels started before anyone asks, each handed out once.

Configured by the ``[pool]`` table (see :class:`PoolSettings`); lives in the process
that holds the :class:`~kernel_providers.KernelFinder` (a Jupyter server with the
bridge, a Python program, the per-user pool service). A pooled kernel is an ordinary
launcher of that process: it ends with it, like any kernel it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .config import build_options
from .errors import ConfigError, KernelProviderError
from .local import LocalLauncher
from .types import LaunchOptions

if TYPE_CHECKING:
    from .finder import KernelFinder
    from .launcher import KernelLauncher
    from .types import KernelType

__all__ = ["Caller", "KernelPool", "PoolSettings", "PoolTypeSettings", "adaptable",
           "parse_pool"]

log = logging.getLogger(__name__)

# Variables that may differ between a caller and the pool's holder: a shell's own.
_SHELL_ONLY = {"PWD", "OLDPWD", "_", "SHLVL", "TERM", "COLUMNS", "LINES", "PS1", "PS2",
               "TMUX_PANE", "WINDOWID", "SSH_TTY", "STY", "KERNEL_PROVIDERS_POOL"}
# Variables a running interpreter reads only at its start: a request that sets one
# cannot be served by a kernel that is already running.
_START_ONLY = ("PYTHON", "LD_", "DYLD_", "OMP_", "MKL_", "OPENBLAS_", "CUDA_", "JUPYTER_")


@dataclass
class PoolTypeSettings:
    """``[pool."<kernel id>"]``: how many of that kernel type to keep ready."""

    #: kernels kept ready
    size: int = 1
    #: seconds a pooled kernel may wait unused before it is stopped (0: no limit)
    idle_timeout: float = 0.0


@dataclass
class PoolSettings:
    """``[pool]``: kernel types to keep ready and the limits."""

    #: pooled kernels across all kernel types, at most
    cap: int = 4
    #: also keep one ready of each kernel type among the last ``recent`` started
    #: (0: only the configured ones)
    recent: int = 0
    #: idle_timeout of the kernel types that do not set their own
    idle_timeout: float = 0.0
    #: `kernel-providers run`/`launch` start the pool service when none runs
    autostart: bool = False
    types: dict[str, PoolTypeSettings] = field(default_factory=dict)


def parse_pool(table: dict[str, Any], where: str = "[pool]") -> PoolSettings:
    """``[pool]`` checked: its keys, and a table per kernel id."""
    kinds = {k: v for k, v in table.items() if isinstance(v, dict)}
    settings: PoolSettings = build_options(
        PoolSettings, {k: v for k, v in table.items() if k not in kinds}, where,
        skip={"types"})
    for kernel_id, sub in kinds.items():
        if "/" not in kernel_id:
            raise ConfigError(f'{where}: "{kernel_id}" is not a kernel id (provider/name);'
                              ' write [pool."venv/myproj"], with the quotes')
        kind: PoolTypeSettings = build_options(
            PoolTypeSettings, sub, f'[pool."{kernel_id}"]')
        if "idle_timeout" not in sub:
            kind.idle_timeout = settings.idle_timeout
        settings.types[kernel_id] = kind
    return settings


@dataclass
class Caller:
    """Another process asking for a kernel (through the pool service): its working
    folder and environment, which a local kernel it started would have inherited."""

    cwd: str
    environ: dict[str, str]

    def differs_in(self) -> list[str]:
        """The variables in which its environment differs from this process's, but
        for a shell's own (PWD, SHLVL, ...)."""
        mine = os.environ
        keys = set(self.environ) ^ set(mine) | {
            k for k in self.environ if mine.get(k) != self.environ[k]}
        return sorted(keys - _SHELL_ONLY)


@dataclass
class _Pooled:
    launcher: KernelLauncher
    stamp: str
    since: float


@dataclass
class _Counts:
    hits: int = 0
    misses: int = 0
    started: int = 0
    failed: int = 0
    last_error: str = ""
    last_miss: str = ""


class KernelPool:
    """Kernels of the configured types started ahead of need (in the background, on
    the event loop that first asks), handed out by :meth:`take` once each."""

    def __init__(self, finder: KernelFinder, settings: PoolSettings) -> None:
        self.finder, self.settings = finder, settings
        self._ready: dict[str, list[_Pooled]] = {}
        self._starting: dict[str, int] = {}
        self._recent: deque[str] = deque(maxlen=max(settings.recent, 0))
        self._counts: dict[str, _Counts] = {}
        self._tasks: set[asyncio.Future[Any]] = set()  # starts, expiries, shutdowns
        self._starts: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # --- what to hold ----------------------------------------------------------------

    def wanted(self) -> dict[str, int]:
        """Kernel id -> how many to keep ready."""
        sizes = {k: t.size for k, t in self.settings.types.items()}
        for kernel_id in self._recent:
            sizes.setdefault(kernel_id, 1)
        return sizes

    def held(self) -> int:
        """Kernels ready or starting."""
        return sum(map(len, self._ready.values())) + sum(self._starting.values())

    def fill(self) -> None:
        """Start (in the background) what is missing, within the cap."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        if loop is not self._loop:  # a kernel belongs to the loop that started it
            return
        for kernel_id, size in self.wanted().items():
            while len(self._ready.get(kernel_id, [])) + self._starting.get(kernel_id, 0) \
                    < size and self.held() < self.settings.cap:
                if self._count(kernel_id).failed >= 3:
                    break  # it keeps failing: no tight loop of failing starts
                self._starting[kernel_id] = self._starting.get(kernel_id, 0) + 1
                self._starts.add(self._spawn(self._start_one(kernel_id)))

    async def filled(self) -> None:
        """Wait until the starts under way are done (ready or failed)."""
        self.fill()
        while self._starts:
            await asyncio.gather(*list(self._starts), return_exceptions=True)

    async def _start_one(self, kernel_id: str) -> None:
        counts = self._count(kernel_id)
        try:
            kernel_type = await self.finder.get_kernel_type(kernel_id)
            if kernel_type.metadata.get("poolable") is False:
                raise KernelProviderError(
                    f"{kernel_id} is not to be held idle in a pool (its provider says so:"
                    " a batch allocation, say; see its documentation)")
            launcher = await self.finder.start_unpooled(kernel_type, None)
        except Exception as exc:  # reported in status; a user's launch says it too
            counts.failed += 1
            counts.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("pool: could not start %s: %s", kernel_id, counts.last_error)
            return
        finally:
            self._starting[kernel_id] -= 1
        counts.started += 1
        counts.failed = 0
        if self._closed:
            await launcher.shutdown()
            return
        self._ready.setdefault(kernel_id, []).append(
            _Pooled(launcher, self._stamp(kernel_type), time.monotonic()))
        idle = self.settings.types.get(kernel_id, PoolTypeSettings(
            idle_timeout=self.settings.idle_timeout)).idle_timeout
        if idle > 0:
            self._spawn(self._expire(kernel_id, launcher, idle))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._starts.discard)
        return task

    async def _expire(self, kernel_id: str, launcher: KernelLauncher, seconds: float) -> None:
        await asyncio.sleep(seconds)
        ready = self._ready.get(kernel_id, [])
        for pooled in list(ready):
            if pooled.launcher is launcher:
                ready.remove(pooled)
                await launcher.shutdown()

    def _count(self, kernel_id: str) -> _Counts:
        return self._counts.setdefault(kernel_id, _Counts())

    def _stamp(self, kernel_type: KernelType) -> str:
        """What the kernel type is now: its description and the mtimes of the files its
        launch depends on (an environment, a kernelspec); a pooled kernel of another
        stamp is stale."""
        provider = self.finder.providers.get(kernel_type.provider)
        inputs = provider.launch_inputs(kernel_type) if provider is not None else None
        mtimes = []
        for path in inputs or []:
            try:
                mtimes.append(os.stat(path).st_mtime_ns)
            except OSError:
                mtimes.append(-1)
        return json.dumps([kernel_type.to_dict(), inputs, mtimes], sort_keys=True,
                          default=str)

    # --- hand-out --------------------------------------------------------------------

    async def take(self, kernel_type: KernelType, options: LaunchOptions | None,
                   caller: Caller | None = None) -> KernelLauncher | None:
        """A ready kernel of ``kernel_type`` set up as ``options`` asks (cwd and env
        applied), never handed out before; None (a miss) if there is none or it cannot
        be made to match. ``caller``: the process asking, if not this one (a kernel
        running here must then look as if that process had started it). Starts a
        replacement in the background either way."""
        kernel_id = kernel_type.id
        if self.settings.recent and kernel_id not in self._recent:
            self._recent.append(kernel_id)
        counts = self._count(kernel_id)
        try:
            launcher, why = await self._matching(kernel_type, options, caller)
        finally:
            self.fill()
        if launcher is None:
            self.missed(kernel_id, why)
        else:
            counts.hits += 1
        return launcher

    def last_miss(self, kernel_id: str) -> str:
        """Why the last request for ``kernel_id`` missed ("" if none did)."""
        return self._count(kernel_id).last_miss

    def missed(self, kernel_id: str, why: str) -> None:
        """Count a request for ``kernel_id`` the pool could not serve, and why."""
        counts = self._count(kernel_id)
        counts.misses += 1
        counts.last_miss = why

    async def _matching(self, kernel_type: KernelType, options: LaunchOptions | None,
                        caller: Caller | None) -> tuple[KernelLauncher | None, str]:
        if asyncio.get_running_loop() is not self._loop:
            return None, "asked from another event loop than the pool's"
        if not adaptable(options):
            return None, ("the request sets what a running kernel cannot take on (its own"
                          " connection, arguments, parameters or start-only variables)")
        ready = self._ready.get(kernel_type.id, [])
        stamp = self._stamp(kernel_type) if ready else ""
        while ready:
            pooled = ready.pop(0)
            if pooled.stamp != stamp or pooled.launcher.poll() is not None:
                self._spawn(pooled.launcher.shutdown())  # stale: the kernel type changed
                continue
            launcher = pooled.launcher
            asked = replace(options) if options is not None else LaunchOptions()
            if caller is not None and isinstance(launcher, LocalLauncher):
                # A local kernel inherits its starter's environment and folder.
                differ = caller.differs_in()
                if differ:
                    ready.insert(0, pooled)
                    return None, (f"the caller's environment differs from the pool"
                                  f" holder's in {', '.join(differ[:5])}: start the pool"
                                  " service from that environment")
                if asked.cwd is None and caller.cwd != os.getcwd():
                    asked.cwd = caller.cwd
            if asked.cwd or asked.env:
                if not await _apply(launcher, asked):
                    self._spawn(launcher.shutdown())
                    return None, "the pooled kernel could not be set up (cwd, env)"
                # A restart starts it with the options it was asked for.
                launcher.launch_options = replace(launcher.launch_options, cwd=asked.cwd,
                                                  env=dict(asked.env))
            if asked.ready_timeout is not None:
                launcher.launch_options.ready_timeout = asked.ready_timeout
            return launcher, ""
        return None, "none ready"

    # --- reporting and ending ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Per kernel type: ready, starting, wanted, hits, misses, why the last miss,
        the last start error, the ready kernels' connection files, and their pids and
        resident memory (bytes) where they run here (None for others)."""
        types = {}
        for kernel_id in sorted(set(self.wanted()) | set(self._counts)):
            counts = self._count(kernel_id)
            ready = self._ready.get(kernel_id, [])
            types[kernel_id] = {
                "ready": len(ready), "starting": self._starting.get(kernel_id, 0),
                "wanted": self.wanted().get(kernel_id, 0), "hits": counts.hits,
                "misses": counts.misses, "last_miss": counts.last_miss or None,
                "last_error": counts.last_error or None,
                "pids": [getattr(p.launcher, "pid", None) for p in ready],
                "connection_files": [p.launcher.connection_file for p in ready],
                "rss": [_rss(p.launcher) for p in ready]}
        return {"cap": self.settings.cap, "held": self.held(), "holder_pid": os.getpid(),
                "holder_rss": _rss_of(os.getpid()), "types": types}

    async def close(self) -> None:
        """Stop every pooled kernel and the starts under way."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        pooled = [p for ready in self._ready.values() for p in ready]
        self._ready.clear()
        await asyncio.gather(*(p.launcher.shutdown() for p in pooled),
                             return_exceptions=True)


def adaptable(options: LaunchOptions | None) -> bool:
    """Whether a kernel started with default options can serve ``options``: not with
    a client's own connection (a transport and loopback address alone are what pooled
    kernels have), extra arguments, provider parameters or variables read only at an
    interpreter's start."""
    if options is None:
        return True
    info = dict(options.connection_info or {})
    own_connection = bool(set(info) - {"transport", "ip"}) or info.get("transport", "tcp") \
        != "tcp" or info.get("ip", "127.0.0.1") not in ("127.0.0.1", "localhost")
    return not (own_connection or options.connection_file or options.extra_argv
                or options.parameters or options.replace_process
                or any(k.startswith(_START_ONLY) for k in options.env))


async def _apply(launcher: KernelLauncher, options: LaunchOptions) -> bool:
    """Give a pooled Python kernel the requested cwd and env by a silent request (no
    history, no execution count, no names left behind); False for a kernel that is not
    IPython's (it is not pooled for such requests)."""
    info = launcher.kernel_info or {}
    if info.get("implementation") != "ipython":
        return False
    code = []
    if options.cwd:
        code.append(f"__import__('os').chdir({options.cwd!r})")
    if options.env:
        code.append(f"__import__('os').environ.update({dict(options.env)!r})")
    try:
        reply = await launcher.execute_silently("; ".join(code))
    except Exception as exc:
        log.warning("pool: could not set up %s: %s", launcher.kernel_type.id, exc)
        return False
    return bool(reply.get("content", {}).get("status") == "ok")


def _rss(launcher: KernelLauncher) -> int | None:
    pid = getattr(launcher, "pid", None)
    return _rss_of(pid) if isinstance(pid, int) else None


def _rss_of(pid: int) -> int | None:
    """Resident memory of process ``pid`` in bytes (Linux), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None
