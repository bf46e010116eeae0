"""A KernelManager that finds kernels through the bridge (for nbclient and nbconvert,
which create kernel managers without a server)."""

from __future__ import annotations

from jupyter_client.manager import AsyncKernelManager
from traitlets import default

from .kernelspecs import KernelProvidersKernelSpecManager

__all__ = ["KernelProvidersKernelManager"]


class KernelProvidersKernelManager(AsyncKernelManager):
    """jupyter_client's AsyncKernelManager with the bridge's kernelspecs."""

    @default("kernel_spec_manager")
    def _bridge_spec_manager(self) -> KernelProvidersKernelSpecManager:
        return KernelProvidersKernelSpecManager(data_dir=self.data_dir)
