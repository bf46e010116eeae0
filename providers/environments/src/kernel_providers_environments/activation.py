"""Starting a kernel inside an environment as its activation would: the variables that
``conda activate`` / ``source bin/activate`` set, and conda's ``activate.d`` scripts.

Values never reach a shell string: the runner script is constant and gets the kernel's
argv as positional arguments; the prefix travels in ``CONDA_PREFIX``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["conda_activation", "venv_activation"]

# Sources every activate.d script (conda runs them in the user's shell, so bash is
# preferred where present), then becomes the kernel: the kernel keeps the pid.
_RUNNER = ('for script in "$CONDA_PREFIX"/etc/conda/activate.d/*.sh; do'
           ' [ -f "$script" ] && . "$script"; done; exec "$@"')


def _bin_dirs(prefix: Path) -> list[str]:
    if sys.platform == "win32":
        return [str(prefix), str(prefix / "Library" / "bin"), str(prefix / "Scripts")]
    return [str(prefix / "bin")]


def conda_activation(prefix: Path, name: str) -> tuple[list[str], dict[str, str | None]]:
    """(argv prefix, environment) that run a command activated in a conda environment.
    A virtualenv active around the manager is not the kernel's: its variables go."""
    env: dict[str, str | None] = {
        "VIRTUAL_ENV": None,
        "PYTHONHOME": None,
        "CONDA_PREFIX": str(prefix),
        "CONDA_DEFAULT_ENV": name,
        "CONDA_SHLVL": "1",
        "CONDA_PROMPT_MODIFIER": f"({name}) ",
        "PATH": os.pathsep.join([*_bin_dirs(prefix), "${PATH}"]),
    }
    if sys.platform == "win32":  # activate.d .bat scripts are not run on Windows
        return [], env
    shell = shutil.which("bash") or "/bin/sh"
    return [shell, "-c", _RUNNER, "kernel-providers-activate"], env


def venv_activation(prefix: Path, is_venv: bool = True) -> dict[str, str | None]:
    """The environment that ``bin/activate`` of a virtualenv sets: PATH and VIRTUAL_ENV
    (another one's for a pyenv version: it goes), and no PYTHONHOME."""
    return {"PATH": os.pathsep.join([*_bin_dirs(prefix), "${PATH}"]),
            "VIRTUAL_ENV": str(prefix) if is_venv else None, "PYTHONHOME": None}
