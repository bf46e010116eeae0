"""The example plugin: found once installed, and conformant."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_providers import Config, KernelFinder
from kernel_providers.testing import ConformanceSuite

KERNEL = f"example/{Path(sys.executable).name.lower()}"


def test_listed_once_installed(kp_isolated: Path) -> None:
    finder = KernelFinder()  # the real entry point, as users get it
    provider = finder.providers["example"]
    assert provider.distribution == "kernel-providers-example"
    assert KERNEL in [k.id for k in asyncio.run(finder.find_kernels())]
    out = subprocess.run([sys.executable, "-m", "kernel_providers", "providers", "--json"],
                         capture_output=True, text=True, check=True).stdout
    report = next(p for p in json.loads(out)["providers"] if p["id"] == "example")
    assert report["status"] == "ok" and report["kernel_count"] >= 1


def test_missing_interpreter_is_reported(kp_isolated: Path) -> None:
    finder = KernelFinder(Config(providers={"example": {"pythons": ["/no/python"]}}))
    assert asyncio.run(finder.find_kernels(provider="example")) == []
    report = next(r for r in finder.reports if r.id == "example")
    assert report.problems == ["/no/python: no such interpreter; skipped"]


class TestExampleConformance(ConformanceSuite):
    kernel_id = KERNEL
    concurrent_launches = 4

    @pytest.fixture
    def finder(self, kp_isolated: Path) -> KernelFinder:
        return KernelFinder()
