"""A benchmark that cannot run says so loudly (`SKIPPED: <bench>: <reason>`, which
run_all.sh repeats at the end); in CI (``CI`` set), where everything must run, that is a
failure."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def skipped(reason: str) -> int:
    """Report that the calling benchmark could not run; the exit status to return."""
    bench = Path(sys.argv[0]).name
    print(f"SKIPPED: {bench}: {reason}", flush=True)
    if os.environ.get("CI"):
        print(f"error: {bench} must run in CI (.ci/run provides what it needs)",
              file=sys.stderr)
        return 1
    return 0
