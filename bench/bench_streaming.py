"""Another client streaming output through a kernel (issue 18). (1) Growth of the
managing process's RSS while a second jupyter_client runs cells of 1 MB output: ours (a
launcher that has run code, and one that only started the kernel, as the bridge's) vs
jupyter_client's KernelManager with a client that has run code, and alone; each manager
in its own process. (2) Execute latency p50/p99 while another client streams, ours
(`launcher.execute`) vs jupyter_client's `execute_interactive`, both attached to one
kernel, interleaved. Targets: growth < 20 MiB; p99 ratio <= 1.

    python bench/bench_streaming.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CELL_BYTES = 1_000_000
# IPython 9 keeps every cell's stream output in its history (for %notebook): cleared, so
# that the kernel's growth shows what its send queues hold.
CELL = (f"print('x' * {CELL_BYTES});"
        " getattr(get_ipython().history_manager, 'outputs', {}).clear()")
RSS_CELL = ("print(next(l.split()[1] for l in open('/proc/self/status')"
            " if l.startswith('VmRSS')))")
ROLES = {
    "ours-executed": "ours, launcher after execute (reads iopub in the background)",
    "ours-launched": "ours, launcher that only started the kernel (the bridge's case)",
    "jc-client": "jupyter_client KernelManager + client after execute_interactive",
    "jc-manager": "jupyter_client KernelManager alone",
}


def rss_mib() -> float:
    """This process's resident set size in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def noop(msg: Any) -> None:
    """An output hook that drops everything."""


def isolate(folder: Path) -> None:
    """A private kernelspec `kp-bench` (this interpreter's ipykernel), runtime dir and
    config, inherited by the manager processes."""
    spec = folder / "kernels" / "kp-bench"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bench", "language": "python"}))
    (folder / "runtime").mkdir(mode=0o700)
    (folder / "config.toml").write_text("")
    os.environ.update({"JUPYTER_PATH": str(folder), "JUPYTER_RUNTIME_DIR":
                       str(folder / "runtime"), "KERNEL_PROVIDERS_CONFIG":
                       str(folder / "config.toml"), "KERNEL_PROVIDERS_DISABLE":
                       "conda,venv,docker,ssh,example"})


# --- (1) a manager process: starts the kernel, reports its own RSS growth ------------

async def manager_process(role: str, info_file: Path) -> None:
    """Start a kernel as ``role`` does, then on stdin's ``mark`` take this process's RSS
    and on ``done`` print its growth (JSON); the event loop runs all along."""
    if role.startswith("ours"):
        from kernel_providers import KernelFinder

        launcher = await KernelFinder().launch("spec/kp-bench")
        if role == "ours-executed":
            await launcher.execute("1")
        info: dict[str, Any] = dict(launcher.connection_info)
        stop: Any = launcher.shutdown
    else:
        from jupyter_client.manager import AsyncKernelManager

        km = AsyncKernelManager(kernel_name="kp-bench")
        await km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = None
        if role == "jc-client":
            client = km.client()
            client.start_channels()
            await client.wait_for_ready(timeout=60)
            await client.execute_interactive("1", timeout=60, output_hook=noop)
        info = dict(km.get_connection_info(session=False))
        info["key"] = info["key"].decode()

        async def stop() -> None:
            if client is not None:
                client.stop_channels()
            await km.shutdown_kernel()

    info_file.write_text(json.dumps(info))
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print("ready", flush=True)
    await stdin.readline()
    await asyncio.sleep(0.2)
    before = rss_mib()
    print("marked", flush=True)
    await stdin.readline()
    await asyncio.sleep(0.2)
    print(json.dumps({"manager_mib": rss_mib() - before}), flush=True)
    await stop()


