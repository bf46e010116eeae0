"""The environment kinds people use today, with real environments built here: pixi
projects and global envs, uv projects (made by the real `uv`), hatch's and PDM's
centralized venvs, uv-managed Pythons, several conda roots side by side, a non-Python
kernelspec inside an environment; the working directory's project first (`.`), and
environments without ipykernel listed by `--all` with the command that fixes them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, KernelFinder, KernelType, LaunchFailed, NoSuchKernel
from kernel_providers.testing import command_argv, command_environment, run_code

PROBE = ("import os, sys; print(sys.prefix); print(os.environ.get('CONDA_PREFIX'));"
         " print(os.environ.get('VIRTUAL_ENV')); print(os.environ.get('PIXI_PROJECT_ROOT'));"
         " print(os.environ.get('PIXI_ENVIRONMENT_NAME')); print(os.environ.get('KP_FROM'));"
         " print(os.environ.get('KP_SCRIPT'))")

PROVIDERS = ("conda", "venv", "pixi")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kp_isolated: Path) -> Iterator[Path]:
    """An empty home folder of its own, and nothing of the machine's tools: no hatch on
    PATH (its data folder is read instead), no tool variables set."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("CONDA_EXE", "MAMBA_EXE", "MAMBA_ROOT_PREFIX", "CONDA_ENVS_PATH", "CONDARC",
                "WORKON_HOME", "PYENV_ROOT", "XDG_DATA_HOME", "XDG_CONFIG_HOME",
                "POETRY_VIRTUALENVS_PATH", "CONDA_PREFIX", "UV_PROJECT_ENVIRONMENT",
                "UV_PYTHON_INSTALL_DIR", "HATCH_DATA_DIR", "PIXI_HOME", "VIRTUAL_ENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent),
                                                "/usr/bin", "/bin"]))
    assert shutil.which("hatch") is None
    monkeypatch.chdir(home)
    yield home


def finder(projects: Path | None = None) -> KernelFinder:
    venv: dict[str, Any] = {"project_dirs": [str(projects)]} if projects else {}
    return KernelFinder(Config(providers={"venv": venv}))  # type: ignore[arg-type]


def listing(finder: KernelFinder, all: bool = False) -> dict[str, KernelType]:
    kernels = asyncio.run(finder.find_kernels(refresh=True, all=all))
    return {k.id: k for k in kernels if k.provider in PROVIDERS}


def probe(finder: KernelFinder, kernel_id: str) -> list[str]:
    async def scenario() -> list[str]:
        launcher = await finder.launch(kernel_id)
        try:
            out, _, reply = await run_code(launcher, PROBE)
            assert reply["content"]["status"] == "ok", reply
            return out.splitlines()
        finally:
            await launcher.shutdown()

    return asyncio.run(scenario())


def cli_environment(home: Path) -> dict[str, str]:
    """For the `kernel-providers` command: only this plugin's providers, this home."""
    folder = home.parent / "cli"
    folder.mkdir(exist_ok=True)
    return command_environment(folder, "docker,ssh,slurm,spec", HOME=str(home),
                               PATH=os.environ["PATH"])


def pixi_project(folder: Path, make_conda_env: Any, name: str = "robot") -> Path:
    """A pixi project as pixi lays it out: pixi.toml with activation env and scripts
    (its own and a feature's), .pixi/envs/default with ipykernel, .pixi/envs/cuda
    without, and conda-meta/pixi in each."""
    folder.mkdir(parents=True)
    (folder / "pixi.toml").write_text(f"""
[workspace]
name = "{name}"
version = "0.3.0"
channels = ["conda-forge"]
platforms = ["linux-64"]

[activation]
scripts = ["scripts/activate.sh"]
env = {{ KP_FROM = "pixi manifest" }}

[feature.cuda.activation.env]
KP_FROM = "cuda feature"

[environments]
cuda = ["cuda"]
""")
    (folder / "scripts").mkdir()
    (folder / "scripts" / "activate.sh").write_text(
        'export KP_SCRIPT="pixi script saw $PIXI_PROJECT_NAME"\n')
    for env, with_ipykernel in (("default", True), ("cuda", False)):
        prefix = make_conda_env(folder / ".pixi" / "envs" / env, with_ipykernel)
        (prefix / "conda-meta" / "pixi").write_text(json.dumps({
            "manifest_path": str(folder / "pixi.toml"), "environment_name": env,
            "pixi_version": "0.40.0"}))
    return folder


