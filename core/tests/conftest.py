"""Fixtures of the core's own tests: a real provider of real ipykernels, defined here,
so the core is tested without any installed plugin (autoload is off); and for the tests of
the `kernel-providers` command, its environment and a test plugin (cli_plugin/) it loads
as an installed distribution."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
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
from kernel_providers.testing import command_argv, command_environment, write_kernelspec

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


# --- the `kernel-providers` command (test_cli.py) -----------------------------------------

#: A fake installed distribution, kp-cli-kernels 1.0, whose provider ``kp`` lists the
#: kernel.json folders in $KP_CLI_KERNELS (see its module).
CLI_PLUGIN = Path(__file__).parent / "cli_plugin"

#: The test kernelspecs: name -> kernel.json content (a str is written as is).
TEST_SPECS: dict[str, Any] = {
    "kp-py": {"argv": IPYKERNEL, "display_name": "KP Test Python", "language": "python"},
    "kp-dies": {"argv": [sys.executable, "-c", "print('kp-dies-marker'); raise SystemExit(3)"],
                "display_name": "KP Dies", "language": "python"},
    "kp-broken-json": "{not json",
    "kp-noargv": {"display_name": "x"},
}

#: Every provider of this repository (entry-point names and provider ids), left out so a
#: test sees only the test plugin's kernels even where they are all installed (the
#: machine's kernelspecs, environments, Docker engine and SSH hosts never leak in).
REAL_PROVIDERS = "spec,environments,conda,venv,docker,ssh,slurm,example"


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment for the command: the test plugin on PYTHONPATH and every real
    provider disabled, its kernel folder ($KP_CLI_KERNELS) holding the test kernelspecs
    (kp-py, kp-dies, and two malformed ones), and private runtime, config, Jupyter,
    cache and IPython dirs (see ``command_environment``)."""
    kernels = tmp_path / "kernels"
    for name, spec in TEST_SPECS.items():
        write_kernelspec(kernels, name, spec)
    python_path = os.pathsep.join(filter(None, [str(CLI_PLUGIN), os.environ.get("PYTHONPATH")]))
    return command_environment(tmp_path, REAL_PROVIDERS, PYTHONPATH=python_path,
                               KP_CLI_KERNELS=str(kernels))


@pytest.fixture
def command() -> Callable[..., list[str]]:
    """``command(*args)``: the argv of the installed console script."""
    return command_argv
