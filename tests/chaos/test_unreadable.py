"""Chaos: an unreadable folder, a kernel.json that is not a readable file, and names with
control characters each spoil one entry, never a listing. The entry is reported alone
(its path, what is wrong, what to do) and every other kernel still lists.

Listings run through the installed `kernel-providers` command. Mode 000 must mean
something to it, so as root it runs as `nobody`, or, where `nobody` cannot run this
interpreter (e.g. it lives under a 0700 /root), as root without the capabilities that
read anything (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: dropped by setpriv).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, KernelFinder
from kernel_providers.testing import unavailable, write_kernelspec

#: providers not under test (entry-point names): no Docker or SSH here
OTHERS = "docker,ssh,slurm,example"
SCRIPT = Path(sys.executable).with_name("kernel-providers")
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"


# --- running the command as a user whom mode 000 denies ----------------------------------


@dataclass
class Runner:
    """How to run a command so that it cannot read a mode 000 folder."""

    prefix: list[str] = field(default_factory=list)  # argv prefix (setpriv ...)
    options: dict[str, Any] = field(default_factory=dict)  # subprocess user=, group= ...
    owner: tuple[int, int] | None = None  # (uid, gid) to give the test's folders


_PROBE = ("import os, sys, kernel_providers_kernelspec, kernel_providers_environments\n"
          "try:\n    os.listdir(sys.argv[1])\nexcept PermissionError:\n    print('denied')\n")


def _denied(runner: Runner) -> bool:
    """Whether ``runner`` runs this interpreter and mode 000 stops it."""
    folder = Path(tempfile.mkdtemp(prefix="kp-probe-"))
    folder.chmod(0o755)
    (folder / "locked").mkdir(mode=0)
    try:
        result = subprocess.run([*runner.prefix, sys.executable, "-c", _PROBE,
                                 str(folder / "locked")], capture_output=True, text=True,
                                cwd=folder, timeout=60, check=False, **runner.options)
    except OSError:  # e.g. nobody may not execute the interpreter
        return False
    finally:
        (folder / "locked").chmod(0o755)
        shutil.rmtree(folder)
    return result.stdout.strip() == "denied"


@pytest.fixture(scope="session")
def runner() -> Runner:
    """A way to run the command to which mode 000 folders are unreadable."""
    candidates = [Runner()]
    if os.geteuid() == 0:  # root reads mode 000: be someone else, or root without it
        candidates = []
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pass
        else:
            candidates.append(Runner(options={"user": nobody.pw_uid, "group": nobody.pw_gid,
                                              "extra_groups": []},
                                     owner=(nobody.pw_uid, nobody.pw_gid)))
        setpriv = shutil.which("setpriv")
        if setpriv:
            candidates.append(Runner([setpriv, "--bounding-set=-dac_override,-dac_read_search"]))
    for candidate in candidates:
        if _denied(candidate):
            return candidate
    unavailable("no way to make a folder unreadable here: running as root, and neither"
                f" `nobody` (who must be able to run {sys.executable}) nor root without"
                " CAP_DAC_OVERRIDE (setpriv) is denied by mode 000")


# --- a machine of the test's own ----------------------------------------------------------


@dataclass
class Place:
    """A fresh folder tree (HOME, a Jupyter path, a config file) the command runs in."""

    root: Path
    locked: list[Path] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def kernels(self) -> Path:
        return self.root / "jupyter" / "kernels"

    def lock(self, folder: Path) -> Path:
        """Make ``folder`` (created if missing) mode 000."""
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0)
        self.locked.append(folder)
        return folder

    def run(self, *args: str, config: str = "", runner: Runner | None = None,
            jupyter_path: list[Path] | None = None) -> subprocess.CompletedProcess[str]:
        """``kernel-providers *args`` in this place, as ``runner`` (else as the tests)."""
        runner = runner or Runner()
        config_file = self.root / "kernel_providers.toml"
        config_file.write_text(config)
        runtime = self.root / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        if runner.owner is not None:  # its HOME, runtime and cache are its own
            for folder, dirs, files in os.walk(self.root):
                for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                    os.chown(name, *runner.owner, follow_symlinks=False)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
            "LANG": "C.UTF-8", "KERNEL_PROVIDERS_CONFIG": str(config_file),
            "KERNEL_PROVIDERS_DISABLE": OTHERS,
            "JUPYTER_PATH": os.pathsep.join(map(str, jupyter_path or [self.kernels.parent])),
            "JUPYTER_DATA_DIR": str(self.home / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(runtime),
            "XDG_CACHE_HOME": str(self.home / "cache"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_DATA_HOME": str(self.home / "data"),
        }
        return subprocess.run([*runner.prefix, str(SCRIPT), *args], capture_output=True,
                              text=True, env=env, cwd=self.home, timeout=120, check=False,
                              **runner.options)


@pytest.fixture
def place() -> Iterator[Place]:
    """A fresh place under a 0755 folder (pytest's tmp_path is 0700 root's): the
    command's user must get in."""
    root = Path(tempfile.mkdtemp(prefix="kp-chaos-"))
    root.chmod(0o755)
    (root / "home").mkdir()
    (root / "jupyter" / "kernels").mkdir(parents=True)
    made = Place(root)
    yield made
    for folder in made.locked:
        if folder.exists():
            folder.chmod(0o755)
    shutil.rmtree(root)


