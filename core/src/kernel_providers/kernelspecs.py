"""kernel.json folders: reading, validation and scanning, shared by every provider that
finds kernelspecs (the kernelspec provider, kernelspecs inside environments ...)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .text import one_line

__all__ = ["KernelSpec", "alias_of", "kernel_dirs_stamp", "parse_kernel_spec", "read_kernel_spec",
           "scan_kernel_dirs"]

_VALID_NAME = re.compile(r"^[a-z0-9._-]+$")
_RESOURCE_FILES = ("kernel.js", "kernel.css")


@dataclass(frozen=True)
class KernelSpec:
    """A validated kernel.json and the folder it lives in."""

    name: str
    resource_dir: Path
    argv: list[str]
    display_name: str
    language: str
    env: dict[str, str]
    interrupt_mode: str
    metadata: dict[str, Any]

    @property
    def parameters(self) -> dict[str, Any] | None:
        """The kernel's parameters: ``metadata.parameters`` of kernel.json, a JSON Schema
        object (checked when a launch gives values)."""
        declared = self.metadata.get("parameters")
        return declared if isinstance(declared, dict) else None

    @property
    def resources(self) -> dict[str, str]:
        """Logos, kernel.js and kernel.css shipped in the folder, by Jupyter's names."""
        found = {}
        try:
            entries = sorted(self.resource_dir.iterdir())
        except OSError:
            return {}
        for path in entries:
            if path.name.startswith("logo-"):
                key = "logo-svg" if path.suffix == ".svg" else path.stem
                found[key] = str(path)
            elif path.name in _RESOURCE_FILES:
                found[path.name] = str(path)
        return found


def _expect(spec: dict[str, Any], key: str, kind: type, default: Any, where: object) -> Any:
    value = spec.get(key, default)
    if not isinstance(value, kind):
        raise ValueError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def parse_kernel_spec(text: str, name: str, where: object, resource_dir: Path) -> KernelSpec:
    """Validate the text of a kernel.json (``where`` names it in messages: a path, an
    image label ...); ``ValueError`` says what is wrong."""
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: invalid JSON: {exc}") from None
    except RecursionError:  # json recurses once per level: '[[[[...' a few thousand deep
        raise ValueError(f"{where}: invalid JSON: nested too deeply; a kernel.json is a JSON"
                         " object of a few levels") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: must hold a JSON object")
    argv = _expect(spec, "argv", list, None, where) if "argv" in spec else None
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"{where}: 'argv' must be a non-empty list of strings")
    env = _expect(spec, "env", dict, {}, where)
    if not all(isinstance(v, str) for v in env.values()):
        raise ValueError(f"{where}: every value of 'env' must be a string")
    if any("\0" in text for text in [*argv, *env, *env.values()]):  # no OS takes one
        raise ValueError(f"{where}: 'argv' and 'env' must not hold a NUL character")
    metadata = _expect(spec, "metadata", dict, {}, where)
    if not isinstance(metadata.get("kernel_providers", {}), dict):
        raise ValueError(f"{where}: 'metadata.kernel_providers' must be a JSON object,"
                         ' e.g. {"port_strategy": "allocate"}')
    mode = _expect(spec, "interrupt_mode", str, "signal", where)
    if mode not in ("signal", "message"):
        raise ValueError(f"{where}: 'interrupt_mode' must be 'signal' or 'message'")
    return KernelSpec(
        name=name,
        resource_dir=resource_dir,
        argv=argv,
        display_name=_expect(spec, "display_name", str, name, where),
        language=_expect(spec, "language", str, "", where),
        env=env,
        interrupt_mode=mode,
        metadata=metadata,
    )


def read_kernel_spec(name: str, folder: Path) -> KernelSpec:
    """Read and validate ``folder/kernel.json``; ``ValueError`` says what is wrong."""
    path = folder / "kernel.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:  # a folder, a symlink loop or to nothing, no permission ...
        raise ValueError(f"{path}: cannot read it ({exc.strerror}){_read_hint(path, exc)}"
                         ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at"
                         f" offset {exc.start}): a kernel.json must be UTF-8 JSON") from None
    return parse_kernel_spec(text, name, path, folder)


