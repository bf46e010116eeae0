"""Testing helpers for providers: the conformance suite every provider must pass.

In a provider's tests::

    from kernel_providers.testing import ConformanceSuite

    class TestMyProvider(ConformanceSuite):
        kernel_id = "mine/python3"
        failing_kernel_id = "mine/broken"   # a kernel that exits at once, or None

The pytest plugin (loaded automatically once the core is installed) isolates every
test's runtime dir and configuration file; see :mod:`kernel_providers.testing.plugin`.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from .conformance import ConformanceSuite, run_code

__all__ = ["ConformanceSuite", "run_code", "unavailable"]


def unavailable(reason: str) -> NoReturn:
    """A test's engine or host (Docker, sshd ...) is missing: fail in CI (``CI`` set),
    where everything must run; skip with the reason on a user's machine."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)
