"""The entry point of the environments plugin: registers ``conda``, ``venv`` and
``pixi``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kernel_providers.sdk import KernelProvider, hookimpl

from .conda import CondaProvider
from .pixi import PixiProvider
from .venv import VenvProvider


@hookimpl
def register_kernel_providers() -> Iterator[KernelProvider[Any]]:
    """Yield the conda, virtualenv and pixi providers (pixi searches the venv provider's
    project folders unless told otherwise)."""
    venv = VenvProvider()
    yield CondaProvider()
    yield venv
    yield PixiProvider(project_dirs=venv.project_roots)
