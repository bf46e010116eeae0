"""The nanny on its own (no cluster needed: it is a stdlib script a job runs): its lease
holds while the lease file keeps changing, whatever clock set its mtime, and ends the
kernel once it stops changing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import kernel_providers_slurm

NANNY = Path(kernel_providers_slurm.__file__).parent / "nanny.py"


def test_a_lease_renewed_by_a_skewed_clock_holds_then_ends(tmp_path: Path) -> None:
    """The renewer's clock is an hour behind the node's (a file server's mtimes, or a
    wall clock that jumped): the lease holds while it is renewed, and the kernel ends
    about ``lease_seconds`` after renewals stop, saying why."""
    job = tmp_path / "job"
    job.mkdir()
    (job / "request.json").write_text(json.dumps({
        "kernel": [sys.executable, "-c", "import time; time.sleep(60)"], "key": "k",
        "lease_seconds": 1}))
    lease = job / "lease"
    lease.write_text("")
    nanny = subprocess.Popen([sys.executable, "-u", str(NANNY), str(job)],
                             stderr=subprocess.PIPE, text=True)
    try:
        behind = time.time() - 3600
        renewed_until = time.monotonic() + 4  # four lease lengths
        while time.monotonic() < renewed_until:
            behind += 0.3
            os.utime(lease, (behind, behind))
            last_renewal = time.monotonic()
            time.sleep(0.3)
            assert nanny.poll() is None, "the nanny ended a kernel whose lease was renewed"
        assert nanny.wait(15) != 0  # the kernel was ended: not its own exit
        assert 0.9 < time.monotonic() - last_renewal < 6
        assert nanny.stderr is not None
        said = nanny.stderr.read()
        assert "the launcher's lease ended (not renewed for" in said, said
        ended = json.loads((job / "exit.json").read_text())
        assert ended["status"] == -15 and not ended["terminated"]
    finally:
        if nanny.poll() is None:
            nanny.kill()
            nanny.wait()
        if nanny.stderr is not None:
            nanny.stderr.close()
