"""The provider author's toolkit: everything a provider plugin may use from the core.

Providers import from here and nowhere else in ``kernel_providers`` (a test holds every
provider in this repository to it); whatever is not here is the core's own business
and may change. Applications that *use* kernels import from ``kernel_providers``.

- the contract: :class:`KernelProvider`, :class:`KernelLauncher`, :class:`KernelType`,
  :class:`LaunchOptions`, the hook marker and :func:`report_problem`;
- local kernels: :func:`launch_local` (which a provider of local kernels calls and is
  done), :func:`build_env`, :func:`substitute_argv`;
- kernelspecs: reading and scanning ``kernel.json`` folders;
- kernels that run elsewhere (containers, remote hosts, batch jobs): the connection the
  kernel gets and the one the client gets back, waiting for a kernel's own ports, and
  :class:`WatchedLauncher`, whose end the provider's watcher reports;
- nothing left behind: :func:`undo_if_orphaned` registers what the per-process reaper
  removes (a container, a job) if the launching process dies before cleanup — pass its
  :class:`Undo` to ``launcher.cancel_at_cleanup``; :func:`owner_tag`, :func:`verify_tag`,
  :func:`process_stamp`, :func:`stamp_alive`, :func:`claim` and :func:`claimed` tell
  ``cleanup_orphans`` what is ours and no longer owned;
- configuration tables and the errors every provider raises.
"""

from __future__ import annotations

from . import _lazy_attribute

# Names load on first use, as in the package itself: a plugin module that only
# registers its provider (every command loads it) pays for what it touches.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import build_options
    from .connection import (
        PORT_NAMES,
        dictated_connection,
        new_connection_info,
        remove_connection_file,
        write_connection_file,
    )
    from .elsewhere import (
        WATCH_LOST,
        WatchedLauncher,
        client_connection,
        keep_key,
        kernel_connection,
        wait_for_ports,
    )
    from .errors import (
        ConfigError,
        KernelDied,
        KernelProviderError,
        LaunchFailed,
        ProviderUnavailable,
        ReadyTimeout,
    )
    from .hookspecs import hookimpl
    from .kernelspecs import (
        KernelSpec,
        alias_of,
        kernel_dirs_stamp,
        parse_kernel_spec,
        read_kernel_spec,
        scan_kernel_dirs,
    )
    from .launcher import KernelLauncher, OutputBuffer
    from .local import LocalLauncher, build_env, launch_local, substitute_argv
    from .orphans import Undo, undo_if_orphaned
    from .ownership import (
        claim,
        claimed,
        owner_tag,
        process_stamp,
        stamp_alive,
        verify_tag,
    )
    from .parameters import ParameterError
    from .per_process import PerProcess
    from .protocol import heartbeat_answers
    from .provider import (
        PROGRESS_LOGGER,
        KernelProvider,
        problems_reported,
        report_problem,
        report_progress,
    )
    from .text import one_line
    from .types import ConnectionInfo, InterruptMode, KernelType, LaunchOptions, ready_seconds

_MODULES = {
    "config": ("build_options",),
    "connection": (
        "PORT_NAMES", "dictated_connection", "new_connection_info", "remove_connection_file",
        "write_connection_file",
    ),
    "elsewhere": (
        "WATCH_LOST", "WatchedLauncher", "client_connection", "kernel_connection", "keep_key",
        "wait_for_ports",
    ),
    "errors": (
        "ConfigError", "KernelDied", "KernelProviderError", "LaunchFailed",
        "ProviderUnavailable", "ReadyTimeout",
    ),
    "hookspecs": ("hookimpl",),
    "kernelspecs": (
        "KernelSpec", "alias_of", "kernel_dirs_stamp", "parse_kernel_spec", "read_kernel_spec",
        "scan_kernel_dirs",
    ),
    "launcher": ("KernelLauncher", "OutputBuffer"),
    "local": ("LocalLauncher", "build_env", "launch_local", "substitute_argv"),
    "orphans": ("Undo", "undo_if_orphaned"),
    "parameters": ("ParameterError",),
    "per_process": ("PerProcess",),
    "ownership": ("claim", "claimed", "owner_tag", "process_stamp", "stamp_alive", "verify_tag"),
    "protocol": ("heartbeat_answers",),
    "provider": ("PROGRESS_LOGGER", "KernelProvider", "problems_reported", "report_problem",
                 "report_progress"),
    "text": ("one_line",),
    "types": ("ConnectionInfo", "InterruptMode", "KernelType", "LaunchOptions", "ready_seconds"),
}
_HOMES = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "PORT_NAMES",
    "PROGRESS_LOGGER",
    "WATCH_LOST",
    "ConfigError",
    "ConnectionInfo",
    "InterruptMode",
    "KernelDied",
    "KernelLauncher",
    "KernelProvider",
    "KernelProviderError",
    "KernelSpec",
    "KernelType",
    "LaunchFailed",
    "LaunchOptions",
    "LocalLauncher",
    "OutputBuffer",
    "ParameterError",
    "PerProcess",
    "ProviderUnavailable",
    "ReadyTimeout",
    "Undo",
    "WatchedLauncher",
    "alias_of",
    "build_env",
    "build_options",
    "claim",
    "claimed",
    "client_connection",
    "dictated_connection",
    "heartbeat_answers",
    "hookimpl",
    "keep_key",
    "kernel_connection",
    "kernel_dirs_stamp",
    "launch_local",
    "new_connection_info",
    "one_line",
    "owner_tag",
    "parse_kernel_spec",
    "problems_reported",
    "process_stamp",
    "read_kernel_spec",
    "ready_seconds",
    "remove_connection_file",
    "report_problem",
    "report_progress",
    "scan_kernel_dirs",
    "stamp_alive",
    "substitute_argv",
    "undo_if_orphaned",
    "verify_tag",
    "wait_for_ports",
    "write_connection_file",
]


def __getattr__(name: str) -> object:
    return _lazy_attribute(globals(), _HOMES, name, __name__)
