"""Fixtures of the core's own tests: a real provider of real ipykernels, defined here,
so the core is tested without any installed plugin (autoload is off)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import (
    Config,
    KernelFinder,
    KernelLauncher,
    KernelProvider,
    KernelType,
    LaunchOptions,
    hookimpl,
    launch_local,
)

IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


class PythonProvider(KernelProvider):
    """Kernels of the test: ipykernel in both interrupt modes and with allocated ports,
    and a kernel that exits at once."""

    id = "test"

    KERNELS: dict[str, tuple[list[str], dict[str, Any]]] = {
        "python": (IPYKERNEL, {}),
        "python-message": (IPYKERNEL, {"interrupt_mode": "message"}),
        "python-allocate": (IPYKERNEL, {"port_strategy": "allocate"}),
        "exits": ([sys.executable, "-c", "print('exits-marker', flush=True); exit(3)"], {}),
    }

    async def find_kernels(self) -> list[KernelType]:
        return [
            KernelType(id=f"test/{name}", display_name=f"Test {name}", language="python",
                       provider=self.id,
                       interrupt_mode=extra.get("interrupt_mode", "signal"))
            for name, (_, extra) in self.KERNELS.items()
        ]

    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        argv, extra = self.KERNELS[kernel_type.name]
        return await launch_local(kernel_type, argv, options,
                                  port_strategy=extra.get("port_strategy"))


class TestPlugin:
    """Registers the test provider."""

    @hookimpl
    def register_kernel_providers(self) -> Iterator[KernelProvider]:
        yield PythonProvider()


def make_finder(*plugins: Any, config: Config | None = None) -> KernelFinder:
    """A finder with no entry-point plugins: only the test provider and ``plugins``."""
    return KernelFinder(config or Config(), autoload=False, plugins=[TestPlugin(), *plugins])


@pytest.fixture
def finder(kp_isolated: Path) -> KernelFinder:
    return make_finder()


@pytest.fixture(name="make_finder")
def make_finder_fixture() -> Any:
    """``make_finder(*plugins, config=None)``: a finder with the test provider."""
    return make_finder


@pytest.fixture
def fake_dists(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the fake installed distributions (dist-info folders) on sys.path."""
    folder = Path(__file__).parent / "fake_dists"
    monkeypatch.syspath_prepend(str(folder))
    for name in [m for m in sys.modules if m.startswith("kp_fake_")]:
        monkeypatch.delitem(sys.modules, name)
    return folder