def uv_project(folder: Path, wheel: Path | None, venv: str = ".venv") -> Path:
    """A uv project, its environment made by the real uv (ipykernel installed from the
    wheel by uv, offline)."""
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "{folder.name}"\nversion = "0.1.0"\n\n[tool.uv]\npackage = false\n')
    (folder / "uv.lock").write_text("version = 1\n")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    assert uv is not None, "uv is a test requirement (requirements-dev.txt)"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(folder / venv)],
                   check=True, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
    prefix = folder / venv
    outer = next(p for p in sys.path if p.endswith("site-packages"))
    site = next((prefix / "lib").glob("python*/site-packages"))
    (site / "kp-test-outer.pth").write_text(outer + "\n")  # ipykernel's dependencies
    if wheel is not None:
        subprocess.run([uv, "pip", "install", "--quiet", "--offline", "--no-deps",
                        "--python", str(prefix / "bin" / "python"), str(wheel)], check=True)
    return folder


def test_pixi_project_runs_activated_as_pixi_shell(home: Path, make_conda_env: Any) -> None:
    project = pixi_project(home / "work" / "robot", make_conda_env)
    f = finder(home / "work")
    kernels = listing(f)
    kernel = kernels["pixi/robot"]
    assert kernel.metadata["environment_kind"] == "pixi"
    assert kernel.metadata["project_dir"] == str(project)
    assert kernel.display_name.endswith("(pixi: robot)")
    assert "pixi/robot:cuda" not in kernels  # no ipykernel there
    prefix = project / ".pixi" / "envs" / "default"
    assert probe(f, "pixi/robot") == [
        str(prefix), str(prefix), "None", str(project), "default", "pixi manifest",
        "pixi script saw robot"]


def test_pixi_environment_without_ipykernel_has_the_pixi_fix(home: Path,
                                                             make_conda_env: Any) -> None:
    pixi_project(home / "work" / "robot", make_conda_env)
    f = finder(home / "work")
    cuda = listing(f, all=True)["pixi/robot:cuda"]
    assert not cuda.launchable
    assert cuda.metadata["hint"] == (f"in {home / 'work' / 'robot'}: run"
                                     " `pixi add --feature cuda ipykernel`")
    with pytest.raises(LaunchFailed, match="pixi add --feature cuda ipykernel"):
        asyncio.run(f.launch("pixi/robot:cuda"))


def test_pixi_global_environment(home: Path, make_conda_env: Any) -> None:
    make_conda_env(home / ".pixi" / "envs" / "jupyter-tools")
    f = finder()
    kernel = listing(f)["pixi/jupyter-tools"]
    assert kernel.metadata["environment_kind"] == "pixi-global"
    lines = probe(f, "pixi/jupyter-tools")
    assert lines[:2] == [str(home / ".pixi" / "envs" / "jupyter-tools")] * 2


