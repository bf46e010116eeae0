"""``kernel-providers pool serve|status|stop``: the per-user pool service's commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_pool_commands", "autostart"]


def add_pool_commands(sub: Any) -> None:
    """Add ``pool`` and its subcommands to the CLI's subparsers."""
    pool = sub.add_parser("pool", help="the warm pool service: kernels ready before you ask")
    commands = pool.add_subparsers(dest="pool_command", required=True, metavar="ACTION")
    p = commands.add_parser("serve", help="hold the pool configured in [pool] and hand its"
                            " kernels to `run`, `launch` and the Python API")
    p.add_argument("--detach", action="store_true",
                   help="run in the background; return once it answers")
    p.set_defaults(handler=cmd_pool_serve)
    p = commands.add_parser("status", help="kernels ready, hits, misses, memory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_pool_status)
    p = commands.add_parser("stop", help="stop the service and its pooled kernels")
    p.set_defaults(handler=cmd_pool_stop)


async def cmd_pool_serve(args: argparse.Namespace) -> int:
    from .cli import EXIT_KERNEL_FAILED, EXIT_OK, _err, _make_finder
    from .pool_service import serve, socket_path

    finder = _make_finder(pool=True)
    if args.detach:
        return await _detached()
    ready = asyncio.Event()
    served = asyncio.ensure_future(serve(finder, ready))
    waiting = asyncio.ensure_future(ready.wait())
    await asyncio.wait({served, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if served.done():
        waiting.cancel()
        served.result()  # its error, for the command's handler
        return EXIT_KERNEL_FAILED
    _err(f"pool service listening on {socket_path()} (pid {os.getpid()}); Ctrl-C stops it")
    await served
    return EXIT_OK


def _spawn_service() -> tuple[subprocess.Popen[bytes], Path]:
    """Start `pool serve` in the background (its own session: it outlives this
    process); it and its log file."""
    from .pool_service import socket_path

    log = socket_path().with_name("kernel-providers-pool.log")
    with open(log, "ab") as out:
        os.chmod(log, 0o600)
        process = subprocess.Popen(
            [sys.executable, "-m", "kernel_providers", "pool", "serve"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    return process, log


def autostart(finder: Any) -> None:
    """With ``[pool] autostart = true``, start the pool service if none runs (not
    waiting for it: the next command finds it)."""
    from .pool import parse_pool
    from .pool_service import socket_path

    if not finder.config.pool or socket_path().exists():
        return
    try:
        if parse_pool(finder.config.pool).autostart:
            _spawn_service()
    except Exception:  # a config error is reported where the pool is used; never here
        return


async def _detached() -> int:
    from .cli import EXIT_KERNEL_FAILED, EXIT_OK, _err
    from .pool_service import service_request

    process, log = _spawn_service()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _err(f"error: the pool service ended at once (status {process.returncode});"
                 f" its log: {log}")
            return EXIT_KERNEL_FAILED
        if await service_request({"op": "status"}, timeout=2) is not None:
            _err(f"pool service running (pid {process.pid}); log: {log}")
            return EXIT_OK
        await asyncio.sleep(0.05)
    _err(f"error: the pool service did not answer within 60 s; its log: {log}")
    return EXIT_KERNEL_FAILED


async def cmd_pool_status(args: argparse.Namespace) -> int:
    from .cli import EXIT_KERNEL_FAILED, EXIT_OK, _err
    from .pool_service import service_request

    answer = await service_request({"op": "status"})
    if answer is None:
        _err("no pool service runs (start one: kernel-providers pool serve --detach)")
        return EXIT_KERNEL_FAILED
    status = answer["status"]
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    print(f"pool service pid {status['holder_pid']}, {_mib(status['holder_rss'])} resident;"
          f" {status['held']} of at most {status['cap']} kernels held")
    print(f"{'KERNEL TYPE':32} {'READY':>5} {'WANTED':>6} {'HITS':>5} {'MISSES':>6}"
          f" {'RSS EACH':>9}  LAST START ERROR / LAST MISS")
    for kernel_id, kind in status["types"].items():
        sizes = [r for r in kind["rss"] if r]
        each = _mib(sum(sizes) // len(sizes)) if sizes else "-"
        print(f"{kernel_id:32} {kind['ready']:>5} {kind['wanted']:>6} {kind['hits']:>5}"
              f" {kind['misses']:>6} {each:>9}  {kind['last_error'] or kind['last_miss'] or ''}")
    return EXIT_OK


async def cmd_pool_stop(args: argparse.Namespace) -> int:
    from .cli import EXIT_KERNEL_FAILED, EXIT_OK, _err
    from .pool_service import service_request, socket_path

    if await service_request({"op": "stop"}) is None:
        _err("no pool service runs")
        return EXIT_KERNEL_FAILED
    for _ in range(200):  # it stops its kernels, then the socket goes
        if not socket_path().exists():
            break
        await asyncio.sleep(0.05)
    _err("pool service stopped")
    return EXIT_OK


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:.0f} MiB"
