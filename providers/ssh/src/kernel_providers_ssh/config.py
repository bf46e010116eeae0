"""``[providers.ssh]`` options."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SSHConfig"]


@dataclass
class SSHConfig:
    """``[providers.ssh]``: hosts are aliases resolved through the OpenSSH client config."""

    #: host aliases (HostName, Port, User, IdentityFile, ProxyJump come from ssh_config)
    hosts: list[str] = field(default_factory=list)
    #: the OpenSSH client config to read (default ~/.ssh/config)
    ssh_config: str | None = None
    #: the known_hosts file to verify host keys against (default ~/.ssh/known_hosts)
    known_hosts: str | None = None
    #: hosts whose host key is NOT verified (a deliberate, per-host opt-out)
    insecure_hosts: list[str] = field(default_factory=list)
    #: seconds to connect (and, for discovery, to answer)
    connect_timeout: float = 10.0
    #: the remote Python that runs discovery and the supervisor
    python: str = "python3"
    #: kernels sharing one connection before another is opened (OpenSSH's MaxSessions
    #: is 10 by default; each kernel holds one session, file transfers need one more)
    kernels_per_connection: int = 8
    #: the remote folder for connection files (relative: to the home); each kernel's
    #: file goes into a 0700 folder of its own made there, so a shared folder such as
    #: /tmp works and is never changed
    runtime_dir: str = ".local/share/kernel-providers/runtime"
    #: seconds between keepalives on each connection (0: none); these take precedence
    #: over ServerAliveInterval/ServerAliveCountMax in the ssh config
    keepalive_interval: float = 5.0
    #: unanswered keepalives after which the connection, and its kernels, count as lost
    #: (a host that stops answering is noticed within interval x (count + 1) seconds)
    keepalive_count_max: int = 3