def test_uv_projects_at_any_depth_and_uv_project_environment(
        home: Path, ipykernel_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shallow = uv_project(home / "work" / "api", ipykernel_wheel)
    deep = uv_project(home / "work" / "clients" / "acme" / "etl", ipykernel_wheel)
    f = finder(home / "work")
    kernels = listing(f)
    assert kernels["venv/api"].metadata["environment_kind"] == "uv"
    assert kernels["venv/etl"].metadata["project_dir"] == str(deep)
    lines = probe(f, "venv/api")
    assert (lines[0], lines[2]) == (str(shallow / ".venv"), str(shallow / ".venv"))
    # UV_PROJECT_ENVIRONMENT names the project's environment folder instead of .venv.
    other = uv_project(home / "work" / "custom", ipykernel_wheel, venv="build-env")
    monkeypatch.setenv("UV_PROJECT_ENVIRONMENT", "build-env")
    kernels = listing(finder(home / "work"))
    assert kernels["venv/custom"].metadata["prefix"] == str(other / "build-env")


def test_projects_deeper_than_the_bound_are_not_walked(home: Path, make_venv: Any) -> None:
    """The project walk stops 4 levels under a project folder: discovery stays cheap."""
    near = home / "work" / "a" / "b" / "c" / "near"
    far = home / "work" / "a" / "b" / "c" / "d" / "far"
    for project in (near, far):
        make_venv(project / ".venv")
        (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    kernels = listing(finder(home / "work"))
    assert "venv/near" in kernels and "venv/far" not in kernels


def test_hatch_and_pdm_centralized_venvs(home: Path, make_venv: Any) -> None:
    work = home / "work"
    hatched = work / "hatched"
    hatched.mkdir(parents=True)
    (hatched / "pyproject.toml").write_text(  # hatch names folders after "hatched-tool"
        '[project]\nname = "Hatched_Tool"\n\n[tool.hatch.envs.default]\ndependencies = []\n')
    checksum = base64.urlsafe_b64encode(
        hashlib.sha256(str(hatched).encode()).digest()).decode()[:8]
    data = home / ".local" / "share"
    virtual = data / "hatch" / "env" / "virtual" / "hatched-tool" / checksum
    make_venv(virtual / "hatched-tool")
    make_venv(virtual / "docs")
    pdm = work / "pdmproj"
    pdm.mkdir()
    (pdm / "pyproject.toml").write_text('[project]\nname = "pdmproj"\n')
    (pdm / "pdm.lock").write_text("")
    digest = hashlib.md5(pdm.as_posix().encode(), usedforsecurity=False).digest()
    pdm_venv = make_venv(data / "pdm" / "venvs" /
                         f"pdmproj-{base64.urlsafe_b64encode(digest).decode()[:8]}-3.11")
    kernels = listing(finder(work))
    assert kernels["venv/hatched"].metadata["prefix"] == str(virtual / "hatched-tool")
    assert kernels["venv/hatched-docs"].metadata["environment_kind"] == "hatch"
    assert kernels["venv/pdmproj"].metadata["prefix"] == str(pdm_venv)
    assert kernels["venv/pdmproj"].metadata["environment_kind"] == "pdm"


def test_uv_managed_pythons_are_plain_interpreters(home: Path, make_venv: Any) -> None:
    pythons = home / ".local" / "share" / "uv" / "python"
    for name, with_ipykernel in (("cpython-3.98.1-linux-x86_64-gnu", True),
                                 ("cpython-3.99.0-linux-x86_64-gnu", False)):
        folder = make_venv(pythons / name, with_ipykernel=with_ipykernel)
        (folder / "pyvenv.cfg").unlink()  # an installation, not a venv
    kernels = listing(finder(), all=True)
    one = kernels["venv/cpython-3.98.1-linux-x86_64-gnu"]
    assert one.metadata["environment_kind"] == "uv-python" and one.launchable
    two = kernels["venv/cpython-3.99.0-linux-x86_64-gnu"]
    assert not two.launchable
    assert two.metadata["hint"] == (f"run `{pythons / two.name}/bin/python3 -m pip install"
                                    " ipykernel`")


def test_several_conda_roots_side_by_side(home: Path, make_conda_env: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """miniforge, mambaforge and micromamba's root at once: each root and each of their
    environments listed once, an environment reachable two ways (envs_dirs of a root's
    .condarc naming another root's envs) too."""
    forge = make_conda_env(home / "miniforge3")
    mamba = make_conda_env(home / "mambaforge")
    micro = make_conda_env(home / "mm-root", False)
    monkeypatch.setenv("MAMBA_ROOT_PREFIX", str(micro))
    for root, env in ((forge, "geo"), (mamba, "bio"), (micro, "ml")):
        make_conda_env(root / "envs" / env)
    (forge / ".condarc").write_text(f"envs_dirs:\n  - {mamba / 'envs'}\n")
    kernels = listing(finder())
    prefixes = [k.metadata["prefix"] for k in kernels.values() if k.provider == "conda"]
    assert sorted(prefixes) == sorted(map(str, [
        forge, mamba, forge / "envs" / "geo", mamba / "envs" / "bio", micro / "envs" / "ml"]))
    assert kernels["conda/ml"].metadata["prefix"] == str(micro / "envs" / "ml")


def test_non_python_kernelspec_in_an_env_starts_activated(home: Path,
                                                          make_conda_env: Any) -> None:
    """A kernelspec of another language inside a conda env whose program is found only
    through the activated PATH (as IRkernel's `R` is): it starts, with the env active."""
    make_conda_env(home / "miniforge3", False)
    prefix = make_conda_env(home / "miniforge3" / "envs" / "stats")
    program = prefix / "bin" / "tinylang-kernel"
    program.write_text('#!/bin/sh\nexec "$CONDA_PREFIX/bin/python" -m ipykernel_launcher'
                       ' -f "$1"\n')
    program.chmod(0o755)
    spec = prefix / "share" / "jupyter" / "kernels" / "tinylang"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": ["tinylang-kernel", "{connection_file}"], "display_name": "TinyLang",
        "language": "tinylang"}))
    f = finder()
    kernel = listing(f)["conda/stats/tinylang"]
    assert (kernel.language, kernel.display_name) == ("tinylang", "TinyLang (conda: stats)")
    lines = probe(f, "conda/stats/tinylang")
    assert lines[:2] == [str(prefix), str(prefix)]


