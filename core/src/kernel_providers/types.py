"""Small typed values shared by the core and every provider."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypedDict

from .text import one_line

__all__ = ["ConnectionInfo", "InterruptMode", "KernelType", "LaunchOptions", "ready_seconds"]

InterruptMode = Literal["signal", "message"]

_PROVIDER_ID = re.compile(r"^[a-z][a-z0-9_-]*$")


class ConnectionInfo(TypedDict, total=False):
    """The content of a Jupyter connection file."""

    transport: str
    ip: str
    shell_port: int
    iopub_port: int
    stdin_port: int
    control_port: int
    hb_port: int
    key: str
    signature_scheme: str
    kernel_name: str


@dataclass(frozen=True)
class KernelType:
    """A kind of kernel a provider can start, e.g. ``spec/python3`` or ``docker/img:1.2``.

    ``id`` is ``"<provider>/<name>"``: globally unique and stable across runs.
    ``metadata`` is free-form JSON; ``resources`` maps resource names (``logo-64x64``,
    ``kernel.js`` ...) to paths or URLs.
    """

    id: str
    display_name: str
    language: str
    provider: str
    metadata: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    interrupt_mode: InterruptMode = "signal"
    #: the knobs a launch may set: a JSON Schema object (``properties`` with types,
    #: ``enum``, ``minimum`` ..., ``default``, ``title``, ``description``); None: none
    parameters: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        prefix, sep, name = self.id.partition("/")
        if not sep or not name:
            raise ValueError(f"kernel id {self.id!r} must look like '<provider>/<name>'")
        if prefix != self.provider:
            raise ValueError(
                f"kernel id {self.id!r} must start with its provider id {self.provider!r}"
            )
        if not _PROVIDER_ID.fullmatch(prefix):
            raise ValueError(f"kernel id {self.id!r}: its provider id {prefix!r} must be"
                             " lowercase letters, digits, '-' or '_', starting with a letter")
        if one_line(self.id) != self.id:  # a newline or NUL would break every listing of it
            raise ValueError(f"kernel id {self.id!r} holds control or formatting characters"
                             " (a newline, a right-to-left override ...); a provider must skip"
                             " (and report) such a kernel, or name it otherwise")
        if self.interrupt_mode not in ("signal", "message"):
            raise ValueError(
                f"kernel {self.id!r}: interrupt_mode must be 'signal' or 'message',"
                f" not {self.interrupt_mode!r}"
            )

    @property
    def name(self) -> str:
        """The part of the id after the provider prefix."""
        return self.id.partition("/")[2]

    @property
    def launchable(self) -> bool:
        """False for a kernel type listed only to say what it lacks (``metadata``
        ``launchable: false``, with a ``hint``); ``list --all`` shows those."""
        return self.metadata.get("launchable") is not False

    @property
    def in_project(self) -> bool:
        """Whether it belongs to the project enclosing the working directory (``metadata``
        ``project: true``): listed first, and what the id ``.`` picks."""
        return self.metadata.get("project") is True

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape printed by ``kernel-providers list --json``."""
        data = asdict(self)
        return {
            "id": data["id"],
            "provider": data["provider"],
            "name": self.name,
            "display_name": data["display_name"],
            "language": data["language"],
            "project": self.in_project,
            "launchable": self.launchable,
            "metadata": data["metadata"],
            "resources": data["resources"],
            "interrupt_mode": data["interrupt_mode"],
            "parameters": data["parameters"],
        }


@dataclass
class LaunchOptions:
    """What a caller (or a ``kernel_launch_options`` hook) may set for one launch.

    ``env`` is merged over the kernel's own environment; ``extra_argv`` is appended to
    its argv; ``parameters`` gives values to the kernel type's declared parameters
    (checked against them, defaults filled in, before anything starts).
    ``connection_info`` reuses a key and, where the provider can, the ports (a restart
    keeps clients connected). ``ready_timeout`` left at ``None`` means the
    configuration's ``ready_timeout``.

    ``connection_file`` is the client-dictated connection: a Jupyter connection file the
    caller wrote and keeps. The kernel answers on exactly its transport, address, ports
    and key, reachable from this machine (a local kernel reads the file itself, Docker
    publishes exactly those ports, SSH forwards from them); a provider that cannot honour
    it raises :class:`~kernel_providers.LaunchFailed`. The launcher never deletes it.

    ``replace_process``: a kernel that runs on this machine replaces the calling process
    (``exec``), so nothing stays between a client and its kernel; ``launch`` then never
    returns for it. Kernels elsewhere ignore it. Used by the Jupyter bridge's shim.
    """

    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    extra_argv: list[str] = field(default_factory=list)
    ready_timeout: float | None = None  # None: the config's ready_timeout (60 s)
    parameters: dict[str, Any] = field(default_factory=dict)
    connection_info: ConnectionInfo | None = None
    connection_file: str | None = None
    replace_process: bool = False

    def __repr__(self) -> str:
        # Options are traced and logged: the connection's key never goes with them.
        info = self.connection_info
        shown = {**info, "key": "<hidden>"} if info and info.get("key") else info
        fields = {**self.__dict__, "connection_info": shown}
        return f"LaunchOptions({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


DEFAULT_READY_TIMEOUT = 60.0


def ready_seconds(options: LaunchOptions) -> float:
    """The ready timeout of a launch: its own, else the default."""
    return DEFAULT_READY_TIMEOUT if options.ready_timeout is None else options.ready_timeout


def validate_provider_id(provider_id: str) -> str:
    """Return ``provider_id`` if it is a valid provider id, else raise ``ValueError``."""
    if not _PROVIDER_ID.fullmatch(provider_id):
        raise ValueError(
            f"provider id {provider_id!r} must be lowercase letters, digits, '-' or '_',"
            " starting with a letter"
        )
    return provider_id
