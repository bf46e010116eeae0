"""Start-to-ready of a kernelspec kernel in jupyter_server's kernel manager: through the
bridge (KernelProvidersKernelSpecManager + our provisioner) vs the stock
KernelSpecManager + LocalProvisioner, interleaved in one run. Target (issue 6): <= 1.05.

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
    start = time.perf_counter()
    kernel_id = await manager.start_kernel(kernel_name=name)
    client = manager.get_kernel(kernel_id).client()
    client.start_channels()
    await client.wait_for_ready(timeout=120)
    elapsed = time.perf_counter() - start
    client.stop_channels()
    await manager.shutdown_kernel(kernel_id, now=False)
    return elapsed


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
    a, b = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
    print(f"start-to-ready in jupyter_server's kernel manager, median of {reps}, interleaved:")
    print(f"  through the bridge:                         {a:.0f} ms")
    print(f"  stock KernelSpecManager + LocalProvisioner: {b:.0f} ms")
    print(f"RATIO bridge start_to_ready ours/stock = {a / b:.2f} (target <= 1.05)")
    if args.json:
        Path(args.json).write_text(json.dumps({"bridge_ms": a, "stock_ms": b,
                                               "repetitions": reps}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
