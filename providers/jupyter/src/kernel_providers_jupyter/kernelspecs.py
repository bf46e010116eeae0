"""Every provider's kernels as Jupyter kernelspecs."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from jupyter_core.paths import jupyter_runtime_dir

from kernel_providers import KernelType

from .shared import shared_finder

__all__ = ["PROVISIONER", "KernelProvidersKernelSpecManager", "jupyter_name"]

PROVISIONER = "kernel-providers-provisioner"
_INVALID = re.compile(r"[^a-z0-9._-]+")


def jupyter_name(kernel_id: str) -> str:
    """A Jupyter kernel name for a kernel id: ``spec/<name>`` keeps ``<name>`` (notebooks
    keep their kernel); others become ``<provider>-<name>`` in Jupyter's alphabet, with
    a short hash of the id when characters had to be replaced (so it stays unique). The
    same id gives the same name on every machine."""
    provider, _, name = kernel_id.partition("/")
    if provider == "spec":
        return name
    plain = f"{provider}-{name}".lower()
    cleaned = _INVALID.sub("-", plain).strip("-")
    if cleaned == plain.replace("/", "-"):
        return cleaned
    return f"{cleaned}-{hashlib.sha256(kernel_id.encode()).hexdigest()[:6]}"


def _resource_dir(name: str, kernel: KernelType) -> str:
    # Jupyter serves logos from a kernelspec's folder: a kernelspec's own, else a folder
    # of links to the kernel's local resource files.
    own = kernel.metadata.get("resource_dir")
    if isinstance(own, str) and own and Path(own).is_dir():
        return own
    folder = Path(jupyter_runtime_dir()) / "kernel-providers-resources" / name
    folder.mkdir(parents=True, exist_ok=True)
    for key, path in kernel.resources.items():
        source = Path(path)
        if source.is_file():
            target = folder / (f"{key}{source.suffix}" if key.startswith("logo") else key)
            if not target.exists():
                os.symlink(source, target)
    return str(folder)


class KernelProvidersKernelSpecManager(KernelSpecManager):
    """Lists the kernels of every installed provider as kernelspecs that start through
    the ``kernel-providers-provisioner``. Switch it on with
    ``kernel-providers jupyter enable``."""

    def _bridged(self) -> dict[str, tuple[KernelType, KernelSpec]]:
        bridged: dict[str, tuple[KernelType, KernelSpec]] = {}
        for kernel in shared_finder().find_kernels():
            name = jupyter_name(kernel.id)
            if name in bridged:
                continue
            metadata: dict[str, Any] = {
                **kernel.metadata,
                "kernel_providers": {"id": kernel.id, "provider": kernel.provider},
                "kernel_provisioner": {"provisioner_name": PROVISIONER,
                                       "config": {"kernel_providers_id": kernel.id}},
            }
            spec = KernelSpec(resource_dir=_resource_dir(name, kernel), argv=[],
                              display_name=kernel.display_name, language=kernel.language,
                              interrupt_mode=kernel.interrupt_mode, metadata=metadata, env={})
            bridged[name] = (kernel, spec)
        allowed = self.allowed_kernelspecs
        return {n: v for n, v in bridged.items() if not allowed or n in allowed}

    def find_kernel_specs(self) -> dict[str, str]:
        """Kernel names and their resource folders."""
        return {name: spec.resource_dir for name, (_, spec) in self._bridged().items()}

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        """The kernelspec of one bridged kernel."""
        found = self._bridged().get(kernel_name.lower())
        if found is None:
            raise NoSuchKernel(kernel_name)
        return found[1]

    def get_all_specs(self) -> dict[str, dict[str, Any]]:
        """Every bridged kernelspec, as ``jupyter kernelspec list --json`` shows them."""
        return {name: {"resource_dir": spec.resource_dir, "spec": spec.to_dict()}
                for name, (_, spec) in self._bridged().items()}
