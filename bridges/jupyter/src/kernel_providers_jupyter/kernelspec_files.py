"""Kernelspec folders for provider kernels: what ``kernel-providers jupyter sync`` writes
for every Jupyter client, and what the KernelSpecManager serves logos from.

A folder holds a ``kernel.json`` whose argv runs the shim and whose metadata names our
provisioner, and real copies of the kernel's logos and ``kernel.js`` (jupyter_server
refuses symlinks that leave the folder). The mark ``metadata.kernel_providers.synced``
tells our folders from everyone else's: only marked folders are ever changed or removed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from kernel_providers import KernelType

__all__ = ["PROVISIONER", "SHIM_MODULE", "jupyter_name", "kernelspec_dict", "synced_id",
           "write_kernelspec"]

PROVISIONER = "kernel-providers-provisioner"
SHIM_MODULE = "kernel_providers_jupyter.shim"
_INVALID = re.compile(r"[^a-z0-9._-]+")
_RESOURCE = re.compile(r"^(logo-.*|kernel\.js|kernel\.css)$")


def jupyter_name(kernel_id: str) -> str:
    """A Jupyter kernel name for a kernel id: ``spec/<name>`` keeps ``<name>`` (notebooks
    keep their kernel); others become ``<provider>-<name>`` in Jupyter's alphabet, with
    a short hash of the id when characters had to be replaced (so it stays unique). The
    same id gives the same name on every machine."""
    provider, _, name = kernel_id.partition("/")
    if provider == "spec":
        return name
    plain = f"{provider}-{name}".lower()
    cleaned = _INVALID.sub("-", plain).strip("-")
    if cleaned == plain.replace("/", "-"):
        return cleaned
    return f"{cleaned}-{hashlib.sha256(kernel_id.encode()).hexdigest()[:6]}"


def kernelspec_dict(kernel: KernelType, python: str | None = None) -> dict[str, Any]:
    """The kernel.json of a provider kernel: the shim as argv (run by clients that start
    a kernelspec's argv themselves), our provisioner for jupyter_server and nbclient."""
    metadata = {k: v for k, v in kernel.metadata.items() if k != "resource_dir"}
    metadata["kernel_providers"] = {"id": kernel.id, "provider": kernel.provider,
                                    "synced": True}
    metadata["kernel_provisioner"] = {"provisioner_name": PROVISIONER,
                                      "config": {"kernel_providers_id": kernel.id}}
    return {
        "argv": [python or sys.executable, "-m", SHIM_MODULE, kernel.id,
                 "-f", "{connection_file}"],
        "display_name": kernel.display_name,
        "language": kernel.language,
        "interrupt_mode": kernel.interrupt_mode,
        # The provider sets the kernel's environment where the kernel runs (a venv's
        # activation, a container's variables): nothing here would reach it correctly.
        "env": {},
        "metadata": metadata,
    }


def synced_id(folder: Path) -> str | None:
    """The kernel id a folder was written for, if we wrote it (else ``None``)."""
    try:
        spec = json.loads((folder / "kernel.json").read_text(encoding="utf-8"))
        mark = spec["metadata"]["kernel_providers"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(mark, dict) and mark.get("synced") is True and isinstance(mark.get("id"), str):
        return str(mark["id"])
    return None


def _language_logos(language: str) -> dict[str, str]:
    # A Python kernel without logos of its own (a container, a remote host) shows
    # ipykernel's, when ipykernel is installed here; found without importing it.
    if language.lower() != "python":
        return {}
    found = importlib.util.find_spec("ipykernel")
    if found is None or not found.origin:
        return {}
    folder = Path(found.origin).parent / "resources"
    return {p.stem if p.suffix != ".svg" else "logo-svg": str(p)
            for p in folder.glob("logo-*") if p.is_file()}


def _resource_files(kernel: KernelType) -> dict[str, Path]:
    """Target file name -> local source file, for the kernel's logos and kernel.js."""
    resources = kernel.resources or _language_logos(kernel.language)
    files: dict[str, Path] = {}
    for key, value in resources.items():
        source = Path(value)
        if "://" in value or not source.is_file():
            continue  # URLs and missing files: nothing to copy
        target = f"{key}{source.suffix}" if key.startswith("logo") and key != "logo-svg" \
            else ("logo-svg.svg" if key == "logo-svg" else key)
        if _RESOURCE.match(target):
            files[target] = source
    return files


def _same(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def write_kernelspec(folder: Path, kernel: KernelType, python: str | None = None,
                     dry_run: bool = False) -> bool:
    """Write (or bring up to date) the kernelspec folder of ``kernel``; returns whether
    anything changed (with ``dry_run``: would change, writing nothing). Only a folder we
    wrote (or a new one) is touched: the caller checks :func:`synced_id` first."""
    changed = False
    wanted = {"kernel.json": (json.dumps(kernelspec_dict(kernel, python), indent=1,
                                         sort_keys=True) + "\n").encode()}
    for name, source in _resource_files(kernel).items():
        try:
            wanted[name] = source.read_bytes()
        except OSError:
            continue
    stale = [p for p in (folder.iterdir() if folder.is_dir() else ())
             if p.name not in wanted and _RESOURCE.match(p.name)]
    if dry_run:
        return bool(stale) or not all(_same(folder / n, d) for n, d in wanted.items())
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in wanted.items():
        target = folder / name
        if not _same(target, data):
            temporary = folder / f".{name}.tmp-{os.getpid()}"
            temporary.write_bytes(data)
            os.replace(temporary, target)  # readers never see half a file
            changed = True
    for path in stale:  # resources the kernel no longer has
        path.unlink()
        changed = True
    return changed


def remove_kernelspec(folder: Path) -> None:
    """Remove a folder we wrote."""
    shutil.rmtree(folder, ignore_errors=True)
