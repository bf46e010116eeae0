"""``kernel-providers jupyter enable|disable|status``: switch the bridge on in Jupyter's
config dir, for jupyter_server (JupyterLab, Notebook) and nbconvert."""

from __future__ import annotations

import argparse
import json
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


async def _jupyter(args: argparse.Namespace) -> int:
    # Other settings in these files are kept: only our one key per file changes.
    for path, section, key, value in config_files():
        data = _read(path)
        current = data.get(section, {}).get(key)
        if args.action == "enable":
            data.setdefault(section, {})[key] = value
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2) + "\n")
            print(f"{path}: {section}.{key} = {value}")
        elif args.action == "disable":
            if current == value:
                del data[section][key]
                if not data[section]:
                    del data[section]
                path.write_text(json.dumps(data, indent=2) + "\n")
                print(f"{path}: removed {section}.{key}")
        else:
            state = "enabled" if current == value else "disabled"
            print(f"{state}: {section}.{key} in {path}")
    return 0


@hookimpl
def register_cli_commands(subparsers: Any) -> None:
    """Add ``kernel-providers jupyter enable|disable|status``."""
    parser = subparsers.add_parser("jupyter", help="switch the Jupyter bridge on or off")
    parser.add_argument("action", choices=["enable", "disable", "status"])
    parser.set_defaults(handler=_jupyter)
