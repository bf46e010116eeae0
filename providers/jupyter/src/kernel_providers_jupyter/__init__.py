"""The Jupyter bridge: a KernelSpecManager listing every provider's kernels and a kernel
provisioner starting them through the launcher contract."""

from __future__ import annotations

from .kernelspecs import KernelProvidersKernelSpecManager, jupyter_name
from .manager import KernelProvidersKernelManager
from .provisioner import KernelProvidersProvisioner

__all__ = ["KernelProvidersKernelManager", "KernelProvidersKernelSpecManager",
           "KernelProvidersProvisioner", "jupyter_name"]
