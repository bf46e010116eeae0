"""kernel-providers plugin for remote hosts: the kernelspecs of every configured SSH host,
as ``ssh/<host>/<spec>``, started under a remote supervisor and tunnelled home."""

from __future__ import annotations

from .config import SSHConfig
from .launcher import CONNECTION_LOST, SSHLauncher
from .provider import SSHProvider

__all__ = ["CONNECTION_LOST", "SSHConfig", "SSHLauncher", "SSHProvider"]
