"""Entry points of one group, read straight from the installed distributions' folders.

``importlib.metadata.entry_points()`` builds a metadata object for every installed
distribution and costs tens of milliseconds per process (more than the rest of a
``kernel-providers list`` or a kernelspec shim's start); plugins of one group are found
here by opening only the ``entry_points.txt`` files. The rules are importlib.metadata's:
``sys.path`` order, the first distribution of a (normalised) name wins.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["EntryPoint", "entry_points"]

_NORMALIZE = re.compile(r"[-_.]+")


@dataclass(frozen=True)
class EntryPoint:
    """One ``name = module:attribute`` of a group, and the distribution declaring it."""

    name: str
    value: str
    distribution: str | None
    version: str | None

    def load(self) -> Any:
        """Import the module and return the attribute (or the module itself)."""
        module, _, attribute = self.value.partition(":")
        target: Any = importlib.import_module(module.strip())
        for part in attribute.strip().split(".") if attribute.strip() else ():
            target = getattr(target, part)
        return target


def _section(text: str, group: str) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            inside = line[1:-1].strip() == group
        elif inside and "=" in line:
            name, _, value = line.partition("=")
            items.append((name.strip(), value.split("[")[0].strip()))  # drop extras
    return items


def _name_and_version(folder: str) -> tuple[str | None, str | None]:
    # The Name/Version headers (the folder name is normalised and may lack a version).
    for metadata in ("METADATA", "PKG-INFO"):
        found: dict[str, str] = {}
        try:
            with open(os.path.join(folder, metadata), encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        break
                    key, _, value = line.partition(":")
                    if key in ("Name", "Version") and key not in found:
                        found[key] = value.strip()
        except OSError:
            continue
        return found.get("Name"), found.get("Version")
    return None, None


def entry_points(group: str, path: list[str]) -> list[EntryPoint]:
    """Every entry point of ``group`` in the distributions found on ``path``."""
    seen: set[str] = set()
    found: list[EntryPoint] = []
    for entry in path:
        try:
            with os.scandir(entry or ".") as listing:
                names = [e.name for e in listing]
        except OSError:  # missing folders, zip files
            continue
        for name in names:
            stem, dot, kind = name.rpartition(".")
            if not dot or kind not in ("dist-info", "egg-info"):
                continue
            key = _NORMALIZE.sub("-", stem.split("-")[0]).lower()
            if key in seen:
                continue
            seen.add(key)
            folder = os.path.join(entry or ".", name)
            try:
                with open(os.path.join(folder, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            if f"[{group}]" not in text:
                continue
            distribution, version = _name_and_version(folder)
            found += [EntryPoint(n, v, distribution, version) for n, v in _section(text, group)]
    return found