def test_environments_without_ipykernel_say_how_to_fix_them(
        home: Path, make_conda_env: Any, make_venv: Any) -> None:
    make_conda_env(home / "miniforge3")
    make_conda_env(home / "miniforge3" / "envs" / "bare", False)
    make_venv(home / ".virtualenvs" / "plain", with_ipykernel=False)
    uv_project(home / "work" / "nokernel", None)
    f = finder(home / "work")
    assert not {"conda/bare", "venv/plain", "venv/nokernel"} & set(listing(f))
    every = listing(f, all=True)
    assert every["conda/bare"].metadata["hint"] == "run `conda install -n bare ipykernel`"
    assert every["venv/plain"].metadata["hint"] == (
        f"run `{home / '.virtualenvs' / 'plain' / 'bin' / 'python3'} -m pip install"
        " ipykernel`")
    assert every["venv/nokernel"].metadata["hint"] == (
        f"in {home / 'work' / 'nokernel'}: run `uv add --dev ipykernel`")


def test_the_working_directorys_project_comes_first_and_is_dot(
        home: Path, ipykernel_wheel: Path, make_conda_env: Any, make_venv: Any) -> None:
    make_conda_env(home / "miniforge3")
    make_venv(home / ".virtualenvs" / "aaa-first-by-name")
    project = uv_project(home / "work" / "zeta", ipykernel_wheel)
    notebooks = project / "notebooks" / "2026"
    notebooks.mkdir(parents=True)
    os.chdir(notebooks)
    f = finder()  # no project_dirs: found upward from the working directory
    kernels = asyncio.run(f.find_kernels(refresh=True))
    assert kernels[0].id == "venv/zeta" and kernels[0].in_project
    assert not any(k.in_project for k in kernels[1:])
    assert asyncio.run(f.get_kernel_type(".")).id == "venv/zeta"
    # The CLI: JSON says so, and `run .` runs in the project's environment.
    env = cli_environment(home)
    listed = subprocess.run(command_argv("list", "--json"), capture_output=True, text=True,
                            env=env, cwd=notebooks, timeout=60, check=True)
    first = json.loads(listed.stdout)[0]
    assert (first["id"], first["project"], first["launchable"]) == ("venv/zeta", True, True)
    ran = subprocess.run(command_argv("run", ".", "--code", "import sys; print(sys.prefix)"),
                         capture_output=True, text=True, env=env, cwd=notebooks, timeout=120)
    assert (ran.returncode, ran.stdout.strip()) == (0, str(project / ".venv")), ran.stderr


def test_dot_outside_any_project_is_a_clear_usage_error(home: Path) -> None:
    outside = home / "downloads"
    outside.mkdir()
    os.chdir(outside)
    with pytest.raises(NoSuchKernel, match=f"no project encloses {outside}"):
        asyncio.run(finder().get_kernel_type("."))
    env = cli_environment(home)
    ran = subprocess.run(command_argv("run", ".", "--code", "1"), capture_output=True,
                         text=True, env=env, cwd=outside, timeout=60)
    assert ran.returncode == 2 and f"no project encloses {outside}" in ran.stderr, ran.stderr


@pytest.fixture(scope="session")
def hatch_tool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real hatch, installed from the package index into a virtualenv of its own
    (not the test environment's: its dependencies are many)."""
    folder = tmp_path_factory.mktemp("hatch-tool")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "hatch"], check=True, timeout=600)
    return folder / "bin"


