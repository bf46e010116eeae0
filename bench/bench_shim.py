"""Shim overhead: a venv kernel started through the kernelspec that
``kernel-providers jupyter sync`` writes (argv = our shim, which execs the kernel) vs the
kernel's own argv, both on a connection file the "client" wrote, measured from Popen to
the first kernel_info reply, interleaved in one run. Target (issue 10): <= 50 ms more.
The shim replays the exec plan its first start recorded; the start that discovers the
kernel (what every start cost before exec plans, and a first start still costs) is
measured too, with ``KERNEL_PROVIDERS_NO_EXEC_PLANS=1``.

    python bench/bench_shim.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from kernel_providers.connection import allocate_ports, new_connection_info, write_connection_file
from kernel_providers.protocol import KernelConnection
from kernel_providers.testing.environments import ipykernel_wheel, make_venv
from kernel_providers.types import ConnectionInfo


@contextlib.contextmanager
def _started(argv: list[str], folder: Path, env: dict[str, str] | None
             ) -> Iterator[tuple[subprocess.Popen[bytes], ConnectionInfo, float]]:
    """Start ``argv`` on a fresh connection file as a client would: (process, its
    connection info, perf_counter at Popen); the process and file go afterwards."""
    info = new_connection_info(allocate_ports(), kernel_name="bench")
    path = write_connection_file(info, folder)
    argv = [a.replace("{connection_file}", str(path)) for a in argv]
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, env={**os.environ, **(env or {})})
    try:
        yield process, info, start
    finally:
        process.kill()
        process.wait(30)
        path.unlink()


async def _ready(argv: list[str], folder: Path, env: dict[str, str] | None = None) -> float:
    """Seconds from Popen to the kernel's first kernel_info reply (and iopub)."""
    with _started(argv, folder, env) as (process, info, start):
        async with KernelConnection(info) as conn:
            await conn.wait_ready(60, lambda: process.poll() is None)
        return time.perf_counter() - start


def _until_exec(argv: list[str], folder: Path, env: dict[str, str] | None = None) -> float:
    """Seconds from Popen until the shim has become the kernel (its cmdline changed):
    the shim's own cost, without the kernel's start-up noise."""
    with _started(argv, folder, env) as (process, _, start):
        while True:
            with contextlib.suppress(OSError), open(f"/proc/{process.pid}/cmdline", "rb") as f:
                if b"ipykernel_launcher" in f.read():
                    return time.perf_counter() - start
            if process.poll() is not None:
                raise RuntimeError(f"the shim ended with {process.returncode}")
            time.sleep(0.0002)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    reps = 3 if args.quick else 21
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "runtime").mkdir(mode=0o700)
        venvs = base / "venvs"
        prefix = make_venv(venvs / "benchenv", ipykernel_wheel(base))
        config = base / "config.toml"
        config.write_text(f'[providers.venv]\ndirs = ["{venvs}"]\ninclude_cwd = false\n')
        os.environ.update({
            "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "JUPYTER_DATA_DIR": str(base / "data"),
            "XDG_CACHE_HOME": str(base / "cache"),
            "KERNEL_PROVIDERS_CONFIG": str(config),
            "KERNEL_PROVIDERS_DISABLE": "conda,docker,ssh,example"})
        subprocess.run([sys.executable, "-m", "kernel_providers", "jupyter", "sync"],
                       check=True, stdout=subprocess.DEVNULL)
        spec = json.loads((base / "data" / "kernels" / "venv-benchenv" / "kernel.json")
                          .read_text())
        shim = spec["argv"]
        own = [str(prefix / "bin" / "python"), "-m", "ipykernel_launcher", "-f",
               "{connection_file}"]
        loop = asyncio.new_event_loop()
        loop.run_until_complete(_ready(own, base))  # warm-up: the page cache
        loop.run_until_complete(_ready(shim, base))  # records the exec plan
        no_plan = {"KERNEL_PROVIDERS_NO_EXEC_PLANS": "1"}
        a: list[float] = []
        b: list[float] = []
        c: list[float] = []
        series = [(a, shim, None), (b, own, None), (c, shim, no_plan)]
        for rep in range(reps):
            # rotated, so that no series always follows the same one
            for times, argv, env in series[rep % 3:] + series[:rep % 3]:
                times.append(loop.run_until_complete(_ready(argv, base, env)))
        loop.close()
        exec_times = {"replay": [], "discover": [], "bare": []}
        for _ in range(reps):
            exec_times["replay"].append(_until_exec(shim, base))
            exec_times["discover"].append(_until_exec(shim, base, no_plan))
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            exec_times["bare"].append(time.perf_counter() - started)
    replay_ms, discover_exec_ms, bare_ms = (statistics.median(exec_times[k]) * 1000
                                            for k in ("replay", "discover", "bare"))
    shim_ms, own_ms = statistics.median(a) * 1000, statistics.median(b) * 1000
    discover_ms = statistics.median(c) * 1000
    print(f"Popen to ready of a venv kernel, median of {reps}, interleaved:")
    print(f"  synced kernelspec (shim, exec plan):   {shim_ms:.0f} ms")
    print(f"  the kernel's own argv:                 {own_ms:.0f} ms")
    print(f"  shim overhead:                         {shim_ms - own_ms:+.0f} ms (target <= 50)")
    print(f"  shim discovering (first start, no plan): {discover_ms:.0f} ms"
          f" ({discover_ms - own_ms:+.0f} ms)")
    print(f"the shim process alone, Popen until it is the kernel (exec): {replay_ms:.0f} ms"
          f" replaying its plan, {discover_exec_ms:.0f} ms discovering; a bare"
          f" `python -c pass`: {bare_ms:.0f} ms")
    print(f"RATIO shim/own_argv = {shim_ms / own_ms:.2f}")
    print(f"RATIO shim_first_start/own_argv = {discover_ms / own_ms:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"shim_ms": shim_ms, "own_argv_ms": own_ms, "shim_first_start_ms": discover_ms,
             "shim_until_exec_ms": replay_ms, "shim_until_exec_discovering_ms": discover_exec_ms,
             "bare_python_ms": bare_ms,
             "repetitions": reps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
