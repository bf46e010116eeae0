"""The conformance suite against local ipykernels, through a provider defined in the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kernel_providers import KernelFinder
from kernel_providers.testing import ConformanceSuite


class TestLocalConformance(ConformanceSuite):
    kernel_id = "test/python"
    failing_kernel_id = "test/exits"
    failing_kernel_output = "exits-marker"

    @pytest.fixture
    def finder(self, kp_isolated: Path, make_finder: Any) -> KernelFinder:
        return make_finder()


class TestMessageModeConformance(ConformanceSuite):
    """A kernel type whose interrupt_mode is ``message``."""

    kernel_id = "test/python-message"
    failing_kernel_id = "test/exits"
    failing_kernel_output = "exits-marker"
    concurrent_launches = 4

    @pytest.fixture
    def finder(self, kp_isolated: Path, make_finder: Any) -> KernelFinder:
        return make_finder()


class TestAllocatedPortsConformance(ConformanceSuite):
    """A kernel that gets allocated ports instead of binding its own."""

    kernel_id = "test/python-allocate"
    failing_kernel_id = "test/exits"
    failing_kernel_output = "exits-marker"

    @pytest.fixture
    def finder(self, kp_isolated: Path, make_finder: Any) -> KernelFinder:
        return make_finder()
