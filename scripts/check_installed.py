"""Guard: every local distribution is installed editable from this checkout, so no copy
from a package index sneaked in (a resolver could otherwise pick a published one)."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = {
    "kernel-providers": ROOT,
    "kernel-providers-core": ROOT / "core",
    "kernel-providers-kernelspec": ROOT / "providers" / "kernelspec",
    "kernel-providers-environments": ROOT / "providers" / "environments",
    "kernel-providers-docker": ROOT / "providers" / "docker",
    "kernel-providers-ssh": ROOT / "providers" / "ssh",
    "kernel-providers-jupyter": ROOT / "bridges" / "jupyter",
    "kernel-providers-example": ROOT / "docs" / "example-provider",
}


def main() -> int:
    bad = []
    for name, folder in LOCAL.items():
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            bad.append(f"{name} is not installed")
            continue
        direct = dist.read_text("direct_url.json")
        info = json.loads(direct) if direct else {}
        editable = info.get("dir_info", {}).get("editable", False)
        url = info.get("url", "")
        if not editable or Path(url.removeprefix("file://")).resolve() != folder.resolve():
            got = url or "a copy from an index"
            bad.append(f"{name} is not an editable install of {folder} (got {got})")
    for line in bad:
        print(f"check_installed: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
