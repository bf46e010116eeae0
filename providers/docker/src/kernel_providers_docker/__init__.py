"""kernel-providers plugin for Docker: every image labelled ``io.jupyter.kernelspec`` and
every image named in the configuration is a kernel, ``docker/<image>``, run in a
container of its own."""

from __future__ import annotations

from .config import DockerConfig, ImageEntry
from .launcher import DockerLauncher
from .provider import DockerProvider

__all__ = ["DockerConfig", "DockerLauncher", "DockerProvider", "ImageEntry"]
