"""Every provider's kernels as Jupyter kernelspecs, on top of stock behaviour.

The KernelSpecManager is jupyter_client's own for everything stock jupyter_client finds
in its ``kernel_dirs`` (those kernelspecs keep their argv and their own provisioner);
it adds the kernels only kernel-providers knows (environments, containers, remote hosts,
kernelspecs in ``[providers.spec] extra_dirs``), each served from a kernelspec folder of
its own that holds real copies of its logos, and started through our provisioner.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from jupyter_core.paths import jupyter_runtime_dir

from kernel_providers import KernelType
from kernel_providers.finder import project_kernel

from .errors import shown_to_clients
from .kernelspec_files import (
    PROVISIONER,
    jupyter_name,
    kernelspec_dict,
    synced_id,
    write_kernelspec,
)
from .shared import shared_finder

__all__ = ["PROVISIONER", "KernelProvidersKernelSpecManager", "jupyter_name"]


def _folders_root() -> Path:
    """Where the bridge keeps the kernelspec folders of provider kernels (per user)."""
    return Path(jupyter_runtime_dir()) / "kernel-providers-kernelspecs"


def _installed_by_a_package(folder: str) -> str | None:
    """The distribution whose files include ``folder``'s kernel.json, if any."""
    import importlib.metadata

    target = os.path.realpath(os.path.join(folder, "kernel.json"))
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            if str(file).endswith("kernel.json") and \
                    os.path.realpath(str(dist.locate_file(file))) == target:
                return str(dist.metadata["Name"])
    return None


