"""Real virtualenvs for tests: a real interpreter whose ``sys.prefix`` is the
environment, with ipykernel really installed from its wheel."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

__all__ = ["ipykernel_wheel", "make_venv", "site_packages"]


def site_packages(prefix: Path) -> Path:
    """The site-packages folder of a virtualenv made with this interpreter."""
    return prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def ipykernel_wheel(folder: Path) -> Path:
    """The wheel of the installed ipykernel version in ``folder`` (downloaded from the
    package index, or pip's cache, when it is not there yet)."""
    from importlib.metadata import version

    pattern = f"ipykernel-{version('ipykernel')}-*.whl"
    found = sorted(folder.glob(pattern))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", f"ipykernel=={version('ipykernel')}",
                        "-d", str(folder)], check=True)
        found = sorted(folder.glob(pattern))
    return found[0]


def make_venv(prefix: Path, wheel: Path | None) -> Path:
    """A real virtualenv at ``prefix``; ipykernel installed into its own site-packages
    when ``wheel`` is given. Its dependencies come from the environment running the
    tests: a ``.pth`` file puts that one's site-packages after the venv's own, whatever
    the base interpreter has installed."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    (site_packages(prefix) / "kp-test-outer.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    if wheel is not None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-index", "--disable-pip-version-check", "--target",
                        str(site_packages(prefix)), str(wheel)], check=True)
    return prefix
