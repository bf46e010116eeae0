"""``kernel-providers jupyter sync``: one ordinary kernelspec folder per provider kernel,
so every Jupyter client (console, ``jupyter execute``, papermill, VS Code ...) can pick it.

Folders are written into a Jupyter data dir's ``kernels/`` and marked as ours; a later
sync updates them and removes the ones whose kernel type is gone. A folder we did not
write is never touched, and the folders of a provider whose discovery failed this time
are kept (an engine that is down for a minute does not delete kernelspecs).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from kernel_providers import KernelType, ProviderReport

from .kernelspec_files import jupyter_name, remove_kernelspec, synced_id, write_kernelspec

__all__ = ["SyncResult", "kernels_dir", "sync_kernelspecs", "unsync_kernelspecs"]


def kernels_dir(scope: str = "user", prefix: str | None = None) -> Path:
    """The ``kernels`` folder of a Jupyter data dir: ``user`` (JUPYTER_DATA_DIR honoured),
    ``sys-prefix`` (this environment) or ``prefix`` (``<prefix>/share/jupyter``)."""
    if scope == "prefix":
        if not prefix:
            raise ValueError("the prefix scope needs a folder")
        return Path(prefix).expanduser().resolve() / "share" / "jupyter" / "kernels"
    if scope == "sys-prefix":
        return Path(sys.prefix) / "share" / "jupyter" / "kernels"
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "kernels"


@dataclass
class SyncResult:
    """What a sync did (or, with ``dry_run``, would do), one line per folder."""

    written: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether any folder was written, updated or removed."""
        return bool(self.written or self.updated or self.removed)


def _ours(target: Path) -> dict[str, tuple[Path, str]]:
    """Folders in ``target`` we wrote: name -> (folder, kernel id)."""
    found: dict[str, tuple[Path, str]] = {}
    try:
        folders = sorted(p for p in target.iterdir() if p.is_dir())
    except OSError:
        return found
    for folder in folders:
        kernel_id = synced_id(folder)
        if kernel_id is not None:
            found[folder.name] = (folder, kernel_id)
    return found


def sync_kernelspecs(kernels: list[KernelType], reports: list[ProviderReport],
                     target: Path, providers: set[str] | None = None,
                     dry_run: bool = False) -> SyncResult:
    """Bring ``target`` in line with ``kernels`` (every provider but ``spec``, or those
    in ``providers``). ``reports`` tell which providers answered: folders of a provider
    that failed are kept."""
    result = SyncResult()
    failed = {r.id for r in reports if r.status != "ok"}
    wanted: dict[str, KernelType] = {}
    for kernel in kernels:
        if kernel.provider == "spec" or (providers and kernel.provider not in providers):
            continue
        name = jupyter_name(kernel.id)
        if name in wanted:
            result.skipped.append(f"{name}: {kernel.id} and {wanted[name].id} share this"
                                  f" Jupyter name; {kernel.id} left out")
            continue
        wanted[name] = kernel
    ours = _ours(target)
    for name, kernel in sorted(wanted.items()):
        folder = target / name
        if folder.exists() and name not in ours:
            result.skipped.append(f"{folder}: exists and was not written by kernel-providers;"
                                  f" left alone ({kernel.id} not synced)")
            continue
        line = f"{folder} ({kernel.id})"
        if not write_kernelspec(folder, kernel, dry_run=dry_run):
            result.unchanged.append(line)
        else:
            (result.updated if name in ours else result.written).append(line)
    for name, (folder, kernel_id) in sorted(ours.items()):
        provider = kernel_id.partition("/")[0]
        if name in wanted or provider in failed or (providers and provider not in providers):
            continue
        if not dry_run:
            remove_kernelspec(folder)
        result.removed.append(f"{folder} ({kernel_id}: no longer offered)")
    return result


def unsync_kernelspecs(target: Path, dry_run: bool = False) -> list[str]:
    """Remove every folder of ours from ``target``; one line per folder."""
    removed = []
    for _, (folder, kernel_id) in sorted(_ours(target).items()):
        if not dry_run:
            remove_kernelspec(folder)
        removed.append(f"{folder} ({kernel_id})")
    return removed
