"""Issue 18 through the bridge: a kernel jupyter_client's AsyncKernelManager started with
the bridge's kernelspecs, and another client streaming output through it, cost the
managing process (a Jupyter server) and the kernel nothing."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from kernel_providers_jupyter import KernelProvidersKernelSpecManager

CELLS, CELL_BYTES = 300, 1_000_000
MAX_GROWTH_MIB = 20



def rss_mib() -> float:
    """This process's resident set size (psutil may not be installed)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def second_client(info_file: Path, cells: int) -> list[int]:
    """Run the streaming client to its end (this process's loop runs meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kernel_providers.testing.streaming_client", str(info_file),
        str(cells), str(CELL_BYTES),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-2000:]
    report: list[int] = json.loads(out.decode().splitlines()[-1])["kernel_rss_kib"]
    return report


def test_a_streaming_second_client_costs_the_bridge_nothing(jupyter_env: Path,
                                                            tmp_path: Path) -> None:
    from jupyter_client.manager import AsyncKernelManager

    async def scenario() -> None:
        km = AsyncKernelManager(kernel_name="kp-bridge-only",
                                kernel_spec_manager=KernelProvidersKernelSpecManager())
        await km.start_kernel()
        try:
            assert type(km.provisioner).__name__ == "KernelProvidersProvisioner"
            info: dict[str, Any] = dict(km.get_connection_info(session=False))
            info["key"] = info["key"].decode()
            info_file = tmp_path / "second-client.json"
            info_file.write_text(json.dumps(info))
            await second_client(info_file, 5)  # warm-up: subprocesses, first big buffers
            await asyncio.sleep(0.2)
            before = rss_mib()
            kernel_before, kernel_after = await second_client(info_file, CELLS)
            await asyncio.sleep(0.2)
            manager, kernel = rss_mib() - before, (kernel_after - kernel_before) / 1024
            print(f"manager +{manager:.1f} MiB, kernel +{kernel:.1f} MiB")
            assert manager < MAX_GROWTH_MIB, f"the manager grew by {manager:.0f} MiB"
            assert kernel < MAX_GROWTH_MIB, f"the kernel grew by {kernel:.0f} MiB"
        finally:
            await km.shutdown_kernel()

    asyncio.run(scenario())
