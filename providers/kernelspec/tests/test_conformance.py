"""The conformance suite against real kernelspecs (ipykernel) on the Jupyter path."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, KernelFinder
from kernel_providers.testing import ConformanceSuite


class TestKernelSpecConformance(ConformanceSuite):
    kernel_id = "spec/kp-conformance"
    failing_kernel_id = "spec/kp-exits"
    failing_kernel_output = "kp-exits-marker"

    @pytest.fixture
    def finder(self, write_spec: Callable[..., Path],
               python_spec: Callable[..., dict[str, Any]]) -> KernelFinder:
        write_spec("kp-conformance", python_spec("Conformance"))
        write_spec("kp-exits", {"argv": [sys.executable, "-c",
                                         "print('kp-exits-marker'); raise SystemExit(4)"],
                                "display_name": "Exits", "language": "python"})
        # Through the real entry point, as users get it.
        return KernelFinder(Config())
