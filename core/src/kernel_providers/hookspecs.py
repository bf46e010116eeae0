"""The pluggy hook specification of kernel-providers: every hook is declared here.

A plugin is a module (or object) with functions marked ``@hookimpl``, found through the
``kernel_providers`` entry-point group or registered in code with
``KernelFinder.register(plugin)``. A hookimpl may accept fewer arguments than its spec,
so arguments are only ever added, never removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .launcher import KernelLauncher
    from .provider import KernelProvider
    from .types import KernelType, LaunchOptions

PROJECT_NAME = "kernel_providers"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -------------------------------------------------------------------------
# registration
# -------------------------------------------------------------------------


@hookspec
def register_kernel_providers() -> Iterable[KernelProvider[Any]]:
    """Yield the kernel providers this plugin offers.

    Called once by the plugin manager after all plugins are loaded, before the first
    discovery. Each yielded provider is stamped with the plugin and distribution it came
    from. Import heavy libraries (SDKs, clients) inside the provider's methods, never here.

    :return: an iterable of :class:`~kernel_providers.KernelProvider` objects.
    """
    raise NotImplementedError


@hookspec
def register_cli_commands(subparsers: Any) -> None:
    """Add subcommands to the ``kernel-providers`` command.

    Called once per command-line run, for each plugin on its own, while the argument
    parser is built (a plugin that raises is reported and left out). Add parsers with
    ``subparsers.add_parser(...)`` and set ``handler`` to an async function taking the
    parsed arguments and returning the exit status:
    ``parser.set_defaults(handler=run)``. ``args.finder`` is the command's
    :class:`~kernel_providers.KernelFinder` (the one that loaded the plugins); use it
    rather than making another.

    :param subparsers: the ``argparse`` subparsers action of ``kernel-providers``.
    """


# -------------------------------------------------------------------------
# launching
# -------------------------------------------------------------------------


@hookspec
def kernel_launch_options(kernel_type: KernelType, options: LaunchOptions) -> None:
    """Adjust the options of a launch before any provider sees them.

    Called by :meth:`KernelFinder.launch` for every launch (restarts included), as
    pluggy orders hookimpls (the most recently registered first; ``tryfirst`` /
    ``trylast`` pin one), each seeing the changes of the ones before. Mutate
    ``options`` in place: add environment variables, extra argv, provider params or a
    longer ready timeout.

    :param kernel_type: the kernel about to be started.
    :param options: the options of this launch, to modify.
    """


@hookspec
def kernel_started(launcher: KernelLauncher) -> None:
    """Observe a kernel that has started and answered the ready check.

    Called by :meth:`KernelFinder.launch` once ``wait_ready`` succeeded (audit logs,
    metrics, pools), each hookimpl on its own: one that raises is logged and neither
    stops the kernel nor the other hookimpls.

    :param launcher: the running kernel.
    """


@hookspec
def kernel_stopped(launcher: KernelLauncher, status: int | None) -> None:
    """Observe a kernel that has ended and been cleaned up.

    Called once per launcher by :meth:`KernelLauncher.cleanup` (so by ``shutdown`` too),
    for kernels started through a :class:`KernelFinder`, each hookimpl on its own: one
    that raises is logged and neither stops the cleanup nor the other hookimpls.

    :param launcher: the ended kernel.
    :param status: its exit status as ``poll()`` reports it (``None`` if unknown).
    """
