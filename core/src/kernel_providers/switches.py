"""The environment switches (KERNEL_PROVIDERS_TRACE, _NO_AUTOLOAD, _NO_EXEC_PLANS, _POOL), read
one way everywhere. Imports only os: the shim's replay reads them too."""

from __future__ import annotations

import os

__all__ = ["switched_off", "switched_on"]


def switched_on(name: str) -> bool:
    """Whether the environment switch ``name`` is set to anything but empty, 0, false
    or no."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def switched_off(name: str) -> bool:
    """Whether the environment switch ``name`` (on unless set) is set to 0, false or
    no."""
    return os.environ.get(name, "").strip().lower() in ("0", "false", "no")
