"""A jupyter_client kernel provisioner that starts kernels through kernel-providers, so
Jupyter's restart, interrupt and shutdown work the same for local, conda, Docker and SSH
kernels."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar, cast

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Unicode

from kernel_providers import ConnectionInfo, KernelLauncher, KernelProviderError, LaunchOptions
from kernel_providers.blocking import run_in_background, run_sync
from kernel_providers.sdk import PROGRESS_LOGGER

from .errors import shown_to_clients
from .shared import shared_finder

__all__ = ["KernelProvidersProvisioner"]

# Variables a Jupyter kernel manager sets for local processes only.
_LOCAL_ONLY = {"JPY_PARENT_PID"}

# Launchers not cleaned up yet. A client may leave without cleaning up (`jupyter console`
# only sends shutdown_request): at exit their connection files and containers go, as a
# stock kernel ends with the process that manages it. A server that crashes runs no exit
# handlers, so its containers stay to be re-attached.
_live: set[KernelLauncher] = set()
_live_lock = threading.Lock()
_exit_hook = False


def _clean_up_at_exit() -> None:
    with _live_lock:
        launchers = list(_live)
        _live.clear()
    for launcher in launchers:
        with contextlib.suppress(Exception):
            run_sync(launcher.cleanup(), timeout=30)


def _track(launcher: KernelLauncher) -> None:
    global _exit_hook
    with _live_lock:
        _live.add(launcher)
        if not _exit_hook:
            # Before thread pools refuse work at interpreter exit (engines are called
            # from threads): the hook concurrent.futures itself uses, else atexit's.
            register = getattr(threading, "_register_atexit", atexit.register)
            register(_clean_up_at_exit)
            _exit_hook = True


def _forget_after_fork() -> None:
    # A forked child does not own its parent's kernels.
    global _live_lock
    _live.clear()
    _live_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


T = TypeVar("T")


async def _shown(call: Coroutine[Any, Any, T]) -> T:
    try:
        return await run_in_background(call)
    except KernelProviderError as error:
        raise shown_to_clients(error) from error


async def _start(kernel_id: str, options: LaunchOptions,
                 new_ports_ok: bool = False) -> KernelLauncher:
    """Launch ``kernel_id`` and return once it listens on its ports (cleaned up if not).
    A restart (Jupyter asks for the old ports and key) takes a pooled kernel instead when
    one is ready and ``new_ports_ok``: it has ports of its own, which the kernel manager
    adopts (jupyter_server's channels follow a port change; JupyterLab reconnects after
    a restart for that)."""
    finder = shared_finder().finder
    asked = dict(options.connection_info or {})
    if new_ports_ok and asked.get("shell_port") and not options.connection_file:
        fresh = replace(options, connection_info=cast(ConnectionInfo, {
            k: v for k, v in asked.items() if k in ("transport", "ip")}))
        pooled = await finder.take_pooled(kernel_id, fresh)
        if pooled is not None:
            return pooled
    launcher = await finder.launch(kernel_id, options, wait_ready=False)
    return await launcher.listening_or_cleaned_up(
        options.ready_timeout or finder.config.ready_timeout)


class _Forward(logging.Handler):
    """Progress records of one kernel type, as INFO lines of the server's log."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[Any], kernel_id: str
                 ) -> None:
        super().__init__(logging.INFO)
        self.log, self.kernel_id = log, kernel_id

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "kernel_id", None) == self.kernel_id:
            self.log.info("%s", record.getMessage())


@contextlib.contextmanager
def _progress_to(log: logging.Logger | logging.LoggerAdapter[Any],
                 kernel_id: str) -> Any:
    """While the block runs, ``kernel_id``'s launch progress (a queued batch job's
    state, say) goes to the server's log, where the user who started it looks."""
    logger = logging.getLogger(PROGRESS_LOGGER)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    handler = _Forward(log, kernel_id)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _follows_port_changes(manager: Any) -> bool:
    """Whether the kernel manager's clients follow a restart onto new ports: a
    jupyter_server's do; a console's or nbclient's keep their sockets on the old ones."""
    return any(c.__module__.startswith("jupyter_server.") for c in type(manager).__mro__)