def _read_hint(path: Path, exc: OSError) -> str:
    """What to do about a kernel.json that cannot be read."""
    if isinstance(exc, PermissionError):
        return "; fix its permissions"
    if isinstance(exc, IsADirectoryError):
        return "; it is a folder: make it the kernel's JSON file, or remove the kernel folder"
    if path.is_symlink():
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        problem = "a symlink loop" if not isinstance(exc, FileNotFoundError) else (
            f"a symlink to {target}, which does not exist")
        return f"; it is {problem}: point it at the kernel's JSON file, or remove it"
    return "; fix or remove it"


def _missing(exc: OSError) -> bool:
    return isinstance(exc, (FileNotFoundError, NotADirectoryError))


def scan_kernel_dirs(directories: Iterable[Path], exclude: Iterable[str] = ()
                     ) -> tuple[dict[str, KernelSpec], list[str]]:
    """Every ``<dir>/<name>/kernel.json``; the first directory holding a name wins.

    Names are lowercased, as Jupyter does. Returns the valid specs by name and one
    problem line per folder that was skipped (bad name, malformed or unreadable
    kernel.json, a folder that cannot be read), with its path and what to do; control
    characters in a problem are escaped. A malformed spec still shadows one of the
    same name further down the path; a folder that cannot be read does not (Jupyter
    does not see it either).
    """
    exclude = list(exclude)
    specs: dict[str, KernelSpec | None] = {}
    problems: list[str] = []
    for directory in directories:
        try:
            folders = sorted(p for p in directory.iterdir() if p.is_dir())
        except OSError as exc:
            if not _missing(exc):  # most of a search path does not exist on a machine
                problems.append(one_line(
                    f"{directory}: cannot list it ({exc.strerror}); fix its permissions;"
                    " the kernelspecs in it are skipped"))
            continue
        except ValueError:  # a NUL in the path (from a config file): no OS takes one
            problems.append(one_line(f"{directory}: the folder name holds a NUL character;"
                                     " fix it in the configuration; skipped"))
            continue
        for folder in folders:
            name = folder.name.lower()
            if name in specs or any(fnmatch.fnmatch(name, pat) for pat in exclude):
                continue
            try:
                (folder / "kernel.json").lstat()  # a symlink to nothing is still a problem
            except OSError as exc:
                if not _missing(exc):  # one unreadable folder, not the whole listing
                    problems.append(one_line(
                        f"{folder}: cannot read it ({exc.strerror}); fix its permissions"
                        " or exclude it; skipped"))
                continue
            if not _VALID_NAME.fullmatch(name):  # match() lets a final newline through
                problems.append(one_line(
                    f"{folder}: kernel name {folder.name!r} is not valid (letters, digits,"
                    " '.', '_' and '-' only); skipped"))
                continue
            try:
                specs[name] = read_kernel_spec(name, folder)
            except ValueError as exc:
                problems.append(one_line(f"{exc}; kernel skipped"))
                specs[name] = None
    return {k: v for k, v in specs.items() if v is not None}, problems


def alias_of(spec: KernelSpec) -> str | None:
    """The kernel id a kernelspec stands for when kernel-providers wrote it for another
    provider's kernel (``kernel-providers jupyter sync`` marks its folders so); such a
    folder is not a kernel of its own."""
    mark = spec.metadata.get("kernel_providers")
    if isinstance(mark, dict) and mark.get("synced") is True and isinstance(mark.get("id"), str):
        return str(mark["id"])
    return None


def kernel_dirs_stamp(directories: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """What changes when a kernelspec is added, removed or edited in ``directories``:
    each folder's mtime and each kernel.json's mtime and size. Much cheaper than reading
    every kernel.json, so a cache can be checked on every listing (as stock Jupyter,
    which rereads the folders each time, sees changes at once). A kernel.json's time is
    its ctime where that is later: a chmod changes it, and not the mtime."""
    stamp: list[tuple[str, int, int]] = []
    for directory in directories:
        try:
            with os.scandir(directory) as entries:
                folders = sorted(e.path for e in entries if e.is_dir())
            stamp.append((str(directory), os.stat(directory).st_mtime_ns, 0))
        except OSError:
            continue
        for folder in folders:
            try:
                info = os.stat(os.path.join(folder, "kernel.json"))
            except OSError:
                continue
            stamp.append((folder, max(info.st_mtime_ns, info.st_ctime_ns), info.st_size))
    return tuple(stamp)