def expect(proc: subprocess.Popen[str], word: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(word):
        raise RuntimeError(f"manager process said {line!r}, expected {word!r}")
    return line


def measure_manager(role: str, folder: Path, cells: int) -> dict[str, float]:
    """RSS growth of a ``role`` manager and of its kernel while a second client (here)
    runs ``cells`` cells of 1 MB output."""
    from jupyter_client import BlockingKernelClient

    info_file = folder / f"{role}.json"
    proc = subprocess.Popen([sys.executable, __file__, "--manager", role, str(info_file)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    try:
        expect(proc, "ready")
        client = BlockingKernelClient()
        client.load_connection_file(str(info_file))
        client.start_channels()
        client.wait_for_ready(60)

        def run(code: str, hook: Any = noop) -> None:
            reply = client.execute_interactive(code, timeout=120, output_hook=hook)
            assert reply["content"]["status"] == "ok", reply["content"]

        def kernel_rss() -> float:
            out: list[str] = []
            run(RSS_CELL, lambda m: out.append(m["content"].get("text", "")))
            return int("".join(out)) / 1024

        for _ in range(5):  # warm-up: the first big buffers on every side
            run(CELL)
        proc.stdin.write("mark\n")
        proc.stdin.flush()
        expect(proc, "marked")
        kernel_before = kernel_rss()
        for _ in range(cells):
            run(CELL)
        kernel = kernel_rss() - kernel_before
        proc.stdin.write("done\n")
        proc.stdin.flush()
        manager = json.loads(expect(proc, "{"))["manager_mib"]
        client.stop_channels()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"manager_mib": manager, "kernel_mib": kernel}


# --- (2) execute latency with another client streaming -------------------------------

async def latencies(reps: int) -> tuple[list[float], list[float]]:
    """Per repetition: the other client runs a 1 MB cell, then ours executes `pass`;
    the other client again, then jupyter_client's execute_interactive runs `pass`."""
    from jupyter_client.asynchronous import AsyncKernelClient

    from kernel_providers import KernelFinder

    launcher = await KernelFinder().launch("spec/kp-bench")
    clients: list[AsyncKernelClient] = []
    try:
        await launcher.execute("pass")  # ours: its connection is open from here on
        for _ in range(2):  # jupyter_client's, and the streaming one
            client = AsyncKernelClient()
            client.load_connection_info(dict(launcher.connection_info))
            client.start_channels()
            await client.wait_for_ready(timeout=60)
            clients.append(client)
        theirs, streaming = clients
        ours_s, theirs_s = [], []
        for _ in range(reps):
            await streaming.execute_interactive(CELL, timeout=60, output_hook=noop)
            start = time.perf_counter()
            await launcher.execute("pass")
            ours_s.append(time.perf_counter() - start)
            await streaming.execute_interactive(CELL, timeout=60, output_hook=noop)
            start = time.perf_counter()
            await theirs.execute_interactive("pass", timeout=60, output_hook=noop)
            theirs_s.append(time.perf_counter() - start)
    finally:
        for client in clients:
            client.stop_channels()
        await launcher.shutdown()
    return ours_s, theirs_s


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--manager":
        asyncio.run(manager_process(sys.argv[2], Path(sys.argv[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer cells and repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    try:
        import jupyter_client  # noqa: F401
    except ImportError as exc:
        from _skip import skipped

        return skipped(f"{exc} (the reference; pip install jupyter_client ipykernel)")
    cells, reps = (100, 40) if args.quick else (300, 300)
    figures: dict[str, Any] = {"cells": cells, "cell_bytes": CELL_BYTES, "repetitions": reps}
    with tempfile.TemporaryDirectory() as tmp:
        isolate(Path(tmp))
        growth = {role: measure_manager(role, Path(tmp), cells) for role in ROLES}
        ours_s, theirs_s = asyncio.run(latencies(reps))
    figures["rss_growth_mib"] = growth
    print(f"manager RSS growth while a second client runs {cells} cells of 1 MB output"
          " (each manager its own process):")
    for role, label in ROLES.items():
        print(f"  {label + ':':<70} {growth[role]['manager_mib']:+6.1f} MiB"
              f"  (kernel {growth[role]['kernel_mib']:+.1f} MiB)")
    # Growths under 1 MiB count as 1: the ratio of two noises says nothing.
    ours_g, theirs_g = (max(growth[r]["manager_mib"], 1.0) for r in ("ours-executed",
                                                                        "jc-client"))
    print(f"RATIO streaming manager_rss_growth ours/jupyter_client = {ours_g / theirs_g:.2f}"
          " (after running code; growths < 1 MiB count as 1; target: ours < 20 MiB)")
    a50, b50 = statistics.median(ours_s) * 1000, statistics.median(theirs_s) * 1000
    a99, b99 = p99(ours_s) * 1000, p99(theirs_s) * 1000
    figures["execute_ms"] = {"ours_p50": a50, "ours_p99": a99, "jupyter_client_p50": b50,
                             "jupyter_client_p99": b99}
    print(f"execute latency of `pass` while another client streams 1 MB cells, {reps} each,"
          " interleaved on one kernel:")
    print(f"  ours launcher.execute:              p50 {a50:5.1f} ms   p99 {a99:5.1f} ms")
    print(f"  jupyter_client execute_interactive: p50 {b50:5.1f} ms   p99 {b99:5.1f} ms")
    print(f"RATIO streaming execute_p50 ours/jupyter_client = {a50 / b50:.2f}")
    print(f"RATIO streaming execute_p99 ours/jupyter_client = {a99 / b99:.2f} (target <= 1)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
