"""kernel-providers: find and start Jupyter kernels anywhere through one contract.

The public API is what ``__all__`` lists; every other module is an implementation detail
unless its own ``__all__`` says otherwise.
"""

from __future__ import annotations

import importlib

# Names load on first use, so that a short-lived process (the Jupyter bridge"s shim
# replaying an exec plan) does not pay for asyncio, pyzmq and the plugin machinery.
# (Not imported from typing, which costs as much again; type checkers know the name.)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .blocking import BlockingKernel, BlockingKernelFinder
    from .config import Config, ConfigWarning, load_config
    from .errors import (
        ConfigError,
        KernelDied,
        KernelProviderError,
        LaunchFailed,
        NoSuchKernel,
        ProviderUnavailable,
        ReadyTimeout,
    )
    from .finder import KernelFinder, ProviderReport
    from .hookspecs import hookimpl
    from .launcher import KernelLauncher, OutputBuffer
    from .local import LocalLauncher, launch_local
    from .parameters import ParameterError
    from .provider import KernelProvider, report_problem
    from .types import ConnectionInfo, KernelType, LaunchOptions

_HOMES = {
    **dict.fromkeys(["BlockingKernel", "BlockingKernelFinder"], "blocking"),
    **dict.fromkeys(["Config", "ConfigWarning", "load_config"], "config"),
    **dict.fromkeys(["ConfigError", "KernelDied", "KernelProviderError", "LaunchFailed",
                     "NoSuchKernel", "ProviderUnavailable", "ReadyTimeout"], "errors"),
    **dict.fromkeys(["KernelFinder", "ProviderReport"], "finder"),
    **dict.fromkeys(["hookimpl"], "hookspecs"),
    **dict.fromkeys(["KernelLauncher", "OutputBuffer"], "launcher"),
    **dict.fromkeys(["LocalLauncher", "launch_local"], "local"),
    **dict.fromkeys(["ParameterError"], "parameters"),
    **dict.fromkeys(["KernelProvider", "report_problem"], "provider"),
    **dict.fromkeys(["ConnectionInfo", "KernelType", "LaunchOptions"], "types"),
}

__version__ = "0.1.0"

__all__ = [
    "BlockingKernel",
    "BlockingKernelFinder",
    "Config",
    "ConfigError",
    "ConfigWarning",
    "ConnectionInfo",
    "KernelDied",
    "KernelFinder",
    "KernelLauncher",
    "KernelProvider",
    "KernelProviderError",
    "KernelType",
    "LaunchFailed",
    "LaunchOptions",
    "LocalLauncher",
    "NoSuchKernel",
    "OutputBuffer",
    "ParameterError",
    "ProviderReport",
    "ProviderUnavailable",
    "ReadyTimeout",
    "__version__",
    "hookimpl",
    "launch_local",
    "load_config",
    "report_problem",
]


def _lazy_attribute(namespace: dict[str, object], homes: dict[str, str], name: str,
                    module: str) -> object:
    """Attribute ``name`` of a module that imports its names on first use: taken from
    its home module (``homes``), then kept in the module's ``namespace``."""
    if name not in homes:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"kernel_providers.{homes[name]}"), name)
    namespace[name] = value
    return value


def __getattr__(name: str) -> object:
    return _lazy_attribute(globals(), _HOMES, name, __name__)
