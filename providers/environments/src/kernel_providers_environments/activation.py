"""Starting a kernel inside an environment as its tool's activation would: the variables
that ``conda activate`` / ``source bin/activate`` / ``pixi shell`` set, and the activation
scripts (conda's ``activate.d``; pixi's, from the manifest).

Values never reach a shell string: the runner script is constant and gets the scripts
and the kernel's argv as positional arguments; the prefix travels in ``CONDA_PREFIX``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .environments import Environment, Location

__all__ = ["activate", "activation_inputs", "conda_activation", "pixi_activation",
           "venv_activation"]

Activation = tuple[list[str], dict[str, str | None]]

# Sources every activate.d script (conda runs them in the user's shell, so bash is
# preferred where present), then the N scripts given first (pixi's, from the manifest),
# then becomes the kernel: the kernel keeps the pid.
_RUNNER = ('for script in "$CONDA_PREFIX"/etc/conda/activate.d/*.sh; do'
           ' [ -f "$script" ] && . "$script"; done;'
           ' n=$1; shift; while [ "$n" -gt 0 ]; do script=$1; shift; n=$((n - 1));'
           ' [ -f "$script" ] && . "$script"; done; exec "$@"')


def _bin_dirs(prefix: Path) -> list[str]:
    if sys.platform == "win32":
        return [str(prefix), str(prefix / "Library" / "bin"), str(prefix / "Scripts")]
    return [str(prefix / "bin")]


def _runner(scripts: list[str]) -> list[str]:
    if sys.platform == "win32":  # activation .bat scripts are not run on Windows
        return []
    shell = shutil.which("bash") or "/bin/sh"
    return [shell, "-c", _RUNNER, "kernel-providers-activate", str(len(scripts)), *scripts]


def conda_activation(prefix: Path, name: str) -> Activation:
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
    return _runner([]), env


def venv_activation(prefix: Path, is_venv: bool = True) -> dict[str, str | None]:
    """The environment that ``bin/activate`` of a virtualenv sets: PATH and VIRTUAL_ENV
    (another one's for a plain interpreter: it goes), and no PYTHONHOME."""
    return {"PATH": os.pathsep.join([*_bin_dirs(prefix), "${PATH}"]),
            "VIRTUAL_ENV": str(prefix) if is_venv else None, "PYTHONHOME": None}


def pixi_activation(prefix: Path, project: Path, env_name: str) -> Activation:
    """What ``pixi shell -e ENV`` sets: conda's variables, PIXI_* for the project and
    environment, the manifest's ``[activation] env`` (its own and its features'), then
    conda's activate.d scripts and the manifest's activation scripts."""
    from .pixi import PixiManifest

    manifest = PixiManifest.read(project)
    scripts, variables = manifest.activation(env_name)
    label = manifest.name if env_name == "default" else f"{manifest.name}:{env_name}"
    _, env = conda_activation(prefix, label)
    env.update({
        "PIXI_PROJECT_ROOT": str(project), "PIXI_PROJECT_NAME": manifest.name,
        "PIXI_PROJECT_MANIFEST": str(manifest.path), "PIXI_ENVIRONMENT_NAME": env_name,
        "PIXI_PROJECT_VERSION": manifest.version, "PIXI_PROMPT": f"({label}) ",
        "CONDA_PROMPT_MODIFIER": None, "CONDA_SHLVL": None,
    })
    env.update(variables)
    return _runner([str(project / s) for s in scripts]), env


def activate(location: Location, env: Environment) -> Activation:
    """(argv prefix, environment) that start a command activated in ``location``."""
    prefix = location.prefix
    if location.activation == "conda":
        runner, variables = conda_activation(
            prefix, location.name if location.named else str(prefix))
        variables.update(env.env_vars)  # `conda env config vars`
        return runner, variables
    if location.activation == "pixi" and location.project is not None:
        return pixi_activation(prefix, location.project, location.pixi_env or "default")
    return [], venv_activation(prefix, is_venv=location.activation == "venv")


def activation_inputs(location: Location) -> list[Path]:
    """The files an activation reads besides the environment's own (a start plan made
    from it is valid while they keep their mtimes)."""
    inputs: list[Path] = []
    if location.activation == "conda":
        inputs.append(location.prefix / "conda-meta" / "state")
    if location.activation == "pixi" and location.project is not None:
        from .pixi import manifest_path

        inputs.append(manifest_path(location.project))
    return inputs
