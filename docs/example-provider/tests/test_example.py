"""The example plugin: found through its entry point once installed, configured from the
configuration file, and conformant to the launcher contract."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_providers import KernelFinder
from kernel_providers.testing import ConformanceSuite

#: the kernel of the default configuration: the Python running the tests
KERNEL = f"example/{Path(sys.executable).name.lower()}"


def write_config(text: str) -> None:
    """Write the (isolated) configuration file that ``kp_isolated`` points to."""
    Path(os.environ["KERNEL_PROVIDERS_CONFIG"]).write_text(text)


def test_listed_once_installed(kp_isolated: Path) -> None:
    finder = KernelFinder()  # autoload: the real entry point, as users get it
    provider = finder.providers["example"]
    assert provider.distribution == "kernel-providers-example"
    assert provider.plugin_name == "example"
    kernels = asyncio.run(finder.find_kernels(provider="example"))
    assert [k.id for k in kernels] == [KERNEL]
    assert kernels[0].metadata == {"python": sys.executable}


def test_cli_shows_it(kp_isolated: Path) -> None:
    bin_dir = str(Path(sys.executable).parent)
    command = shutil.which("kernel-providers", path=os.pathsep.join(
        [bin_dir, os.environ.get("PATH", "")]))
    assert command, "the kernel-providers command is not installed"
    done = subprocess.run([command, "providers", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    reports = {p["id"]: p for p in json.loads(done.stdout)["providers"]}
    assert reports["example"]["distribution"] == "kernel-providers-example"
    assert reports["example"]["status"] == "ok"
    assert reports["example"]["kernel_count"] == 1


def test_configured_interpreters(kp_isolated: Path, tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "python").symlink_to(sys.executable)
    pythons = [str(tmp_path / "a/python"), str(tmp_path / "b/python"), "/no/such/python"]
    write_config(f"[providers.example]\npythons = {json.dumps(pythons)}\n")
    finder = KernelFinder()
    ids = [k.id for k in asyncio.run(finder.find_kernels(provider="example"))]
    # Same file name twice: the second gets a suffix made from its path, the same every run.
    assert ids[0] == "example/python" and ids[1].startswith("example/python-")
    assert ids == [k.id for k in asyncio.run(KernelFinder().find_kernels(provider="example"))]
    report = next(r for r in finder.reports if r.id == "example")
    assert report.status == "ok"
    assert report.problems == ["/no/such/python: no such interpreter; skipped"]


def test_invalid_config_names_the_key(kp_isolated: Path) -> None:
    write_config('[providers.example]\npythons = "/usr/bin/python3"\n')
    finder = KernelFinder()
    assert asyncio.run(finder.find_kernels(provider="example")) == []
    report = next(r for r in finder.reports if r.id == "example")
    assert report.status == "error"
    assert "[providers.example]: pythons: expected a list" in report.message


class TestExampleConformance(ConformanceSuite):
    kernel_id = KERNEL
    failing_kernel_id = "example/exits"
    failing_kernel_output = "example-exits-marker"

    @pytest.fixture
    def finder(self, kp_isolated: Path, tmp_path: Path) -> KernelFinder:
        """The default interpreter, and one that prints a line and exits at once."""
        exits = tmp_path / "exits"
        exits.write_text("#!/bin/sh\necho example-exits-marker\nexit 4\n")
        exits.chmod(0o755)
        write_config(f"[providers.example]\npythons = {json.dumps([sys.executable, str(exits)])}\n")
        return KernelFinder()  # through the real entry point and configuration file