def test_hatch_environments_where_hatch_says(home: Path, hatch_tool: Path,
                                            ipykernel_wheel: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With hatch on PATH, its own answer (`hatch env find`) says where the project's
    environments are, here a folder set only in hatch's config file; environments made
    by the real `hatch env create`."""
    project = home / "work" / "solar"
    project.mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "solar"\nversion = "0.1"\n\n[tool.hatch.envs.default]\n'
        'skip-install = true\n\n[tool.hatch.envs.docs]\nskip-install = true\n')
    custom = home / "hatch-envs"
    (home / ".config" / "hatch").mkdir(parents=True)
    (home / ".config" / "hatch" / "config.toml").write_text(
        f'[dirs.env]\nvirtual = "{custom}"\n')
    monkeypatch.setenv("PATH", f"{hatch_tool}{os.pathsep}{os.environ['PATH']}")
    for env in ("default", "docs"):
        subprocess.run(["hatch", "env", "create", env], cwd=project, check=True,
                       capture_output=True, timeout=300)
    found = sorted(p for p in custom.rglob("pyvenv.cfg"))
    assert len(found) == 2, found
    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    for cfg in found:
        subprocess.run([str(uv), "pip", "install", "--quiet", "--offline", "--no-deps",
                        "--python", str(cfg.parent / "bin" / "python"), str(ipykernel_wheel)],
                       check=True)
        site = next((cfg.parent / "lib").glob("python*/site-packages"))
        (site / "kp-test-outer.pth").write_text(
            next(p for p in sys.path if p.endswith("site-packages")) + "\n")
    f = finder(home / "work")
    kernels = listing(f)
    assert kernels["venv/solar"].metadata["environment_kind"] == "hatch"
    assert kernels["venv/solar"].metadata["prefix"].startswith(str(custom))
    assert kernels["venv/solar-docs"].metadata["prefix"].endswith("/docs")
    lines = probe(f, "venv/solar")
    assert lines[0] == kernels["venv/solar"].metadata["prefix"] == lines[2]


def _age(folder: Path, seconds: float = 60) -> None:
    """Set every mtime under ``folder`` (and its own) ``seconds`` in the past: files
    as a machine has them, not just written."""
    then = time.time() - seconds
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (then, then), follow_symlinks=False)


def test_a_warm_listing_is_reused_until_anything_it_read_changes(
        home: Path, make_venv: Any, make_conda_env: Any) -> None:
    """An unchanged machine lists from the last answer (the same list object); a new
    environment, ipykernel installed into one, a new project, a project's environment
    where its tool keeps them, or a nearer project around the working directory shows
    at once."""
    make_conda_env(home / "miniforge3")
    make_venv(home / ".virtualenvs" / "ds")
    make_venv(home / ".virtualenvs" / "plain", with_ipykernel=False)
    uv_project(home / "work" / "api", None)
    _age(home)
    f = finder(home / "work")
    first = asyncio.run(f.find_kernels(refresh=True))
    venv = f.providers["venv"]
    assert venv._scan() is venv._scan()  # reused: nothing changed
    assert "venv/plain" not in {k.id for k in first}
    make_venv(home / ".virtualenvs" / "new")
    assert "venv/new" in listing(f)
    shutil.copytree(next((home / ".virtualenvs" / "ds" / "lib").glob("python*/site-packages"
                                                                     "/ipykernel*")),
                    next((home / ".virtualenvs" / "plain" / "lib").glob(
                        "python*/site-packages")) / "ipykernel-7.0.dist-info")
    assert "venv/plain" in listing(f)
    _age(home)
    listing(f)
    make_venv(home / "work" / "late" / ".venv")
    assert "venv/late" in listing(f)
    # Where a tool keeps a project's environments, outside the project: watched too.
    hatched = home / "work" / "hatched"
    hatched.mkdir()
    (hatched / "pyproject.toml").write_text('[project]\nname = "hatched"\n[tool.hatch]\n')
    hatch_named = home / ".local" / "share" / "hatch" / "env" / "virtual" / "hatched"
    hatch_named.mkdir(parents=True)
    _age(home)
    assert "venv/hatched" not in listing(f)
    checksum = base64.urlsafe_b64encode(
        hashlib.sha256(str(hatched).encode()).digest()).decode()[:8]
    make_venv(hatch_named / checksum / "hatched")  # (only hatch's folder changes)
    assert "venv/hatched" in listing(f)
    # A new conda install is seen; a file written in the home folder (a shell's history)
    # does not make the next listing a full one.
    _age(home)
    listing(f)
    reused = [f.providers[p]._last for p in PROVIDERS]
    assert None not in reused
    (home / ".bash_history").write_text("ls\n")
    listing(f)
    assert [f.providers[p]._last for p in PROVIDERS] == reused
    make_conda_env(home / "mambaforge")
    assert listing(f)["conda/mambaforge"].metadata["prefix"] == str(home / "mambaforge")
    notebooks = home / "work" / "late" / "notebooks"
    notebooks.mkdir()
    os.chdir(notebooks)
    _age(home)
    assert listing(f)["venv/late"].in_project
    (notebooks / "pyproject.toml").write_text("[project]\nname = 'nb'\n")  # nearer
    assert not listing(f)["venv/late"].in_project


def test_a_removed_working_directory_lists_without_a_project(home: Path,
                                                             make_venv: Any) -> None:
    make_venv(home / ".virtualenvs" / "ds")
    gone = home / "gone"
    gone.mkdir()
    os.chdir(gone)
    gone.rmdir()
    f = finder()
    kernels = listing(f)
    assert "venv/ds" in kernels and not any(k.in_project for k in kernels.values())
    with pytest.raises(NoSuchKernel, match=r"no project encloses the working directory"
                                           r" \(removed\)"):
        asyncio.run(f.get_kernel_type("."))
