"""pytest plugin (``-p upstream_bridge_plugin``) for scripts/upstream_suites.py: makes the
bridge's KernelProvidersKernelSpecManager the KernelSpecManager of jupyter_client and
nbclient while *their own* test suites run, without editing a file of theirs.

It injects a thin subclass, BridgedKernelSpecManager (the bridge's class, counting its
instances), as ``jupyter_client.kernelspec.KernelSpecManager`` (looked up at call time by
the module-level helpers and ``KernelManager``; the test modules import it after this
runs) and in place of every module-level alias already bound to the stock class
(multikernelmanager, pytest_jupyter ...; kernelspecapp and kernelapp import later and get
the subclass). The swap happens in ``pytest_configure``: after the suites' conftests ran
(jupyter_client's sets JUPYTER_PLATFORM_DIRS before jupyter_core may be imported), before
any test module is collected.

The counts (KernelSpecManagers made, kernels started through the bridge's provisioner)
go to the runner's record, proving the bridge was really in use.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

#: modules whose aliases may be rebound; never the bridge itself (it subclasses the
#: stock class and must keep it as its base)
_PREFIXES = ("jupyter_client", "nbclient", "nbconvert", "pytest_jupyter", "tests")
#: the upstream suites know local kernelspecs only
DISABLE = "conda,venv,docker,ssh,slurm,example"

_counts = {"kernel_spec_managers": 0, "provisioner_launches": 0}


def _bridged_class() -> type[Any]:
    """The subclass to inject (the bridge's class, counting its instances)."""
    # Imported before the swap, so the bridge's base is the stock class.
    from kernel_providers_jupyter.kernelspecs import KernelProvidersKernelSpecManager

    class BridgedKernelSpecManager(KernelProvidersKernelSpecManager):
        """The bridge's KernelSpecManager, unchanged but for counting its instances."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            _counts["kernel_spec_managers"] += 1
            super().__init__(*args, **kwargs)

    return BridgedKernelSpecManager


def _stock(bridged: type[Any]) -> type[Any]:
    import jupyter_client.kernelspec as kernelspec

    return next(c for c in bridged.__mro__
                if c.__module__ == kernelspec.__name__ and c.__name__ == "KernelSpecManager")


def _rebind(stock: type[Any], bridged: type[Any]) -> None:
    for name, module in list(sys.modules.items()):
        if isinstance(module, types.ModuleType) and name.startswith(_PREFIXES):
            for attr, value in list(vars(module).items()):
                if value is stock:
                    setattr(module, attr, bridged)


def _count_launches() -> None:
    from kernel_providers_jupyter.provisioner import KernelProvidersProvisioner

    launch = KernelProvidersProvisioner.launch_kernel

    @functools.wraps(launch)
    async def counted(self: Any, cmd: list[str], **kwargs: Any) -> Any:
        _counts["provisioner_launches"] += 1
        return await launch(self, cmd, **kwargs)

    KernelProvidersProvisioner.launch_kernel = counted  # type: ignore[method-assign]


def reset_finder() -> None:
    """Forget the bridge's process-wide finder and its discovery cache, so the next use
    sees the Jupyter paths (env vars, monkeypatched jupyter_core.paths) of this test."""
    import kernel_providers_jupyter.shared as shared

    if hasattr(shared, "_finder"):
        shared._finder = None
    clear = getattr(shared.shared_finder, "cache_clear", None)
    if clear is not None:  # should the finder become an lru_cache'd function
        clear()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("KERNEL_PROVIDERS_DISABLE", DISABLE)
    import jupyter_client.kernelspec as kernelspec

    stock, bridged = kernelspec.KernelSpecManager, _bridged_class()
    kernelspec.KernelSpecManager = bridged  # type: ignore[misc]
    _rebind(stock, bridged)
    _count_launches()


def pytest_collection_finish(session: pytest.Session) -> None:
    # Anything imported during collection that still holds the stock class: rebind it.
    import jupyter_client.kernelspec as kernelspec

    bridged = kernelspec.KernelSpecManager
    _rebind(_stock(bridged), bridged)


def pytest_report_header(config: pytest.Config) -> str:
    return "KernelSpecManager: kernel-providers bridge (upstream_bridge_plugin)"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture: the finder is then built lazily inside the test, after the
    # suite's own fixtures (pytest_jupyter's jp_environ) have set the Jupyter paths.
    reset_finder()


def pytest_runtest_teardown(item: pytest.Item) -> None:
    reset_finder()


def _bound_to(cls: type[Any]) -> list[str]:
    return sorted(f"{name}.{attr}" for name, module in list(sys.modules.items())
                  if isinstance(module, types.ModuleType) and name.startswith(_PREFIXES)
                  for attr, value in list(vars(module).items()) if value is cls)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    import jupyter_client.kernelspec as kernelspec

    bridged = kernelspec.KernelSpecManager
    stock_left = _bound_to(_stock(bridged))
    bound = _bound_to(bridged)
    terminalreporter.write_line(
        f"bridge in use: {_counts['kernel_spec_managers']} KernelSpecManagers,"
        f" {_counts['provisioner_launches']} kernel launches through its provisioner;"
        f" KernelSpecManager is the bridge at {', '.join(bound)};"
        f" still stock at: {', '.join(stock_left) or 'none'}")
    record = os.environ.get("KP_UPSTREAM_RECORD")
    if record:
        with Path(record).open("a") as out:
            out.write(json.dumps({"bridge": {**_counts, "bound": bound,
                                             "stock_left": stock_left}}) + "\n")