class KernelProvidersKernelSpecManager(KernelSpecManager):
    """jupyter_client's KernelSpecManager plus the kernels of every installed provider.

    Kernelspecs in ``kernel_dirs`` behave exactly as stock (configuration, subclass
    overrides, their own provisioner, install and remove); the others are started by
    the ``kernel-providers-provisioner``. Switch it on with
    ``kernel-providers jupyter enable``.
    """

    _listing: dict[str, KernelSpec] | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._default_to_the_project()

    def _default_to_the_project(self) -> None:
        """Under a jupyter_server, the server's default kernel (new notebooks, the
        ``default`` of /api/kernelspecs) is the kernel of the project enclosing its
        working directory, unless ``default_kernel_name`` is configured. Set in the
        server's config before it creates its kernel manager (it does so right after
        this one); the discovery this costs fills the cache the first listing uses."""
        app = self.parent
        if app is None or not hasattr(app, "kernel_manager_class"):
            return  # not a server: nbclient, nbconvert, `jupyter kernelspec list`
        if any("default_kernel_name" in app.config.get(section, {}) for section in (
                "MultiKernelManager", "AsyncMultiKernelManager", "MappingKernelManager",
                "AsyncMappingKernelManager")):
            return
        ours = project_kernel(shared_finder().find_kernels())
        if ours is not None:
            app.config.MultiKernelManager.default_kernel_name = jupyter_name(ours.id)

    def _stock(self) -> dict[str, str]:
        # Folders `kernel-providers jupyter sync` wrote stand for a provider kernel: the
        # live kernel type replaces them (their copy may be stale).
        return {name: folder for name, folder in super().find_kernel_specs().items()
                if synced_id(Path(folder)) is None}

    def _bridged(self, stock: dict[str, str]) -> dict[str, KernelSpec]:
        """The provider kernels stock jupyter_client does not see, by Jupyter name."""
        if self._listing is not None:  # within one get_all_specs: one discovery
            return self._listing
        bridged: dict[str, KernelSpec] = {}
        root = _folders_root()
        for kernel in shared_finder().find_kernels():
            name = jupyter_name(kernel.id)
            if name in stock or name in bridged:
                continue
            if self.allowed_kernelspecs and name not in self.allowed_kernelspecs:
                continue
            bridged[name] = self._materialize(root / name, kernel)
        return bridged

    def _materialize(self, folder: Path, kernel: KernelType) -> KernelSpec:
        write_kernelspec(folder, kernel)
        return self.kernel_spec_class(resource_dir=str(folder), **kernelspec_dict(kernel))

    def find_kernel_specs(self) -> dict[str, str]:
        """Kernel names and their folders: stock ones, then every provider's."""
        stock = self._stock()
        found = dict(stock)
        for name, spec in self._bridged(stock).items():
            found[name] = spec.resource_dir
        return found

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        """A stock kernelspec as stock jupyter_client reads it, else a provider kernel's."""
        name = kernel_name.lower()
        folder = self._find_spec_directory(name)
        if folder is not None and synced_id(Path(folder)) is None:
            return super().get_kernel_spec(kernel_name)
        bridged = self._bridged(self._stock()).get(name)
        if bridged is not None:
            return bridged
        if folder is not None:  # a synced folder whose kernel is gone: as stock would
            return super().get_kernel_spec(kernel_name)
        raise _no_such_kernel(kernel_name)


    def get_all_specs(self) -> dict[str, Any]:
        """Every kernelspec, as ``jupyter kernelspec list --json`` shows them."""
        self._listing = self._bridged(self._stock())  # one discovery for the listing
        result: dict[str, Any] = {}
        try:
            # As stock does for subclasses: the names of find_kernel_specs, each spec from
            # get_kernel_spec, so overrides of either apply.
            for name, folder in self.find_kernel_specs().items():
                try:
                    spec = self.get_kernel_spec(name)  # a subclass's override applies
                except NoSuchKernel:
                    continue  # e.g. its provisioner is not installed (jupyter_client logs)
                except Exception:
                    self.log.warning("Error loading kernelspec %r", name, exc_info=True)
                    continue
                result[name] = {"resource_dir": folder, "spec": spec.to_dict()}
        finally:
            self._listing = None
        return result

    def remove_kernel_spec(self, name: str) -> str:
        """Remove a kernelspec folder, as stock does; never a provider kernel's (its
        environment, image or host is the thing to remove) nor a folder an installed
        package owns (``pip uninstall`` is)."""
        stock = self._stock()
        if name not in stock:
            bridged = self._bridged(stock).get(name)
            if bridged is not None:
                kernel_id = bridged.metadata["kernel_providers"]["id"]
                raise PermissionError(
                    errno.EACCES,
                    f"kernel {name!r} is {kernel_id}, offered by kernel-providers' provider"
                    f" {kernel_id.split('/')[0]!r}, not a kernelspec folder: remove the"
                    f" environment, image or host itself, or leave the provider out with"
                    f" KERNEL_PROVIDERS_DISABLE={kernel_id.split('/')[0]}")
        elif (owner := _installed_by_a_package(stock[name])) is not None:
            raise PermissionError(
                errno.EACCES, f"kernelspec {name!r} ({stock[name]}) belongs to the installed"
                f" package {owner!r}: uninstall the package instead")
        return super().remove_kernel_spec(name)


def _no_such_kernel(kernel_name: str) -> NoSuchKernel:
    """jupyter_client's NoSuchKernel, saying what kernel-providers knows of the name: the
    discovery problems that mention it (a kernel.json it cannot read, an environment
    without a Python, an unreachable host), failed providers, and where to look next."""
    name = kernel_name.lower()
    said: list[str] = []
    for report in shared_finder().reports:
        # Its kernels are named <provider>-<name>[-...] (spec's: <name>); a problem names
        # a part: the environment, the host, the kernelspec folder.
        ours = name.startswith(f"{report.id}-")
        if ours and report.status == "error":
            said.append(f"provider {report.id!r} failed: {report.message}")
        rest = name.removeprefix(f"{report.id}-").split("-")
        parts = {name, *("-".join(rest[:i]) for i in range(1, len(rest) + 1))}
        pattern = re.compile("|".join(rf"(?<![\w.-]){re.escape(p)}(?![\w.-])"
                                      for p in sorted(parts)))
        said += [problem for problem in report.problems if pattern.search(problem)]
    message = f"No such kernel named {kernel_name}"
    if said:
        message += " (" + "; ".join(said[:3]) + ")"
    message += ("; `kernel-providers list` shows every provider's kernels, `kernel-providers"
                " providers` how each discovery went")
    return shown_to_clients(NoSuchKernel(kernel_name), message)
