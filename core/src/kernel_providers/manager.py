"""The plugin manager: tolerant entry-point loading and provider registration."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .entry_points import EntryPoint, entry_points
from .provider import KernelProvider
from .switches import switched_on
from .types import validate_provider_id

__all__ = ["ENTRY_POINT_GROUP", "PER_PLUGIN_HOOKS", "PluginError", "ProviderManager",
           "env_disabled"]

ENTRY_POINT_GROUP = "kernel_providers"
#: Hooks called for each plugin on its own (one that raises is reported, the others
#: still run); they cannot have wrappers.
PER_PLUGIN_HOOKS = frozenset({"register_kernel_providers", "register_cli_commands",
                              "kernel_started", "kernel_stopped"})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginError:
    """A plugin (or one of its providers) that could not be loaded, and why."""

    plugin: str
    distribution: str | None
    message: str

    def __str__(self) -> str:
        where = f" (from {self.distribution})" if self.distribution else ""
        return (f"plugin {self.plugin!r}{where}: {self.message}; set"
                f" KERNEL_PROVIDERS_DISABLE={self.plugin} to skip it")


@functools.lru_cache(maxsize=4)
def _entry_points(path: tuple[str, ...]) -> list[EntryPoint]:
    # Once per sys.path (the command line builds two managers); a changed sys.path may
    # hold other distributions.
    return sorted(entry_points(ENTRY_POINT_GROUP, list(path)), key=lambda e: e.name)


def env_disabled() -> set[str]:
    """Plugin names and provider ids listed in ``KERNEL_PROVIDERS_DISABLE``."""
    return {n.strip() for n in os.environ.get("KERNEL_PROVIDERS_DISABLE", "").split(",")
            if n.strip()}


class ProviderManager(pluggy.PluginManager):
    """pluggy's PluginManager for the ``kernel_providers`` project.

    Loads entry points one by one (a broken plugin is recorded, never fatal), asks each
    plugin for its providers separately and stamps every provider with the plugin and
    distribution it came from.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.errors: list[PluginError] = []
        self._origins: dict[str, tuple[str | None, str | None]] = {}
        if switched_on("KERNEL_PROVIDERS_TRACE"):
            self.trace.root.setwriter(sys.stderr.write)
            self.enable_tracing()

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """pluggy's ``register``, refusing wrappers of the hooks called per plugin."""
        registered = super().register(plugin, name)
        for caller in self.get_hookcallers(plugin) or ():
            if caller.name in PER_PLUGIN_HOOKS and any(
                    impl.plugin is plugin and (impl.wrapper or impl.hookwrapper)
                    for impl in caller.get_hookimpls()):
                self.unregister(plugin)
                raise ValueError(
                    f"plugin {registered!r}: {caller.name} is called for each plugin on its"
                    " own, so it cannot be a wrapper (wrapper=True / hookwrapper=True);"
                    " make it a plain @hookimpl")
        return registered

    def call_each(self, name: str, on_error: Callable[[str, Exception], None],
                  **kwargs: Any) -> list[tuple[str, Any]]:
        """Call hook ``name`` for each plugin on its own, in pluggy's order and through
        pluggy (so ``tryfirst``/``trylast`` and ``KERNEL_PROVIDERS_TRACE`` apply); returns
        (plugin name, result) of those that returned, and hands (plugin name, exception)
        of those that raised to ``on_error``: one failing plugin never silences another
        (a plain hook call would stop at the first exception)."""
        impls = getattr(self.hook, name).get_hookimpls()
        results: list[tuple[str, Any]] = []
        for impl in reversed(impls):  # pluggy calls the last of the list first
            others = [other.plugin for other in impls if other is not impl]
            try:
                returned = self.subset_hook_caller(name, others)(**kwargs)
            except Exception as exc:
                on_error(impl.plugin_name, exc)
                continue
            results.append((impl.plugin_name, returned[0] if returned else None))
        return results

    def register_plugin(self, plugin: Any, name: str | None = None,
                        distribution: str | None = None, version: str | None = None) -> str:
        """Register ``plugin`` (a module or object with hookimpls); returns its name."""
        registered = self.register(plugin, name=name)
        assert registered is not None  # None only for blocked names, which we never block
        self._origins[registered] = (distribution, version)
        return registered

    def load_entry_points(self, disabled: set[str] | frozenset[str] = frozenset()) -> None:
        """Load every plugin of the ``kernel_providers`` entry-point group, one by one.

        Skipped when ``KERNEL_PROVIDERS_NO_AUTOLOAD`` is set. A plugin named in
        ``disabled`` is not imported at all.
        """
        if switched_on("KERNEL_PROVIDERS_NO_AUTOLOAD"):
            return
        seen: set[str] = set()
        for ep in _entry_points(tuple(sys.path)):
            dist, version = ep.distribution, ep.version
            if ep.name in disabled or ep.name in seen or self.has_plugin(ep.name):
                continue
            seen.add(ep.name)
            try:
                plugin = ep.load()
                self.register_plugin(plugin, ep.name, dist, version)
            except Exception as exc:
                self._fail(ep.name, dist, f"failed to load: {type(exc).__name__}: {exc}")

    def _fail(self, plugin: str, dist: str | None, message: str) -> None:
        error = PluginError(plugin, dist, message)
        self.errors.append(error)
        log.warning("%s", error)
        log.debug("%s", traceback.format_exc())

    def collect_providers(self, disabled: set[str] | frozenset[str] = frozenset()
                          ) -> dict[str, KernelProvider[Any]]:
        """Call every plugin's ``register_kernel_providers`` on its own.

        One failing plugin cannot hide the others (a plain hook call would stop at the
        first exception). Providers whose id is in ``disabled`` are left out; a
        duplicate id keeps the first provider and reports both distributions.
        """
        providers: dict[str, KernelProvider[Any]] = {}

        def failed(name: str, exc: Exception) -> None:
            self._fail(name, self._origins.get(name, (None, None))[0],
                       f"register_kernel_providers raised {type(exc).__name__}: {exc}")

        # In registration order (pluggy calls the newest first): the first keeps an id.
        returned = self.call_each("register_kernel_providers", failed)
        for name, result in reversed(returned):
            dist, version = self._origins.get(name, (None, None))
            try:
                yielded: list[Any] = list(result or ())  # a generator runs only now
            except Exception as exc:
                failed(name, exc)
                continue
            for provider in yielded:
                if not isinstance(provider, KernelProvider):
                    self._fail(name, dist, f"yielded {provider!r}, not a KernelProvider")
                    continue
                try:
                    validate_provider_id(provider.id)
                except ValueError as exc:
                    self._fail(name, dist, str(exc))
                    continue
                if provider.id in disabled:
                    continue
                if provider.id in providers:
                    first = providers[provider.id]
                    self._fail(name, dist, f"provider id {provider.id!r} is already taken by"
                               f" plugin {first.plugin_name!r}"
                               f" (from {first.distribution or 'code'}); the first"
                               " registered keeps it")
                    continue
                provider.plugin_name, provider.distribution, provider.version = (
                    name, dist, version)
                providers[provider.id] = provider
        return providers
