"""Launch-to-ready over SSH: ours with a warm connection (another kernel keeps it open)
and cold (a new connection), vs the same kernel started with the OpenSSH client (`ssh
host python3 -m ipykernel_launcher -f FILE` with -L forwards) timed to its first
kernel_info reply. Interleaved in one run against a test sshd in a container.
Target (issue 5): warm overhead <= 25 %.

    python bench/bench_ssh.py [--quick] [--json FILE] [--image IMAGE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kernel_providers import Config, KernelFinder
from kernel_providers.connection import new_connection_info
from kernel_providers.protocol import KernelConnection

REMOTE_PORTS = [51001, 51002, 51003, 51004, 51005]
NAMES = ["shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"]


def free_ports() -> list[int]:
    socks = [socket.socket() for _ in NAMES]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


async def plain_ssh(config: Path, sshd: Any) -> float:
    """OpenSSH client: write the connection file, start the kernel with forwards."""
    inner: dict[str, Any] = dict(new_connection_info(dict(zip(NAMES, REMOTE_PORTS, strict=True))))
    local = free_ports()
    start = time.perf_counter()
    argv = ["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"]
    for lp, rp in zip(local, REMOTE_PORTS, strict=True):
        argv += ["-L", f"127.0.0.1:{lp}:127.0.0.1:{rp}"]
    argv += ["testbox", "umask 077; cat > /tmp/bench-c.json &&"
             " exec python3 -m ipykernel_launcher -f /tmp/bench-c.json"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(inner).encode())
    proc.stdin.close()
    info: Any = {**inner, **dict(zip(NAMES, local, strict=True))}
    async with KernelConnection(info) as conn:
        await conn.wait_ready(120, lambda: proc.returncode is None)
        elapsed = time.perf_counter() - start
        await conn.shutdown()
    try:
        await asyncio.wait_for(proc.wait(), 20)
    except (asyncio.TimeoutError, TimeoutError):
        proc.kill()
        await proc.wait()
    return elapsed


async def ours(finder: KernelFinder) -> float:
    start = time.perf_counter()
    launcher = await finder.launch("ssh/testbox/python3")
    elapsed = time.perf_counter() - start
    await launcher.shutdown()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--image", default="kernel-providers-test:bookworm")
    args = parser.parse_args()
    try:
        import docker

        client = docker.from_env()
        client.images.get(args.image)
    except Exception as exc:
        from _skip import skipped

        return skipped(f"no Docker engine or no image {args.image} ({exc};"
                       " scripts/build-test-image builds it)")
    if shutil.which("ssh") is None:
        from _skip import skipped

        return skipped("no OpenSSH client (ssh) for the reference")
    from kernel_providers_ssh.testing import start_sshd

    reps = 3 if args.quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "runtime").mkdir(mode=0o700)
        os.environ["JUPYTER_RUNTIME_DIR"] = str(folder / "runtime")
        sshd = start_sshd(client, args.image, folder)
        try:
            table = {"hosts": ["testbox"], "ssh_config": str(sshd.ssh_config),
                     "known_hosts": str(sshd.known_hosts)}
            finder = KernelFinder(Config(providers={"ssh": table}))
            warm, cold, plain = [], [], []

            async def run() -> None:
                await finder.find_kernels()
                await ours(finder)  # warm-up
                await plain_ssh(sshd.ssh_config, sshd)
                for _ in range(reps):
                    cold.append(await ours(finder))  # no kernel open: a new connection
                    keeper = await finder.launch("ssh/testbox/python3")
                    warm.append(await ours(finder))
                    await keeper.shutdown()
                    plain.append(await plain_ssh(sshd.ssh_config, sshd))

            asyncio.run(run())
        finally:
            sshd.stop()
            client.close()
    w, c, p = (statistics.median(x) * 1000 for x in (warm, cold, plain))
    print(f"launch-to-ready over SSH, median of {reps}, interleaved:")
    print(f"  ours, warm connection: {w:.0f} ms")
    print(f"  ours, new connection:  {c:.0f} ms")
    print(f"  ssh + ipykernel_launcher with -L forwards (OpenSSH client, new connection):"
          f" {p:.0f} ms")
    print(f"RATIO ssh launch_to_ready ours-warm/plain-ssh = {w / p:.2f} (target <= 1.25)")
    print(f"RATIO ssh launch_to_ready ours-cold/plain-ssh = {c / p:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"warm_ms": w, "cold_ms": c, "plain_ssh_ms": p,
                                               "repetitions": reps}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
