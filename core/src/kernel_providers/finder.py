"""KernelFinder: every provider's kernels in one call, and launching by id."""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .config import Config, build_options, load_config
from .errors import ConfigError, KernelProviderError, NoSuchKernel
from .exec_plans import standard_inputs
from .launcher import KernelLauncher
from .local import exec_plan_inputs
from .manager import PluginError, ProviderManager, env_disabled
from .parameters import PRESET_OF, configured, resolve_parameters
from .pool import KernelPool, parse_pool
from .pool import adaptable as pool_adaptable
from .provider import KernelProvider, _deadline, _problems
from .switches import switched_off
from .types import ConnectionInfo, KernelType, LaunchOptions, ready_seconds

__all__ = ["PROJECT_ID", "KernelFinder", "ProviderReport", "project_kernel"]

log = logging.getLogger(__name__)

#: the kernel id that means "the kernel of the project enclosing the working directory"
PROJECT_ID = "."


def project_kernel(kernels: Iterable[KernelType]) -> KernelType | None:
    """The kernel the id ``.`` picks among ``kernels``: of the working directory's
    project, launchable, its Python kernel before its other kernelspecs."""
    ours = [k for k in kernels if k.in_project and k.launchable]
    ours.sort(key=lambda k: (k.language != "python", "kernelspec" in k.metadata, k.id))
    return ours[0] if ours else None


@dataclass
class ProviderReport:
    """How one provider's last discovery went (``kernel-providers providers``)."""

    id: str
    plugin: str
    distribution: str | None
    version: str | None
    status: str = "not run"  # "ok", "error" or "not run"
    message: str = ""
    kernel_count: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape printed by ``kernel-providers providers --json``."""
        return {
            "id": self.id, "plugin": self.plugin, "distribution": self.distribution,
            "version": self.version, "status": self.status, "message": self.message,
            "kernel_count": self.kernel_count, "seconds": round(self.seconds, 4),
            "problems": self.problems,
        }


@dataclass
class _Discovery:
    at: float
    kernels: list[KernelType]
    report: ProviderReport


@dataclass
class _Asking:
    """One call of a provider's ``find_kernels``, which may outlive the discovery that
    made it (see KernelFinder._ask)."""

    task: asyncio.Task[list[KernelType]]
    problems: list[str]
    since: float


class _Restarter:
    """The owner of a kernel the pool service handed out: a restart starts it here
    (cold); its end is the service's to report (it started it)."""

    def __init__(self, finder: KernelFinder) -> None:
        self.finder = finder

    async def relaunch(self, launcher: KernelLauncher,
                       options: LaunchOptions) -> KernelLauncher:
        # Discovered here first: the service's kernel needed none in this process.
        kernel_type = await self.finder.get_kernel_type(launcher.kernel_type.id)
        return await self.finder.start_unpooled(kernel_type, options)

    def stopped(self, launcher: KernelLauncher, status: int | None) -> None:
        pass


