"""kernel-providers plugin for Python environments: conda environments (``conda/...``),
virtualenvs and projects' environments (``venv/...``) and pixi environments
(``pixi/...``), each kernel running activated in its environment as its tool would."""

from __future__ import annotations

from .conda import CondaConfig, CondaProvider
from .environments import Environment, Location
from .pixi import PixiConfig, PixiProvider
from .venv import VenvConfig, VenvProvider

__all__ = ["CondaConfig", "CondaProvider", "Environment", "Location", "PixiConfig",
           "PixiProvider", "VenvConfig", "VenvProvider"]
