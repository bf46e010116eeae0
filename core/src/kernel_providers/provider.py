"""The provider base class, and how providers report problems while they discover and
progress while a launch waits."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    from .launcher import KernelLauncher
    from .types import ConnectionInfo, KernelType, LaunchOptions

ConfigT = TypeVar("ConfigT")
T = TypeVar("T")

__all__ = ["PROGRESS_LOGGER", "KernelProvider", "problems_reported", "report_problem",
           "report_progress"]

#: the logger a launch's progress is reported on (see report_progress)
PROGRESS_LOGGER = "kernel_providers.progress"

_problems: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "kernel_providers_problems", default=None)
# When the finder stops waiting for the current discovery (time.monotonic()).
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "kernel_providers_deadline", default=None)


def report_problem(message: str) -> None:
    """Report a problem found during discovery that does not stop it (a malformed
    kernel.json, a broken environment). The finder shows it with the provider's status;
    outside a discovery it is ignored."""
    problems = _problems.get()
    if problems is not None:
        problems.append(message)


@contextlib.contextmanager
def problems_reported() -> Iterator[list[str]]:
    """The problems ``report_problem`` receives inside the block (they still go to the
    finder too): for a provider that reuses an answer and must report its problems
    again."""
    outer = _problems.get()
    seen: list[str] = []
    token = _problems.set(seen)
    try:
        yield seen
    finally:
        _problems.reset(token)
        if outer is not None:
            outer.extend(seen)


def report_progress(kernel_id: str, message: str, **fields: Any) -> None:
    """Say how a launch is getting on while the user waits (a batch job's place in the
    queue, say): an INFO record on the ``kernel_providers.progress`` logger with the
    attributes ``kernel_id``, ``progress`` (``message``) and ``fields``. The CLI shows
    the latest as its status line, the Jupyter bridge writes them to the server's log,
    a Python program sees them through ``logging``."""
    logging.getLogger(PROGRESS_LOGGER).info("%s: %s", kernel_id, message, extra={
        "kernel_id": kernel_id, "progress": message, **fields})


class KernelProvider(ABC, Generic[ConfigT]):
    """A source of kernels: answers *which kernels can you start?* and *start this one*.

    Subclasses set ``id`` (the prefix of their kernel ids) and implement
    ``find_kernels`` and ``launch``. ``config_class`` (a dataclass) declares the options
    read from ``[providers.<id>]`` in the configuration file; the validated instance is
    in ``self.config``, typed by the class parameter (``KernelProvider[MyConfig]``;
    ``KernelProvider[None]`` without options). ``plugin_name``, ``distribution`` and
    ``version`` are stamped by the plugin manager when the provider is registered.
    """

    id: ClassVar[str] = ""
    config_class: ClassVar[type[Any] | None] = None
    #: seconds the finder reuses this provider's listing; ``None`` means the config's
    #: ``cache_ttl``. A provider that validates its own cache cheaply (by mtimes) sets 0,
    #: so a new kernel shows up on the very next listing.
    cache_ttl: ClassVar[float | None] = None

    config: ConfigT
    plugin_name: str = ""
    distribution: str | None = None
    version: str | None = None

    def __repr__(self) -> str:
        origin = self.distribution or self.plugin_name
        return f"<{type(self).__name__} id={self.id!r} from {origin}>"

    @abstractmethod
    async def find_kernels(self) -> list[KernelType]:
        """Return the kernel types this provider can start now.

        Called by the finder, concurrently with other providers and under a timeout.
        Raise :class:`~kernel_providers.ProviderUnavailable` (with what to do) when the
        whole provider cannot work; call :func:`report_problem` for single bad entries.
        """
        raise NotImplementedError

    @abstractmethod
    async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> KernelLauncher:
        """Start ``kernel_type`` (one of this provider's) and return its launcher.

        Called by :meth:`KernelFinder.launch` after the ``kernel_launch_options`` hooks.
        Return as soon as the kernel listens on the ports of ``connection_info`` (a
        client that connects then is not dropped: ports published or forwarded before
        the kernel listens behind them would lose its subscriptions); the finder then
        waits for the kernel to be ready. Raise :class:`~kernel_providers.LaunchFailed` with the
        kernel's output on failure, leaving nothing behind.
        """
        raise NotImplementedError

    @staticmethod
    def discovery_time_left() -> float | None:
        """Seconds left until the finder stops waiting for the current discovery (its
        ``discovery_timeout``), or ``None`` outside a discovery; threads started with
        ``asyncio.to_thread`` see it too. Bound blocking calls (sockets, subprocesses) by
        it, and fail with a message of your own before it runs out: the finder cannot stop
        a thread, so one blocked past the deadline outlives the listing, holds a worker of
        the event loop's shared pool and delays the process's exit (the finder does not
        ask the provider again while it runs)."""
        deadline = _deadline.get()
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def listed(self, entries: Mapping[str, T], kernel_type: KernelType,
               key: str | None = None) -> T:
        """What discovery recorded for ``kernel_type`` (``entries[key]``, by default its
        id), or LaunchFailed: the kernel is not known here (any more), and how to see
        what is."""
        from .errors import LaunchFailed

        try:
            return entries[kernel_type.id if key is None else key]
        except KeyError:
            raise LaunchFailed(
                f"{kernel_type.id} is not (or no longer) a kernel of provider {self.id!r};"
                " run `kernel-providers list --refresh` to see what is") from None

    def launch_inputs(self, kernel_type: KernelType) -> list[str] | None:
        """The files and folders whose change could change how :meth:`launch` starts
        ``kernel_type`` on this machine (an environment's interpreter and package
        folders, the folders discovery reads to map ids to environments ...), or
        ``None``: unknown. A launch that replaces its caller (the Jupyter bridge's shim)
        is recorded as an exec plan and replayed without discovery until one of these
        changes (:mod:`kernel_providers.exec_plans`). The default, ``None``, never
        replays; only local providers whose launch depends on files alone name them.
        """
        return None

    async def attach(self, kernel_type: KernelType, state: dict[str, Any],
                     connection_info: ConnectionInfo) -> KernelLauncher:
        """A launcher for a kernel another process started, from its launcher's
        ``attach_state()`` and ``connection_info`` (e.g. a restarted Jupyter server
        finding its containers again). Providers whose kernels cannot outlive their
        launcher keep this default, which raises LaunchFailed."""
        from .errors import LaunchFailed

        raise LaunchFailed(f"kernels of provider {self.id!r} cannot be re-attached: they"
                           " end with the process that started them")

    async def cleanup_orphans(self) -> list[str]:
        """Remove what launches of this provider left behind when the process that
        launched them died (containers, remote files ...); return one line per thing
        removed. Called by ``kernel-providers cleanup``. The default has nothing to do.
        """
        return []
