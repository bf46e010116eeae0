"""A second Jupyter client that streams output through a kernel, for tests and
benchmarks of what that costs the managing process (issue 18):

    python -m kernel_providers.testing.streaming_client CONNECTION_FILE CELLS BYTES

A real jupyter_client in its own process (so that only the manager is measured): it
prints ``ready`` once connected, runs CELLS cells that each print BYTES characters, and
prints the kernel's RSS (KiB) before and after as JSON: ``{"kernel_rss_kib": [a, b]}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

RSS = "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')))"


def main(argv: list[str]) -> int:
    """Stream; see the module's docstring."""
    from jupyter_client.blocking.client import BlockingKernelClient

    info_file, cells, size = argv[0], int(argv[1]), int(argv[2])
    client = BlockingKernelClient()
    client.load_connection_file(info_file)
    client.start_channels()
    client.wait_for_ready(60)
    print("ready", flush=True)

    def run(code: str, keep: bool = False) -> str:
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if keep:
                out.append(msg["content"].get("text", ""))

        reply = client.execute_interactive(code, timeout=120, output_hook=hook)
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out)

    # IPython 9 keeps every cell's stream output in its history (for %notebook): cleared,
    # so that the kernel's growth shows what its send queues hold.
    cell = (f"print('x' * {size});"
            " getattr(get_ipython().history_manager, 'outputs', {}).clear()")
    before = int(run(RSS, keep=True))
    for _ in range(cells):
        run(cell)
    after = int(run(RSS, keep=True))
    client.stop_channels()
    print(json.dumps({"kernel_rss_kib": [before, after]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
