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

from .conformance import ConformanceSuite, run_code

__all__ = ["ConformanceSuite", "run_code"]
