"""``kernel-providers jupyter enable|disable|status|sync``: switch the bridge on in
Jupyter's config dir (jupyter_server, nbconvert) and write kernelspecs for every other
Jupyter client."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from kernel_providers import hookimpl

__all__ = ["SETTINGS", "config_files"]

# (file in Jupyter's config dir, section, key, value)
SETTINGS: list[tuple[str, str, str, str]] = [
    ("jupyter_server_config.json", "ServerApp", "kernel_spec_manager_class",
     "kernel_providers_jupyter.kernelspecs.KernelProvidersKernelSpecManager"),
    ("jupyter_nbconvert_config.json", "ExecutePreprocessor", "kernel_manager_class",
     "kernel_providers_jupyter.manager.KernelProvidersKernelManager"),
]


def config_files() -> list[tuple[Path, str, str, str]]:
    """The settings ``enable`` writes, with their files in Jupyter's config dir
    (JUPYTER_CONFIG_DIR honoured)."""
    from jupyter_core.paths import jupyter_config_dir

    root = Path(jupyter_config_dir())
    return [(root / name, section, key, value) for name, section, key, value in SETTINGS]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise SystemExit(f"error: {path} is not valid JSON ({exc}); fix it first") from None
    return data if isinstance(data, dict) else {}


def _configure(action: str) -> None:
    # Other settings in these files are kept: only our one key per file changes.
    for path, section, key, value in config_files():
        data = _read(path)
        current = data.get(section, {}).get(key)
        if action == "enable":
            data.setdefault(section, {})[key] = value
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2) + "\n")
            print(f"{path}: {section}.{key} = {value}")
        elif action == "disable":
            if current == value:
                del data[section][key]
                if not data[section]:
                    del data[section]
                path.write_text(json.dumps(data, indent=2) + "\n")
                print(f"{path}: removed {section}.{key}")
        else:
            state = "enabled" if current == value else "disabled"
            print(f"{state}: {section}.{key} in {path}")


def _target(args: argparse.Namespace) -> Path:
    from .sync import kernels_dir

    return kernels_dir("prefix", args.prefix) if args.prefix else kernels_dir(args.scope)


async def _sync_once(args: argparse.Namespace, quiet_unchanged: bool = False) -> int:
    from kernel_providers import KernelFinder

    from .sync import sync_kernelspecs

    # The command's own finder, except when watching: each round reads the config again.
    finder = (None if quiet_unchanged else getattr(args, "finder", None)) or KernelFinder()
    providers = set(args.provider or ())
    for provider in providers:
        if provider not in finder.providers:
            print(f"error: no provider {provider!r} is installed; see"
                  " `kernel-providers providers`", file=sys.stderr)
            return 2
    kernels = await finder.find_kernels(refresh=True)
    for report in finder.reports:
        if report.status == "error" and (not providers or report.id in providers):
            print(f"warning: provider {report.id!r} failed ({report.message}); its"
                  " kernelspecs are kept as they are", file=sys.stderr)
    target = _target(args)
    result = sync_kernelspecs(kernels, finder.reports, target, providers or None,
                              dry_run=args.dry_run)
    verb = "would " if args.dry_run else ""
    for label, lines in (("write", result.written), ("update", result.updated),
                         ("remove", result.removed)):
        for line in lines:
            print(f"{verb}{label}: {line}")
    for line in result.skipped:
        print(f"warning: {line}", file=sys.stderr)
    if not quiet_unchanged:
        print(f"{len(result.unchanged)} unchanged in {target}")
    return 0


async def _sync(args: argparse.Namespace) -> int:
    if args.watch is None:
        return await _sync_once(args)
    if args.watch <= 0:
        print("error: --watch needs a number of seconds above 0", file=sys.stderr)
        return 2
    print(f"syncing every {args.watch:g} s (Ctrl-C to stop)", flush=True)
    status = await _sync_once(args)
    while status == 0:  # a re-sync is cheap: providers validate their caches by mtimes
        await asyncio.sleep(args.watch)
        status = await _sync_once(args, quiet_unchanged=True)
    return status


async def _jupyter(args: argparse.Namespace) -> int:
    if args.action == "sync":
        return await _sync(args)
    _configure(args.action)
    if args.action == "enable":
        return await _sync_once(args)
    if args.action == "disable":
        from .sync import unsync_kernelspecs

        for line in unsync_kernelspecs(_target(args)):
            print(f"removed: {line}")
    return 0


@hookimpl
def register_cli_commands(subparsers: Any) -> None:
    """Add ``kernel-providers jupyter enable|disable|status|sync``."""
    parser = subparsers.add_parser(
        "jupyter", help="use every provider's kernels from Jupyter clients",
        description="enable: switch the bridge on for jupyter_server and nbconvert, and"
        " sync; disable: switch it off and remove the synced kernelspecs; sync: write one"
        " kernelspec per provider kernel (not spec/ ones) for every other Jupyter client"
        " and remove those whose kernel is gone.")
    parser.add_argument("action", choices=["enable", "disable", "status", "sync"])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", dest="scope", action="store_const", const="user",
                       help="Jupyter's per-user data dir (the default)")
    where.add_argument("--sys-prefix", dest="scope", action="store_const",
                       const="sys-prefix", help="this environment's share/jupyter")
    where.add_argument("--prefix", metavar="P",
                       help="P/share/jupyter (e.g. another environment)")
    parser.add_argument("--provider", action="append", metavar="ID",
                        help="sync only this provider's kernels (repeatable)")
    parser.add_argument("--dry-run", action="store_true",
                        help="show what sync would write and remove; change nothing")
    parser.add_argument("--watch", nargs="?", type=float, const=10.0, metavar="SECONDS",
                        help="sync again every SECONDS (default 10) until stopped")
    parser.set_defaults(handler=_jupyter, scope="user")

