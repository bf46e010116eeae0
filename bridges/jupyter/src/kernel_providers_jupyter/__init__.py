"""The Jupyter bridge: a KernelSpecManager listing every provider's kernels and a kernel
provisioner starting them through the launcher contract.

Names are imported on first use: the ``kernel-providers`` command loads this package's
plugin on every run and must not pay for importing jupyter_client.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing itself is not imported: the shim starts through here
if TYPE_CHECKING:
    from typing import Any

    from .kernelspec_files import jupyter_name
    from .kernelspecs import KernelProvidersKernelSpecManager
    from .manager import KernelProvidersKernelManager
    from .provisioner import KernelProvidersProvisioner

__all__ = ["KernelProvidersKernelManager", "KernelProvidersKernelSpecManager",
           "KernelProvidersProvisioner", "jupyter_name"]

_HOMES = {"KernelProvidersKernelSpecManager": "kernelspecs", "jupyter_name": "kernelspec_files",
          "KernelProvidersKernelManager": "manager",
          "KernelProvidersProvisioner": "provisioner"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
