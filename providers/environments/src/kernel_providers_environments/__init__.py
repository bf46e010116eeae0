"""kernel-providers plugin for Python environments: conda environments (``conda/...``)
and virtualenvs (``venv/...``), each kernel running activated in its environment."""

from __future__ import annotations

from .conda import CondaConfig, CondaProvider
from .environments import Environment
from .venv import VenvConfig, VenvProvider

__all__ = ["CondaConfig", "CondaProvider", "Environment", "VenvConfig", "VenvProvider"]