class KernelFinder:
    """Finds kernels through every registered provider and launches them by id.

    Plugins come from the ``kernel_providers`` entry points (unless ``autoload`` is
    false or ``KERNEL_PROVIDERS_NO_AUTOLOAD`` is set) and from ``plugins`` /
    :meth:`register`. Discovery asks every provider concurrently, each under
    ``discovery_timeout``; results are cached for ``cache_ttl`` seconds. ``launch``
    hands out a ready kernel when this user's pool service or this finder's own pool
    (``[pool]`` in the config, unless ``pool`` is false) has one.
    """

    def __init__(self, config: Config | None = None, *, autoload: bool = True,
                 plugins: Iterable[Any] = (), pool: bool = True) -> None:
        self.config = config if config is not None else load_config()
        self.disabled = env_disabled() | set(self.config.disable)
        self._manager = ProviderManager()
        # Entry points load on first use: a launch the pool service serves needs none.
        self._autoload = autoload
        self._providers: dict[str, KernelProvider[Any]] | None = None
        self._config_errors: dict[str, str] = {}
        self._cache: dict[str, _Discovery] = {}
        self._running: dict[str, asyncio.Future[_Discovery]] = {}
        self._asking: dict[str, _Asking] = {}
        #: the warm pool ([pool] in the config; not with ``pool=False``: a short-lived
        #: process only asks the pool service), or None
        self.pool = KernelPool(self, parse_pool(self.config.pool)) \
            if self.config.pool and pool else None
        for plugin in plugins:
            self.register(plugin)

    # --- plugins and providers -------------------------------------------------------

    @property
    def manager(self) -> ProviderManager:
        """The plugin manager, with the entry-point plugins loaded (on first use)."""
        if self._autoload:
            self._autoload = False
            self._manager.load_entry_points(self.disabled)
        return self._manager

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin in code (apps, tests); returns its name."""
        registered = self.manager.register_plugin(plugin, name)
        self._providers = None
        self._cache.clear()
        return registered

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``finder.hook.kernel_started(...)``)."""
        return self.manager.hook

    @property
    def plugin_errors(self) -> list[PluginError]:
        """Plugins that failed to load or to register their providers."""
        return list(self.manager.errors)

    @property
    def providers(self) -> dict[str, KernelProvider[Any]]:
        """Registered providers by id, sorted, each configured from its config table."""
        if self._providers is None:
            found = self.manager.collect_providers(self.disabled)
            self._config_errors = {}
            for provider in found.values():
                self._configure(provider)
            self._providers = dict(sorted(found.items()))
        return self._providers

    def _configure(self, provider: KernelProvider[Any]) -> None:
        table = self.config.provider_table(provider.id)
        if provider.config_class is None:
            return
        where = f"{self.config.path or 'config'} [providers.{provider.id}]"
        try:
            provider.config = build_options(provider.config_class, table, where)
        except ConfigError as exc:
            self._config_errors[provider.id] = str(exc)

    def _provider(self, provider_id: str) -> KernelProvider[Any]:
        try:
            return self.providers[provider_id]
        except KeyError:
            close = difflib.get_close_matches(provider_id, list(self.providers), n=3)
            hint = (f"no provider {provider_id!r} is installed"
                    + (" or enabled" if provider_id in self.disabled else ""))
            raise NoSuchKernel(provider_id + "/...", [m + "/..." for m in close],
                               hint) from None

    # --- discovery ---------------------------------------------------------------------

    async def find_kernels(self, refresh: bool = False, provider: str | None = None,
                           all: bool = False) -> list[KernelType]:
        """Every kernel of every provider (or of ``provider``): those of the working
        directory's project first, then by id. With ``all``, also those listed only to
        say what they lack (``launchable`` false: an environment without ipykernel).

        Providers whose cached answer is older than ``cache_ttl`` (or all, with
        ``refresh``) are asked again, concurrently. A provider that fails or hangs is
        reported in :attr:`reports` and contributes nothing; one that hangs is not asked
        again while its call runs on (see :meth:`_ask`).
        """
        ids = [provider] if provider is not None else list(self.providers)
        if provider is not None:
            self._provider(provider)
        now = time.monotonic()
        stale = [p for p in ids if refresh or p not in self._cache
                 or now - self._cache[p].at > self._ttl(p)]
        if stale:
            results = await asyncio.gather(*(self._discover_once(p) for p in stale))
            for pid, discovery in zip(stale, results, strict=True):
                self._cache[pid] = discovery
        kernels = [k for p in ids for k in self._cache[p].kernels if all or k.launchable]
        return sorted(kernels, key=lambda k: (not k.in_project, k.id))

    def _ttl(self, provider_id: str) -> float:
        own = self.providers[provider_id].cache_ttl
        return self.config.cache_ttl if own is None else own

    @property
    def reports(self) -> list[ProviderReport]:
        """The last discovery report of every provider (``not run`` before the first)."""
        out = []
        for pid, provider in self.providers.items():
            if pid in self._cache:
                out.append(self._cache[pid].report)
            else:
                out.append(self._new_report(provider))
        return out

    def _new_report(self, provider: KernelProvider[Any]) -> ProviderReport:
        return ProviderReport(provider.id, provider.plugin_name, provider.distribution,
                              provider.version)

    async def _discover_once(self, provider_id: str) -> _Discovery:
        # Concurrent callers (e.g. many launches at once) share one discovery.
        running = self._running.get(provider_id)
        if running is None or running.get_loop() is not asyncio.get_running_loop():
            running = asyncio.ensure_future(self._discover(self.providers[provider_id]))
            self._running[provider_id] = running
            running.add_done_callback(lambda _: self._running.pop(provider_id, None))
        return await asyncio.shield(running)

    async def _discover(self, provider: KernelProvider[Any]) -> _Discovery:
        report = self._new_report(provider)
        started = time.perf_counter()
        kernels: list[KernelType] = []
        if provider.id in self._config_errors:
            report.status, report.message = "error", self._config_errors[provider.id]
            return _Discovery(time.monotonic(), [], report)
        now = time.monotonic()
        asking = self._ask(provider)
        problems = asking.problems
        try:
            found = await asyncio.wait_for(asyncio.shield(asking.task),
                                           self.config.discovery_timeout)
            seen: set[str] = set()
            for kernel in found:
                if not isinstance(kernel, KernelType) or kernel.provider != provider.id:
                    problems.append(f"ignored {kernel!r}: not a KernelType of {provider.id!r}")
                elif kernel.id in seen:
                    problems.append(f"ignored a second kernel with id {kernel.id!r}")
                else:
                    seen.add(kernel.id)
                    table = self.config.kernels.get(kernel.id)  # [kernels."<id>"]
                    kernels += configured(kernel, table) if table else [kernel]
            report.status = "ok"
        except (asyncio.TimeoutError, TimeoutError):
            report.status = "error"
            since = (f" (still waiting for the discovery started"
                     f" {time.monotonic() - asking.since:.0f} s ago: no new one until it ends)"
                     if asking.since < now else "")
            report.message = (f"no answer within {self.config.discovery_timeout:g} s"
                              f"{since}; raise discovery_timeout in the config, or disable"
                              f" it with KERNEL_PROVIDERS_DISABLE={provider.id}")
        except Exception as exc:
            report.status = "error"
            report.message = (str(exc) if isinstance(exc, KernelProviderError)
                              else f"{type(exc).__name__}: {exc}")
            log.debug("provider %s failed", provider.id, exc_info=True)
        report.seconds = time.perf_counter() - started
        report.kernel_count = len(kernels)
        report.problems = problems
        return _Discovery(time.monotonic(), sorted(kernels, key=lambda k: k.id), report)

    def _ask(self, provider: KernelProvider[Any]) -> _Asking:
        """A new call of ``provider.find_kernels()``, or the one still running on this loop.

        A call the finder gave up on is not cancelled, and no second one starts while it
        runs: cancelling would not stop the threads it waits for (asyncio.to_thread), so
        each refresh would leave one more blocked in a hung socket or subprocess until
        they filled the loop's shared thread pool and starved every other provider.
        """
        loop = asyncio.get_running_loop()
        asking = self._asking.get(provider.id)
        if asking is not None and not asking.task.done() and asking.task.get_loop() is loop:
            return asking
        problems: list[str] = []
        deadline = time.monotonic() + self.config.discovery_timeout

        async def ask() -> list[KernelType]:
            _problems.set(problems)
            _deadline.set(deadline)  # KernelProvider.discovery_time_left()
            return await provider.find_kernels()

        task = asyncio.ensure_future(ask())
        task.add_done_callback(_retrieve)
        asking = self._asking[provider.id] = _Asking(task, problems, time.monotonic())
        return asking

    async def get_kernel_type(self, kernel_id: str) -> KernelType:
        """The kernel type with this id (``.``: the working directory's project's
        kernel); :class:`NoSuchKernel` names close matches."""
        if kernel_id == PROJECT_ID:
            return await self._project_kernel()
        provider_id, _, name = kernel_id.partition("/")
        if not provider_id or not name:
            raise NoSuchKernel(kernel_id, [], "a kernel id is <provider>/<name>, e.g."
                               " spec/python3")
        self._provider(provider_id)
        if provider_id in self._cache:  # listed before: the provider re-checks at launch
            for kernel in self._cache[provider_id].kernels:
                if kernel.id == kernel_id:
                    return kernel
        for refresh in (False, True):  # a kernel installed since the cache was filled
            kernels = await self.find_kernels(refresh=refresh, provider=provider_id, all=True)
            for kernel in kernels:
                if kernel.id == kernel_id:
                    return kernel
            if refresh is False and provider_id in self._cache and (
                    time.monotonic() - self._cache[provider_id].at < 0.5
                    or self._ttl(provider_id) == 0):
                break  # just discovered: asking again would find the same
        report = self._cache[provider_id].report
        by_name: dict[str, list[str]] = {}
        for discovery in self._cache.values():
            for kernel in discovery.kernels:
                by_name.setdefault(kernel.name, []).append(kernel.id)
        close = [i for match in difflib.get_close_matches(name, list(by_name), n=3)
                 for i in by_name[match]][:3]
        raise NoSuchKernel(kernel_id, close, _why_missing(report, name))

    async def _project_kernel(self) -> KernelType:
        kernels = await self.find_kernels(all=True)
        chosen = project_kernel(kernels)
        if chosen is not None:
            return chosen
        kernels = [k for k in kernels if k.in_project]
        try:
            here = os.getcwd()
        except OSError:
            here = "the working directory (removed)"
        if kernels:
            raise NoSuchKernel(PROJECT_ID, [], f"the environment of the project enclosing"
                               f" {here} ({kernels[0].id}) has no ipykernel:"
                               f" {kernels[0].metadata.get('hint', 'install it there')}")
        raise NoSuchKernel(PROJECT_ID, [], f"no project encloses {here} (a folder with a"
                           " pyproject.toml or pixi.toml and its environment: .venv,"
                           " .pixi/envs, hatch's or PDM's)")

    # --- launching ---------------------------------------------------------------------

    async def launch(self, kernel_id: str, options: LaunchOptions | None = None, *,
                     wait_ready: bool = True) -> KernelLauncher:
        """Start the kernel ``kernel_id`` and (by default) wait until it is ready.

        Routes by the id's provider prefix; applies the ``kernel_launch_options``
        hooks; on any failure the launch is cleaned up before the error propagates.
        """
        if kernel_id == PROJECT_ID:  # (this process's working directory, not a pool's)
            kernel_id = (await self.get_kernel_type(kernel_id)).id
        pooled = await self.take_pooled(kernel_id, options)
        if pooled is not None:  # (its start was observed where it started)
            return pooled
        kernel_type = await self.get_kernel_type(kernel_id)
        return await self._launch(kernel_type, options, wait_ready)

    async def take_pooled(self, kernel_id: str,
                          options: LaunchOptions | None = None) -> KernelLauncher | None:
        """A ready kernel of ``kernel_id`` set up as ``options`` asks, from this user's
        pool service (asked without discovery here: the service knows its kernel
        types), else from this finder's pool (not while a service runs: it is the pool
        the user chose); None if there is none (nothing is started then)."""
        if not switched_off("KERNEL_PROVIDERS_POOL"):
            from .pool_service import socket_path, take

            if socket_path().exists():
                asked = options or LaunchOptions()
                launcher = await take(kernel_id, asked.cwd, dict(asked.env)) \
                    if pool_adaptable(options) else None
                if launcher is not None:
                    launcher.managed_by(_Restarter(self))
                return launcher
        if self.pool is not None:
            return await self.pool.take(await self.get_kernel_type(kernel_id), options)
        return None

    async def start_unpooled(self, kernel_type: KernelType,
                             options: LaunchOptions | None) -> KernelLauncher:
        """Start ``kernel_type`` (ready), not asking the pool: how the pool fills."""
        return await self._launch(kernel_type, options, True)

    async def _launch(self, kernel_type: KernelType, options: LaunchOptions | None,
                      wait_ready: bool) -> KernelLauncher:
        if kernel_type.provider in self._config_errors:
            raise ConfigError(self._config_errors[kernel_type.provider])
        options = replace(options) if options is not None else LaunchOptions()
        if options.ready_timeout is None:
            options.ready_timeout = self.config.ready_timeout
        options.env = dict(options.env)
        # Checked before anything starts; the values in force (defaults filled in) are
        # the launcher's (a restart keeps them).
        options.parameters = resolve_parameters(kernel_type, options.parameters)
        if PRESET_OF in kernel_type.metadata:  # its provider knows the kernel it presets
            kernel_type = await self.get_kernel_type(kernel_type.metadata[PRESET_OF])
        options.extra_argv = list(options.extra_argv)
        self.hook.kernel_launch_options(kernel_type=kernel_type, options=options)
        provider = self.providers[kernel_type.provider]
        recording = exec_plan_inputs.set(self._exec_plan_inputs(provider, kernel_type,
                                                                options))
        try:
            launcher = await provider.launch(kernel_type, options)
        finally:
            exec_plan_inputs.reset(recording)
        launcher.managed_by(self)
        if wait_ready:
            try:
                await launcher.wait_ready(ready_seconds(options))
            except BaseException:
                await asyncio.shield(launcher.cleanup())
                raise
        self._observe("kernel_started", launcher=launcher)
        return launcher

    def _exec_plan_inputs(self, provider: KernelProvider[Any], kernel_type: KernelType,
                          options: LaunchOptions) -> list[str] | None:
        """What an exec plan of this launch depends on; None: do not record one (not a
        replacing launch, a hook may change its options, or inputs unknown)."""
        if not (options.replace_process and options.connection_file) \
                or self.config.path is None \
                or self.hook.kernel_launch_options.get_hookimpls():
            return None
        inputs = provider.launch_inputs(kernel_type)
        if inputs is None:
            return None
        # the provider's own code too: an edited (editable-installed) provider counts
        module = sys.modules.get(type(provider).__module__)
        code = [path] if (path := getattr(module, "__file__", None)) else []
        return [*standard_inputs(str(self.config.path)), *code, *inputs]

    async def attach(self, kernel_id: str, state: dict[str, Any],
                     connection_info: ConnectionInfo) -> KernelLauncher:
        """A launcher for a running kernel that another process started, from that
        launcher's ``attach_state()`` and ``connection_info``; LaunchFailed if its
        provider cannot re-attach (or the kernel is gone)."""
        kernel_type = await self.get_kernel_type(kernel_id)
        provider = self.providers[kernel_type.provider]
        launcher = await provider.attach(kernel_type, state, connection_info)
        launcher.managed_by(self)
        return launcher

    async def relaunch(self, launcher: KernelLauncher,
                       options: LaunchOptions) -> KernelLauncher:
        """Start ``launcher``'s kernel type again, with ``options`` (``restart``)."""
        return await self._launch(launcher.kernel_type, options, True)

    def stopped(self, launcher: KernelLauncher, status: int | None) -> None:
        """A kernel this finder launched ended: the ``kernel_stopped`` hooks hear it."""
        self._observe("kernel_stopped", launcher=launcher, status=status)

    def _observe(self, name: str, **kwargs: Any) -> None:
        def failed(plugin: str, exc: Exception) -> None:
            log.error("the %s hook of plugin %r failed for %s: %s: %s", name, plugin,
                      kwargs["launcher"].kernel_type.id, type(exc).__name__, exc,
                      exc_info=exc)

        self.manager.call_each(name, failed, **kwargs)


def _retrieve(task: asyncio.Task[list[KernelType]]) -> None:
    # Nobody awaits a call that failed after its discovery gave up: without this, asyncio
    # would log "Task exception was never retrieved".
    if not task.cancelled():
        task.exception()


def _why_missing(report: ProviderReport, name: str) -> str:
    """What the provider said that may explain a missing kernel ``<provider>/<name>``:
    its failure, and the problems naming a part of ``name`` (a host, an environment)."""
    parts = [f"provider {report.id!r} failed: {report.message}"] \
        if report.status == "error" else []
    segments = [s for s in name.split("/") if s]
    parts += [p for p in report.problems if any(s in p for s in segments)]
    return "; ".join(parts)

