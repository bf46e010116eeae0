"""kernel-providers: find and start Jupyter kernels anywhere through one contract.

The public API is what ``__all__`` lists; every other module is an implementation detail
unless its own ``__all__`` says otherwise.
"""

from __future__ import annotations

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
from .provider import KernelProvider, report_problem
from .types import ConnectionInfo, KernelType, LaunchOptions

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
    "ProviderReport",
    "ProviderUnavailable",
    "ReadyTimeout",
    "__version__",
    "hookimpl",
    "launch_local",
    "load_config",
    "report_problem",
]
