"""A job's lease: the file in its folder whose mtime this process keeps fresh while it
holds the kernel; the nanny ends the kernel once it goes stale (the launching side is
gone), unless it says "detached" (no process holds the job for now).

Leases are renewed from one daemon thread with an event loop (and cluster
connections) of its own: they say that the *process* lives, so a launcher's event loop
that is busy for longer than the lease (a blocking call in a Jupyter server's handler)
does not end its kernels, and they stop with the process whatever ends it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading

from kernel_providers.sdk import PerProcess

from .cluster import COMMAND_SECONDS, Cluster

__all__ = ["DETACHED", "Lease"]

#: what the lease file holds while no process holds the job (see Lease.detach)
DETACHED = "detached"

def _start_keeper() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="kernel-providers-slurm-leases",
                     daemon=True).start()
    return loop


#: the leases' event loop, running in its daemon thread (one per process: a forked
#: child has none of its parent's threads)
_KEEPER: PerProcess[asyncio.AbstractEventLoop] = PerProcess(_start_keeper)


class Lease:
    """Holds the lease file ``path`` of a job on ``cluster`` (written empty: held, then
    touched every quarter of ``seconds``, at least every 0.5 s) until ``release`` or
    ``detach``."""

    def __init__(self, cluster: Cluster, path: str, seconds: float) -> None:
        self._loop = _KEEPER.get()
        self._stop = asyncio.Event()  # (bound to the keeper's loop when first awaited)
        self._detach = False
        self._done = asyncio.run_coroutine_threadsafe(
            self._hold(cluster.fresh(), path, max(seconds / 4, 0.5)), self._loop)

    async def _hold(self, cluster: Cluster, path: str, every: float) -> None:
        stop = self._stop
        try:
            with contextlib.suppress(Exception):
                await cluster.write(path, "")  # held (again): not detached
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    await cluster.touch(path)
                with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)
            if self._detach:
                with contextlib.suppress(Exception):  # (unwritten: it runs out as if held)
                    await cluster.write(path, DETACHED)
        finally:
            await cluster.close()

    def release(self) -> None:
        """Stop renewing (the job is being ended); returns at once."""
        self._loop.call_soon_threadsafe(self._stop.set)

    def detach(self) -> None:
        """Stop renewing and mark the lease "detached", done before this returns (the
        caller may end its process right after); callable from any thread."""
        self._detach = True
        self._loop.call_soon_threadsafe(self._stop.set)
        with contextlib.suppress(concurrent.futures.TimeoutError):
            self._done.result(COMMAND_SECONDS)