def write_spec(folder: Path, display_name: str = "KP Chaos") -> Path:
    """A valid kernelspec folder."""
    write_kernelspec(folder.parent, folder.name, {
        "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name, "language": "python"})
    return folder


def fake_venv(prefix: Path, conda: bool = False) -> Path:
    """An environment as discovery reads it (no Python is started): pyvenv.cfg (or
    conda-meta records), an interpreter file and ipykernel in site-packages."""
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python3").write_text("#!/bin/sh\n")
    (prefix / "bin" / "python3").chmod(0o755)
    (prefix / "lib" / f"python{PY}" / "site-packages" / "ipykernel").mkdir(parents=True)
    if conda:
        meta = prefix / "conda-meta"
        meta.mkdir()
        for record in (f"python-{PY}.7-h1234567_0_cpython", "ipykernel-7.0.0-pyh3099207_0"):
            name, version, build = record.rsplit("-", 2)
            (meta / f"{record}.json").write_text(json.dumps(
                {"name": name, "version": version, "build": build, "files": []}))
        (meta / "history").write_text("==> 2026-11-24 10:00:00 <==\n")
    else:
        (prefix / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion = {PY}.7\n")
    return prefix


def listed(result: subprocess.CompletedProcess[str]) -> set[str]:
    """Kernel ids of a successful ``list --json``."""
    assert result.returncode == 0, result.stderr
    return {k["id"] for k in json.loads(result.stdout)}


def warning_about(result: subprocess.CompletedProcess[str], path: Path) -> str:
    """The one warning naming ``path`` (every warning is one line)."""
    lines = [line for line in result.stderr.splitlines() if f"{path}:" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: "), result.stderr
    return lines[0]


def toml(value: object) -> str:
    return json.dumps(value)  # a TOML basic string or array of them


# --- 1. one unreadable folder -------------------------------------------------------------


def test_spec_lists_around_unreadable_folders(place: Place, runner: Runner) -> None:
    write_spec(place.kernels / "good")
    locked = place.lock(write_spec(place.kernels / "locked"))
    second = place.root / "second"
    write_spec(second / "kernels" / "other")
    dark = place.lock(second / "kernels")  # a whole kernels folder on the path
    result = place.run("list", "--json", "--provider", "spec", runner=runner,
                       config="[providers.spec]\nnative_python = false\n",
                       jupyter_path=[place.kernels.parent, second])
    assert "spec/good" in listed(result)
    for folder in (locked, dark):
        line = warning_about(result, folder)
        assert "Permission denied" in line and "fix its permissions" in line


def test_venv_lists_around_unreadable_folders(place: Place, runner: Runner) -> None:
    venvs, others = place.root / "venvs", place.root / "other-venvs"
    good = fake_venv(venvs / "good")
    write_spec(good / "share" / "jupyter" / "kernels" / "extra")
    secret = place.lock(good / "share" / "jupyter" / "kernels" / "secret")
    locked = place.lock(venvs / "locked")
    nolib = fake_venv(venvs / "nolib")
    place.lock(nolib / "lib")
    fake_venv(others / "hidden")
    place.lock(others)
    fake_venv(venvs / "ignored")
    place.lock(venvs / "ignored")
    code = place.root / "code"  # project folders: their .venv
    fake_venv(code / "webapp" / ".venv")
    private = place.lock(code / "private")
    result = place.run("list", "--json", "--provider", "venv", runner=runner, config=(
        f"[providers.venv]\ndirs = {toml([str(venvs), str(others)])}\n"
        f'project_dirs = {toml([str(code)])}\ninclude_cwd = false\nexclude = ["ignored"]\n'))
    assert listed(result) == {"venv/good", "venv/good/extra", "venv/webapp"}
    for folder in (secret, locked, nolib / "lib", others, private):
        line = warning_about(result, folder)
        assert "Permission denied" in line and "fix its permissions" in line
    assert "providers.venv" in warning_about(result, locked)  # where to exclude it
    assert "ignored" not in result.stderr  # excluded: not a problem


def test_conda_lists_around_unreadable_folders(place: Place, runner: Runner) -> None:
    envs, others = place.root / "envs", place.root / "other-envs"
    good = fake_venv(envs / "good", conda=True)
    write_spec(good / "share" / "jupyter" / "kernels" / "extra")
    secret = place.lock(good / "share" / "jupyter" / "kernels" / "secret")
    locked = place.lock(envs / "locked")
    nometa = fake_venv(envs / "nometa", conda=True)
    place.lock(nometa / "conda-meta")
    fake_venv(others / "hidden", conda=True)
    place.lock(others)
    root = place.lock(place.home / "miniconda3")  # a well-known root (base) prefix
    condarc = place.home / ".condarc"
    condarc.write_bytes(b"envs_dirs:\n  - /somewhere/\xff\n")  # not UTF-8
    result = place.run("list", "--json", "--provider", "conda", runner=runner, config=(
        f"[providers.conda]\nenvs_dirs = {toml([str(envs), str(others)])}\n"
        "use_executable = false\n"))
    assert listed(result) == {"conda/good", "conda/good/extra"}
    for folder in (secret, locked, nometa / "conda-meta", others, root):
        line = warning_about(result, folder)
        assert "Permission denied" in line and "fix its permissions" in line
    assert "not UTF-8" in warning_about(result, condarc)


def test_a_fixed_problem_shows_at_once_in_a_long_running_process(
        place: Place, monkeypatch: pytest.MonkeyPatch, kp_isolated: Path) -> None:
    # Neither a chmod nor a kernel.json fixed in place changes a watched mtime (the
    # folders'): an environment probed with a problem must not be reused from cache.
    good = fake_venv(place.root / "venvs" / "good")
    spec = write_spec(good / "share" / "jupyter" / "kernels" / "extra") / "kernel.json"
    valid = spec.read_text()
    spec.write_text("{" + " " * (len(valid) - 1))  # malformed, the same size
    stamp = spec.stat().st_mtime_ns
    monkeypatch.setenv("HOME", str(place.home))
    finder = KernelFinder(Config(providers={"venv": {  # type: ignore[arg-type]
        "dirs": [str(place.root / "venvs")], "include_cwd": False}}))
    first = asyncio.run(finder.find_kernels(provider="venv"))
    assert [k.id for k in first] == ["venv/good"]
    spec.write_text(valid)
    os.utime(spec, ns=(stamp, stamp))
    second = asyncio.run(finder.find_kernels(provider="venv"))
    assert [k.id for k in second] == ["venv/good", "venv/good/extra"]


# --- 2. a kernel.json that is not a readable file -----------------------------------------


def test_kernel_json_that_is_no_readable_file_is_reported(place: Place) -> None:
    write_spec(place.kernels / "good")
    broken = {name: place.kernels / name / "kernel.json"
              for name in ("binary", "folder", "loop", "dangling")}
    for path in broken.values():
        path.parent.mkdir()
    broken["binary"].write_bytes(b"\xff\xfe{\x00\x01binary")
    broken["folder"].mkdir()
    broken["loop"].symlink_to("kernel.json")
    broken["dangling"].symlink_to(place.root / "nowhere.json")
    result = place.run("list", "--json", "--provider", "spec",
                       config="[providers.spec]\nnative_python = false\n")
    assert "spec/good" in listed(result)
    what = {"binary": "not UTF-8", "folder": "directory", "loop": "symbolic link",
            "dangling": "No such file"}
    for name, path in broken.items():
        assert what[name] in warning_about(result, path), result.stderr


# --- 3. names with control characters -----------------------------------------------------


def test_control_characters_never_break_the_table(place: Place) -> None:
    venvs, envs = place.root / "venvs", place.root / "envs"
    for name in ("good", "bad\nenv", "bell\x07", "rtl\u202eexe.py"):
        fake_venv(venvs / name)
        fake_venv(envs / name, conda=True)
    write_spec(place.kernels / "good")
    write_spec(place.kernels / "bad\nname")
    write_spec(place.kernels / "trailing\n")  # a regex's $ matches before a final newline
    result = place.run("list", config=(
        f"[providers.venv]\ndirs = {toml([str(venvs)])}\ninclude_cwd = false\n"
        f"[providers.conda]\nenvs_dirs = {toml([str(envs)])}\ninclude_root = false\n"
        "use_executable = false\n[providers.spec]\nnative_python = false\n"))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "LANGUAGE", "DISPLAY", "NAME"]
    assert {row.split()[0] for row in rows} >= {"spec/good", "venv/good", "conda/good"}
    for row in rows:  # one kernel per line, none of the bad names
        assert row.split()[0].startswith(("spec/", "venv/", "conda/")), result.stdout
        assert not any(bad in row for bad in ("bad", "bell", "rtl", "trailing")), result.stdout
    stderr = result.stderr.splitlines()
    assert all(line.startswith("warning: ") for line in stderr), result.stderr
    for provider in ("venv", "conda"):
        for escaped in (r"bad\nenv", r"bell\x07", r"rtl\u202eexe.py"):
            assert any(line.startswith(f"warning: {provider}: ") and escaped in line
                       and "rename" in line for line in stderr), result.stderr
    for escaped in (r"'bad\nname'", r"'trailing\n'"):
        assert any(escaped in line and "not valid" in line for line in stderr), result.stderr