class KernelProvidersProvisioner(KernelProvisionerBase):  # type: ignore[misc,unused-ignore]
    """Maps jupyter_client's provisioner calls onto the launcher contract. Its kernelspecs
    (made by KernelProvidersKernelSpecManager or ``kernel-providers jupyter sync``) name
    the kernel in ``kernel_providers_id``.

    Launchers live on kernel-providers' one background event loop, whatever loop
    jupyter_client calls from (blocking managers run each call on a loop of their own),
    so a kernel started from one call is stopped from another.
    """

    kernel_providers_id = Unicode(config=True, help="the kernel-providers id to start")

    launcher: KernelLauncher | None = None

    @property
    def has_process(self) -> bool:
        """Whether a kernel was started (and not cleaned up)."""
        return self.launcher is not None

    async def poll(self) -> int | None:
        """``None`` while the kernel runs (KernelManager.is_alive)."""
        return self.launcher.poll() if self.launcher is not None else 0

    async def wait(self) -> int | None:
        """Wait for the kernel to end; its exit status."""
        if self.launcher is None:
            return 0
        return await run_in_background(self.launcher.wait())

    async def send_signal(self, signum: int) -> None:
        """Deliver a signal wherever the kernel runs (interrupts in signal mode)."""
        if self.launcher is not None:
            await _shown(self.launcher.signal(signum))

    async def kill(self, restart: bool = False) -> None:
        """Kill the kernel at once."""
        if self.launcher is not None:
            await run_in_background(self.launcher.kill())

    async def terminate(self, restart: bool = False) -> None:
        """Ask the kernel to end (SIGTERM wherever it runs)."""
        await self.send_signal(signal.SIGTERM)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """The environment as Jupyter prepares it; no command line (the provider has one).
        ``extra_arguments`` (nbclient, papermill pass some) are kept for the launch."""
        extra = list(kwargs.pop("extra_arguments", None) or [])
        kwargs = await super().pre_launch(**kwargs)
        kwargs["cmd"] = []
        kwargs["extra_arguments"] = extra
        return kwargs

    def _requested_connection(self) -> ConnectionInfo:
        # The transport and address Jupyter asked for (ipc works for local kernels and
        # fails clearly elsewhere); on a restart also its key and ports, so its clients
        # stay connected.
        km = self.parent
        if km is None:
            return {}
        wanted: dict[str, Any] = {"transport": km.transport, "ip": km.ip}
        if km.shell_port:
            known = km.get_connection_info()
            key = known.get("key", b"")
            wanted = {**known, "key": key.decode() if isinstance(key, bytes) else str(key)}
        return cast(ConnectionInfo, wanted)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Start the kernel through its provider; returns its connection info.

        Only the variables Jupyter added to the environment are passed on (a container or
        a remote host gets no copy of this machine's environment). Jupyter's own ready
        check follows (one check per start, not two): a provider's launch returns once
        the kernel listens on the ports it reports (a local kernel too: one that dies
        while starting fails the start with its own output, not Jupyter's "Kernel died
        before replying to kernel_info").
        """
        env = kwargs.get("env") or {}
        extra = {k: v for k, v in env.items()
                 if os.environ.get(k) != v and k not in _LOCAL_ONLY}
        options = LaunchOptions(env=extra, cwd=kwargs.get("cwd"),
                                extra_argv=list(kwargs.get("extra_arguments") or []),
                                connection_info=self._requested_connection())
        with _progress_to(self.log, self.kernel_providers_id):
            self.launcher = await _shown(_start(self.kernel_providers_id, options,
                                                _follows_port_changes(self.parent)))
        _track(self.launcher)
        info: dict[str, Any] = dict(self.launcher.connection_info)
        info["key"] = str(info["key"]).encode()  # as jupyter_client keeps it
        if self.parent is not None and self.parent.kernel_name:
            info["kernel_name"] = self.parent.kernel_name
        self.connection_info = cast(KernelConnectionInfo, info)
        return self.connection_info

    async def cleanup(self, restart: bool = False) -> None:
        """Free what the launch made (connection files, containers, tunnels)."""
        if self.launcher is not None:
            await run_in_background(self.launcher.cleanup())
            with _live_lock:
                _live.discard(self.launcher)
            self.launcher = None

    async def get_provisioner_info(self) -> dict[str, Any]:
        """What a restarted server needs to find this kernel again."""
        info: dict[str, Any] = await super().get_provisioner_info()
        info["kernel_providers_id"] = self.kernel_providers_id
        if self.launcher is not None:
            info["kernel_providers_attach"] = state = self.launcher.attach_state()
            info["kernel_providers_connection"] = dict(self.launcher.connection_info)
            if state:  # saved to re-attach after a restart: must outlive this server
                self.launcher.detach()
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Restore what ``get_provisioner_info`` saved."""
        await super().load_provisioner_info(provisioner_info)
        self.kernel_providers_id = provisioner_info.get("kernel_providers_id",
                                                        self.kernel_providers_id)
        state = provisioner_info.get("kernel_providers_attach")
        if state:  # a kernel that outlives its launcher (a container): re-attach
            self.launcher = await run_in_background(shared_finder().finder.attach(
                self.kernel_providers_id, state,
                provisioner_info["kernel_providers_connection"]))
            _track(self.launcher)

