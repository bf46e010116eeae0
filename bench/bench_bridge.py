"""Start-to-ready of a kernelspec kernel in jupyter_server's kernel manager (what POST
/api/kernels runs): through the bridge (KernelProvidersKernelSpecManager + our
provisioner) vs the stock KernelSpecManager + LocalProvisioner, interleaved in one run
(target, issue 6: <= 1.05); then through the bridge with a warm pool ([pool] for the
kernel) vs without (target, issue 13: <= 0.2).

    python bench/bench_bridge.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


async def start_to_ready(manager: Any, name: str) -> float:
    """What JupyterLab waits for: the server's start (POST /api/kernels), then the
    kernel's kernel_info reply. (Not the client's wait_for_ready, which adds 0.2 s of
    its own, flushing iopub, to every start.)"""
    start = time.perf_counter()
    kernel_id = await manager.start_kernel(kernel_name=name)
    client = manager.get_kernel(kernel_id).client()
    client.start_channels()
    msg_id = client.kernel_info()
    while (await client.get_shell_msg(timeout=120))["parent_header"].get("msg_id") != msg_id:
        pass
    elapsed = time.perf_counter() - start
    client.stop_channels()
    await manager.shutdown_kernel(kernel_id, now=False)
    return elapsed


def with_pool(folder: Path, reps: int) -> list[float]:
    """Start-to-ready through the bridge whose finder pools kp-bench (refilled, not
    timed, between two starts)."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    import kernel_providers_jupyter.shared as shared
    from kernel_providers.blocking import run_sync
    from kernel_providers_jupyter import KernelProvidersKernelSpecManager

    config = folder / "config.toml"
    config.write_text(config.read_text() + '[pool."spec/kp-bench"]\nsize = 1\n')
    shared.forget_shared_finder()
    manager = AsyncMappingKernelManager(
        kernel_spec_manager=KernelProvidersKernelSpecManager(), root_dir=str(folder))
    pool = shared.shared_finder().finder.pool
    assert pool is not None
    times: list[float] = []

    async def run() -> None:
        for i in range(reps + 1):
            run_sync(pool.filled())  # on the bridge's loop; not timed
            elapsed = await start_to_ready(manager, "kp-bench")
            if i:  # the first is a warm-up
                times.append(elapsed)

    try:
        asyncio.run(run())
    finally:
        run_sync(pool.close())
    assert pool.status()["types"]["spec/kp-bench"]["hits"] == reps + 1
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    try:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

        from kernel_providers_jupyter import KernelProvidersKernelSpecManager
    except ImportError as exc:
        from _skip import skipped

        return skipped(f"{exc} (pip install ./bridges/jupyter jupyter_server)")
    reps = 3 if args.quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # Not on Jupyter's path: only kernel-providers sees it, so the bridge starts it
        # through its provisioner (kernelspecs on the path stay stock); the stock
        # manager is pointed at the folder.
        spec = folder / "extra" / "kp-bench"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "bench", "language": "python"}))
        (folder / "runtime").mkdir(mode=0o700)
        (folder / "config.toml").write_text(
            f"[providers.spec]\nextra_dirs = [{json.dumps(str(spec.parent))}]\n")
        os.environ.update({"JUPYTER_PATH": str(folder), "JUPYTER_RUNTIME_DIR":
                           str(folder / "runtime"), "KERNEL_PROVIDERS_CONFIG":
                           str(folder / "config.toml"), "KERNEL_PROVIDERS_DISABLE":
                           "conda,venv,docker,ssh,example"})
        bridge = AsyncMappingKernelManager(
            kernel_spec_manager=KernelProvidersKernelSpecManager(), root_dir=tmp)
        stock = AsyncMappingKernelManager(
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]),
            root_dir=tmp)
        provisioner = bridge.kernel_spec_manager.get_kernel_spec("kp-bench").metadata.get(
            "kernel_provisioner", {}).get("provisioner_name")
        assert provisioner == "kernel-providers-provisioner", provisioner
        ours: list[float] = []
        theirs: list[float] = []

        async def run() -> None:
            await start_to_ready(bridge, "kp-bench")  # warm-up
            await start_to_ready(stock, "kp-bench")
            for _ in range(reps):
                ours.append(await start_to_ready(bridge, "kp-bench"))
                theirs.append(await start_to_ready(stock, "kp-bench"))

        asyncio.run(run())
        pooled = with_pool(folder, reps)
    a, b = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
    print(f"start-to-ready in jupyter_server's kernel manager, median of {reps}, interleaved:")
    print(f"  through the bridge:                         {a:.0f} ms")
    print(f"  stock KernelSpecManager + LocalProvisioner: {b:.0f} ms")
    print(f"RATIO bridge start_to_ready ours/stock = {a / b:.2f} (target <= 1.05)")
    c = statistics.median(pooled) * 1000
    print(f"  through the bridge, from its warm pool:     {c:.0f} ms")
    print(f"RATIO bridge start_to_ready pooled/cold = {c / a:.2f} (target <= 0.2)")
    if args.json:
        Path(args.json).write_text(json.dumps({"bridge_ms": a, "stock_ms": b,
                                               "pooled_ms": c, "repetitions": reps},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
