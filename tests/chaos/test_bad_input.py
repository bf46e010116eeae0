"""Chaos: bad input, one table. Each case gives the real `kernel-providers` command (a
subprocess, in an environment of its own: ``command_environment``) one bad thing: a
kernel.json, a kernel id, a configuration file, an environment folder, a Docker engine
or image, an SSH host. Each must end in the documented exit status (docs/cli.md) with a
message on stderr that names the thing and says what to do; never a traceback or an
"unexpected error"; and it must break nothing else: the good kernelspec ``spec/kp-ok``
still lists afterwards, the runtime dir holds no new file, and no process the case
started is alive (every process the command starts inherits a marker variable, looked
for in every process's environment).

No Docker kernel is launched here (a CI run may share the engine): the Docker cases
fail before a container is made (the image is missing, the engine address is dead,
the settings are refused before the pull), and each checks that no container carries
its kernel id. The SSH cases use an unreachable loopback port and, where sshd is
installed, an sshd of the module's own on 127.0.0.1 (`start_local_sshd`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from kernel_providers.testing import (
    command_argv,
    command_environment,
    docker_engine_problem,
    unavailable,
    write_kernelspec,
)

IPYKERNEL = ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
GOOD = "spec/kp-ok"
#: every plugin (entry-point name) and provider id of this repository but spec
OTHERS = ("example", "environments", "venv", "conda", "docker", "ssh", "slurm")
#: variables of the machine that would let its own environments, engines or hosts in
MACHINE_VARIABLES = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "CONDA_EXE",
                     "MAMBA_EXE", "MAMBA_ROOT_PREFIX", "CONDA_ENVS_PATH", "CONDARC",
                     "CONDA_PREFIX", "WORKON_HOME", "PYENV_ROOT", "VIRTUAL_ENV",
                     "POETRY_VIRTUALENVS_PATH", "KERNEL_PROVIDERS_TRACE")
MARKER = "KP_CHAOS_BAD_INPUT"
MISSING_IMAGE = "kp-chaos-no-such-image:1"
MANAGED_KERNEL_ID = "io.kernel-providers.kernel-id"
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"


# --- a machine of the case's own ----------------------------------------------------------


@dataclass
class Place:
    """A case's folder tree; ``kernels`` is on its Jupyter path."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    sshd: Any = None  # the module's sshd, for the cases that need one

    @property
    def kernels(self) -> Path:
        return self.root / "jupyter" / "kernels"

    @property
    def config(self) -> Path:
        return Path(self.env["KERNEL_PROVIDERS_CONFIG"])

    @property
    def runtime(self) -> Path:
        return Path(self.env["JUPYTER_RUNTIME_DIR"])

    def spec(self, name: str, content: Any) -> Path:
        """``kernels/<name>/kernel.json``: bytes and str as they are, else as JSON."""
        return write_kernelspec(self.kernels, name, content)

    def fill(self, text: str) -> str:
        """``text`` with {root} and {kernels} replaced (TOML braces stay as they are)."""
        return text.replace("{root}", str(self.root)).replace("{kernels}", str(self.kernels))


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def containers_of(kernel_id: str) -> list[str]:
    """Ids of containers (any state) labelled with ``kernel_id``: read only."""
    docker = shutil.which("docker")
    if docker is None:
        return []
    out = subprocess.run([docker, "ps", "-a", "-q", "--filter",
                          f"label={MANAGED_KERNEL_ID}={kernel_id}"],
                         capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.split()


# --- what the cases write -----------------------------------------------------------------


def spec_writer(name: str, content: Any) -> Callable[[Place], None]:
    """A setup writing ``kernels/<name>/kernel.json``."""
    def write(place: Place) -> None:
        place.spec(name, content)
    return write


def env_config(venv: bool = False, conda: bool = False) -> str:
    """Provider tables that search the case's own folders only."""
    text = ""
    if venv:
        text += '[providers.venv]\ndirs = ["{root}/venvs"]\ninclude_cwd = false\n'
    if conda:
        text += ('[providers.conda]\nenvs_dirs = ["{root}/envs"]\ninclude_root = false\n'
                 "use_executable = false\n")
    return text


def broken_venv(place: Place) -> None:
    """A virtualenv with ipykernel whose interpreter is a dangling symlink (the Python it
    was made from is gone)."""
    prefix = place.root / "venvs" / "broken"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python3").symlink_to(place.root / "gone" / "python3.11")
    (prefix / "pyvenv.cfg").write_text(f"home = {place.root}/gone\nversion = {PY}.7\n")
    (prefix / "lib" / f"python{PY}" / "site-packages" / "ipykernel").mkdir(parents=True)


def conda_without_python(place: Place) -> None:
    """A conda environment whose records hold ipykernel but which has no interpreter."""
    meta = place.root / "envs" / "nopython" / "conda-meta"
    meta.mkdir(parents=True)
    (meta / "ipykernel-7.0.0-pyh3099207_0.json").write_text(json.dumps(
        {"name": "ipykernel", "version": "7.0.0", "build": "pyh3099207_0", "files": []}))
    (meta / "history").write_text("==> 2026-11-24 10:00:00 <==\n")


def ssh_files(place: Place) -> None:
    """An ssh_config naming ``deadbox`` (a closed loopback port) and an empty
    known_hosts."""
    (place.root / "ssh_config").write_text(
        f"Host deadbox\n  HostName 127.0.0.1\n  Port {closed_port()}\n  User root\n"
        "  ConnectTimeout 5\n")
    (place.root / "known_hosts").write_text("")


def sshd_unknown_key(place: Place) -> None:
    """The module's sshd, with a known_hosts that does not hold its key."""
    (place.root / "known_hosts").write_text("")
    shutil.copy(place.sshd.ssh_config, place.root / "ssh_config")


def sshd_wrong_user(place: Place) -> None:
    """The module's sshd, logging in as a user who does not exist there."""
    text = Path(place.sshd.ssh_config).read_text()
    (place.root / "ssh_config").write_text(
        re.sub(r"(?m)^(\s*User )\S+$", r"\1nosuchuser", text, count=1))
    shutil.copy(place.sshd.known_hosts, place.root / "known_hosts")


def config_is_a_folder(place: Place) -> None:
    place.config.unlink()
    place.config.mkdir()


def binary_config(place: Place) -> None:
    place.config.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00cache_ttl = 3\n")


def non_utf8_code(place: Place) -> None:
    (place.root / "code.py").write_bytes("print('caf\u00e9')\n".encode("latin-1"))


def kernel_json_folder(place: Place) -> None:
    (place.kernels / "folder" / "kernel.json").mkdir(parents=True)


def kernel_json_loop(place: Place) -> None:
    (place.kernels / "loop").mkdir(parents=True)
    (place.kernels / "loop" / "kernel.json").symlink_to("kernel.json")


def kernel_json_dangling(place: Place) -> None:
    (place.kernels / "dangling").mkdir(parents=True)
    (place.kernels / "dangling" / "kernel.json").symlink_to(place.root / "nowhere.json")


def missing_program(place: Place) -> None:
    place.spec("nocommand", {"argv": [str(place.root / "no-such-program"), "-f",
                                      "{connection_file}"], "display_name": "No command"})


def program_is_a_folder(place: Place) -> None:
    place.spec("folderprog", {"argv": [str(place.root), "-f", "{connection_file}"],
                              "display_name": "Folder"})


# --- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input and what the command must do with it.

    ``args``, ``config``, ``names``, ``fix`` and ``absent`` may hold {root} / {kernels}.
    ``names``: what stderr must name (path, id, key, host, image); ``fix``: the hint of
    what to do; ``forbid``: what stderr must not hold. ``fatal``: the configuration stops
    every command by design (docs/configuration.md), so the listing afterwards runs with
    it removed. ``providers``: provider ids enabled besides spec. ``needs``: "docker"
    (an engine) or "sshd" (the module's sshd).
    """

    id: str
    args: tuple[str, ...]
    exit: int
    names: tuple[str, ...]
    fix: tuple[str, ...]
    setup: Callable[[Place], None] | None = None
    config: str = ""
    providers: tuple[str, ...] = ()
    env: tuple[tuple[str, str | None], ...] = ()
    stdin: bytes = b""
    fatal: bool = False
    forbid: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    max_stderr: int | None = None
    needs: str | None = None


def _json(name: str) -> str:
    return "{kernels}/" + name + "/kernel.json"


LIST = ("list", "--json")
SSH_CONFIG = ('[providers.ssh]\nhosts = ["{host}"]\nssh_config = "{root}/ssh_config"\n'
              'known_hosts = "{root}/known_hosts"\nconnect_timeout = 5\n')
DOCKER_CONFIG = ('[providers.docker]\nlabelled_images = false\nimages = ["' + MISSING_IMAGE
                 + '"]\n')
ENV_NUL = {"argv": IPYKERNEL, "display_name": "Env NUL", "env": {"A": "x\u0000y"}}
ARGV_NUL = {"argv": ["pyth\u0000on", "-f", "{connection_file}"], "display_name": "NUL"}
META_STRING = {"argv": IPYKERNEL, "display_name": "Meta",
               "metadata": {"kernel_providers": "allocate"}}

CASES = [
    # --- kernel.json -------------------------------------------------------------------
    Case("kernel.json-malformed", LIST, 0, (_json("malformed"), "invalid JSON"),
         ("line 1 column",), spec_writer("malformed", '{"argv": ["python"],,}')),
    Case("kernel.json-empty-file", ("info", "spec/empty"), 2,
         ("'spec/empty'", _json("empty"), "invalid JSON"), ("`kernel-providers list`",),
         spec_writer("empty", "")),
    Case("kernel.json-10MB", LIST, 0, (_json("huge"), "invalid JSON"),
         ("Unterminated string", "line 1 column"),
         spec_writer("huge", '{"argv": ["python"], "display_name": "' + "x" * 10_000_000),
         max_stderr=2000),
    Case("kernel.json-binary-bytes", LIST, 0, (_json("binary"), "not UTF-8"),
         ("must be UTF-8 JSON",),
         spec_writer("binary", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 64)),
    Case("kernel.json-not-utf8", LIST, 0, (_json("latin1"), "byte 0xe9"),
         ("must be UTF-8 JSON",),
         spec_writer("latin1", json.dumps({"argv": IPYKERNEL, "display_name": "Caf\u00e9"},
                                          ensure_ascii=False).encode("latin-1"))),
    Case("kernel.json-json-array", LIST, 0, (_json("array"),), ("must hold a JSON object",),
         spec_writer("array", [IPYKERNEL])),
    Case("kernel.json-json-number", ("info", "spec/number"), 2,
         ("'spec/number'", _json("number")), ("must hold a JSON object",),
         spec_writer("number", "42")),
    Case("kernel.json-json-string", ("run", "spec/string", "--code", "1"), 2,
         ("'spec/string'", _json("string")), ("must hold a JSON object",),
         spec_writer("string", '"python -m ipykernel"')),
    Case("argv-not-a-list", LIST, 0, (_json("argvstr"), "'argv'"), ("must be a list",),
         spec_writer("argvstr", {"argv": "python -m ipykernel_launcher"})),
    Case("argv-empty", LIST, 0, (_json("argvempty"), "'argv'"),
         ("must be a non-empty list of strings",), spec_writer("argvempty", {"argv": []})),
    Case("argv-non-string", LIST, 0, (_json("argvint"), "'argv'"),
         ("must be a non-empty list of strings",),
         spec_writer("argvint", {"argv": ["python", 3, "{connection_file}"]})),
    Case("argv-program-missing-run", ("run", "spec/nocommand", "--code", "print(1)"), 3,
         ("'spec/nocommand'", "{root}/no-such-program", "No such file"),
         ("check the kernel's argv",), missing_program),
    Case("argv-program-is-a-folder-launch", ("launch", "spec/folderprog", "--json"), 3,
         ("'spec/folderprog'", "'{root}'"), ("check the kernel's argv",),
         program_is_a_folder),
    Case("display_name-not-a-string", LIST, 0, (_json("dname"), "'display_name'"),
         ("must be a str",), spec_writer("dname", {"argv": IPYKERNEL, "display_name": 7})),
    Case("env-not-an-object", LIST, 0, (_json("envlist"), "'env'"), ("must be a dict",),
         spec_writer("envlist", {"argv": IPYKERNEL, "env": ["A=1"]})),
    Case("interrupt_mode-invalid", LIST, 0, (_json("imode"), "'interrupt_mode'"),
         ("must be 'signal' or 'message'",),
         spec_writer("imode", {"argv": IPYKERNEL, "interrupt_mode": "sigkill"})),
    Case("kernel.json-is-a-folder", LIST, 0, (_json("folder"), "Is a directory"),
         ("remove",), kernel_json_folder),
    Case("kernel.json-symlink-loop", LIST, 0, (_json("loop"), "symbolic link"),
         ("remove",), kernel_json_loop),
    Case("kernel.json-dangling-symlink", LIST, 0, (_json("dangling"), "{root}/nowhere.json"),
         ("remove",), kernel_json_dangling),
    Case("metadata-kernel_providers-not-a-table", ("run", "spec/meta", "--code", "1"), 2,
         ("spec/meta", "kernel_providers"), ("must be",), spec_writer("meta", META_STRING),
         forbid=("unexpected error",)),
    Case("env-value-with-NUL", ("run", "spec/envnul", "--code", "1"), 2,
         ("spec/envnul", "'env'"), ("must",), spec_writer("envnul", ENV_NUL)),
    Case("argv-with-NUL-launch", ("launch", "spec/argvnul"), 2,
         ("spec/argvnul", "'argv'"), ("must",), spec_writer("argvnul", ARGV_NUL)),
    # --- kernel ids --------------------------------------------------------------------
    Case("id-unknown-close-match", ("run", "spec/kp-okk", "--code", "1"), 2,
         ("'spec/kp-okk'",), ("did you mean 'spec/kp-ok'",)),
    Case("id-unknown-provider", ("info", "nosuch/kp-ok"), 2, ("'nosuch'",),
         ("`kernel-providers list`",)),
    Case("id-dotdot", ("run", "spec/../kp-ok", "--code", "1"), 2, ("'spec/../kp-ok'",),
         ("did you mean 'spec/kp-ok'",)),
    Case("id-semicolon", ("info", "spec/kp-ok;touch {root}/pwned"), 2,
         ("'spec/kp-ok;touch {root}/pwned'",), ("`kernel-providers list`",),
         absent=("{root}/pwned",)),
    Case("id-command-substitution", ("run", "spec/$(touch {root}/pwned)", "--code", "1"), 2,
         ("'spec/$(touch {root}/pwned)'",), ("`kernel-providers list`",),
         absent=("{root}/pwned",)),
    Case("id-space", ("info", "spec/kp ok"), 2, ("'spec/kp ok'",),
         ("did you mean 'spec/kp-ok'",)),
    Case("id-unicode", ("info", "spec/kp-\u00f6k"), 2, ("'spec/kp-\u00f6k'",),
         ("did you mean 'spec/kp-ok'",)),
    Case("id-control-characters", ("info", "spec/kp-ok\x1b[2J\n"), 2,
         (r"'spec/kp-ok\x1b[2J\n'",), ("did you mean 'spec/kp-ok'",), forbid=("\x1b",)),
    Case("id-trailing-slash-launch", ("launch", "spec/kp-ok/"), 2, ("'spec/kp-ok/'",),
         ("did you mean 'spec/kp-ok'",)),
    Case("id-empty", ("info", ""), 2, ("''",), ("`kernel-providers list`",),
         forbid=("'/...'",)),
    Case("id-very-long", ("info", "spec/" + "a" * 10_000), 2, ("'spec/aaaaaaaaaa",),
         ("`kernel-providers list`",), max_stderr=12_000),
    # --- configuration -----------------------------------------------------------------
    Case("config-broken-toml", LIST, 2, ("{root}/kernel_providers.toml",),
         ("line 1, column",), config="cache_ttl = = 3\n", fatal=True),
    Case("config-binary", LIST, 2, ("{root}/kernel_providers.toml", "not UTF-8"),
         ("point KERNEL_PROVIDERS_CONFIG elsewhere",), binary_config, fatal=True),
    Case("config-unknown-top-level-key", LIST, 0,
         ("{root}/kernel_providers.toml", "'colour'"), ("known: cache_ttl",),
         config='colour = "red"\n'),
    Case("config-unknown-provider-key", ("info", GOOD), 0,
         ("[providers.spec]", "'exclud'"), ("known: exclude",),
         config='[providers.spec]\nexclud = ["python2"]\n'),
    Case("config-wrong-type-top-level", ("run", GOOD, "--code", "1"), 2,
         ("{root}/kernel_providers.toml", "discovery_timeout"), ("expected float",),
         config='discovery_timeout = "ten"\n', fatal=True),
    Case("config-wrong-type-provider-table", LIST, 0,
         ("[providers.ssh]", "connect_timeout"), ("expected float",),
         config='[providers.ssh]\nhosts = ["deadbox"]\nconnect_timeout = "ten"\n',
         providers=("ssh",)),
    Case("config-negative-timeout", ("launch", GOOD), 2, ("ready_timeout",),
         ("expected a finite number >= 0",), config="ready_timeout = -5\n", fatal=True),
    Case("config-nan-timeout", LIST, 2, ("discovery_timeout",),
         ("expected a finite number >= 0",), config="discovery_timeout = nan\n", fatal=True),
    Case("config-providers-not-a-table", LIST, 2, ("{root}/kernel_providers.toml",),
         ("e.g. [providers.spec]",), config='providers = "spec"\n', fatal=True),
    Case("config-path-is-a-folder", LIST, 2, ("{root}/kernel_providers.toml",),
         ("KERNEL_PROVIDERS_CONFIG",), config_is_a_folder, fatal=True),
    Case("config-path-with-NUL", LIST, 0, ("[providers.venv]", "dirs"),
         ("holds a NUL character", "remove it"),
         config='[providers.venv]\ndirs = ["{root}/a\\u0000b"]\n', providers=("venv",)),
    # --- code to run -------------------------------------------------------------------
    Case("run-file-not-utf8", ("run", GOOD, "{root}/code.py"), 2,
         ("{root}/code.py", "UTF-8"), ("save the code as UTF-8",), non_utf8_code),
    Case("run-stdin-not-utf8", ("run", GOOD, "-"), 2, ("standard input", "UTF-8"),
         ("save the code as UTF-8",), stdin=b"print('caf\xe9')\n"),
    # --- environments --------------------------------------------------------------------
    Case("venv-dangling-interpreter-list", LIST, 0,
         ("{root}/venvs/broken", "interpreter is missing"), ("exclude",), broken_venv,
         config=env_config(venv=True), providers=("venv",)),
    Case("venv-dangling-interpreter-run", ("run", "venv/broken", "--code", "1"), 2,
         ("'venv/broken'", "{root}/venvs/broken"), ("`kernel-providers list`",),
         broken_venv, config=env_config(venv=True), providers=("venv",)),
    Case("conda-meta-without-python-list", LIST, 0,
         ("{root}/envs/nopython", "bin/python"), ("conda install",), conda_without_python,
         config=env_config(conda=True), providers=("conda",)),
    Case("conda-meta-without-python-run", ("run", "conda/nopython", "--code", "1"), 2,
         ("'conda/nopython'", "{root}/envs/nopython"), ("`kernel-providers list`",),
         conda_without_python, config=env_config(conda=True), providers=("conda",)),
    # --- Docker (no container may start) -------------------------------------------------
    Case("docker-missing-image-list", LIST, 0, (f"'{MISSING_IMAGE}'",),
         (f"`docker pull {MISSING_IMAGE}`",), config=DOCKER_CONFIG, providers=("docker",),
         needs="docker"),
    Case("docker-missing-image-run", ("run", f"docker/{MISSING_IMAGE}", "--code", "1"), 2,
         (f"'docker/{MISSING_IMAGE}'",), (f"`docker pull {MISSING_IMAGE}`",),
         config=DOCKER_CONFIG, providers=("docker",), needs="docker"),
    Case("docker-network-host-refused", ("run", f"docker/{MISSING_IMAGE}", "--code", "1"), 3,
         (f"docker/{MISSING_IMAGE}", "network = 'host'"), ("use a bridge network",),
         config=DOCKER_CONFIG + 'pull = "missing"\nnetwork = "host"\n',
         providers=("docker",), needs="docker"),
    Case("docker-mem_limit-not-a-size-launch", ("launch", f"docker/{MISSING_IMAGE}"), 3,
         (f"docker/{MISSING_IMAGE}", "mem_limit = 'lots'"), ("e.g. '512m'",),
         config=DOCKER_CONFIG + 'pull = "missing"\nmem_limit = "lots"\n',
         providers=("docker",), needs="docker"),
    Case("docker-dead-DOCKER_HOST-list", LIST, 0,
         ("unix://{root}/no-engine/docker.sock",), ("set DOCKER_HOST",),
         config=DOCKER_CONFIG, providers=("docker",),
         env=(("DOCKER_HOST", "unix://{root}/no-engine/docker.sock"),)),
    Case("docker-dead-DOCKER_HOST-run", ("run", f"docker/{MISSING_IMAGE}", "--code", "1"), 2,
         (f"'docker/{MISSING_IMAGE}'", "unix://{root}/no-engine/docker.sock"),
         ("set DOCKER_HOST",), config=DOCKER_CONFIG, providers=("docker",),
         env=(("DOCKER_HOST", "unix://{root}/no-engine/docker.sock"),)),
    Case("docker-unknown-context", LIST, 0, ("'kp-chaos-no-such-context'",),
         ("`docker context ls`",), config=DOCKER_CONFIG, providers=("docker",),
         env=(("DOCKER_HOST", None), ("DOCKER_CONTEXT", "kp-chaos-no-such-context"))),
    # --- SSH -----------------------------------------------------------------------------
    Case("ssh-unreachable-host-list", LIST, 0, ("'deadbox'", "unreachable"),
         ("check HostName/Port",), ssh_files, config=SSH_CONFIG.replace("{host}", "deadbox"),
         providers=("ssh",)),
    Case("ssh-unreachable-host-run", ("run", "ssh/deadbox/python3", "--code", "1"), 2,
         ("'ssh/deadbox/python3'", "'deadbox'"), ("check HostName/Port",), ssh_files,
         config=SSH_CONFIG.replace("{host}", "deadbox"), providers=("ssh",)),
    Case("ssh-unknown-host-alias", ("info", "ssh/kp-chaos-no-such-alias/python3"), 2,
         ("'kp-chaos-no-such-alias'",), ("ssh config",), ssh_files,
         config=SSH_CONFIG.replace("{host}", "kp-chaos-no-such-alias"), providers=("ssh",)),
    Case("ssh-unknown-host-key", LIST, 0, ("'testbox'", "host key not verified"),
         ("add it to known_hosts",), sshd_unknown_key,
         config=SSH_CONFIG.replace("{host}", "testbox"), providers=("ssh",), needs="sshd"),
    Case("ssh-wrong-user-run", ("run", "ssh/testbox/python3", "--code", "1"), 2,
         ("'testbox'", "nosuchuser", "authentication failed"), ("ssh config",),
         sshd_wrong_user, config=SSH_CONFIG.replace("{host}", "testbox"), providers=("ssh",),
         needs="sshd"),
]


def _param(case: Case) -> Any:
    return pytest.param(case, id=case.id)


# --- running a case -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An sshd of this module's own on 127.0.0.1 (started on first use)."""
    if not os.path.exists("/usr/sbin/sshd"):
        unavailable("no /usr/sbin/sshd here: the cases of a real SSH server cannot run")
    from kernel_providers_ssh.testing import start_local_sshd

    server = start_local_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


def environment(case: Case, root: Path, marker: str) -> dict[str, str]:
    """The command's environment: spec plus the case's providers, the case's folders."""
    disabled = [p for p in OTHERS if p not in case.providers]
    if any(p in case.providers for p in ("venv", "conda")):
        disabled.remove("environments")
    home = root / "home"
    home.mkdir()
    env = command_environment(root, ",".join(disabled), HOME=str(home),
                              XDG_CONFIG_HOME=str(home / "config"),
                              XDG_DATA_HOME=str(home / "data"), LANG="C.UTF-8")
    for name in MACHINE_VARIABLES:
        env.pop(name, None)
    if "docker" in case.providers and os.environ.get("DOCKER_HOST"):
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]  # the engine the tests use
    for name, value in case.env:
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value.replace("{root}", str(root))
    env[MARKER] = marker
    return env


def command(place: Place, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    """``kernel-providers *args`` in the case's place; stdout and stderr as text."""
    done = subprocess.run(command_argv(*args), env=place.env, input=stdin,
                          capture_output=True, cwd=place.root / "home", timeout=120,
                          check=False)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"))


def marked_processes(marker: str) -> list[psutil.Process]:
    """Live processes whose environment holds ``MARKER=marker``: what the case started."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER) == marker and \
                    process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def leftover_processes(marker: str, seconds: float = 10) -> list[psutil.Process]:
    """The case's processes still alive once ``seconds`` have passed (none, at once)."""
    deadline = time.monotonic() + seconds
    while (alive := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def listed_ids(result: subprocess.CompletedProcess[str]) -> set[str]:
    assert result.returncode == 0, result.stderr
    return {kernel["id"] for kernel in json.loads(result.stdout)}


def check_message(case: Case, place: Place, result: subprocess.CompletedProcess[str]) -> None:
    """Exit status, what stderr names and says to do, and what it must not hold."""
    err = result.stderr
    assert result.returncode == case.exit, (result.returncode, result.stdout[-2000:],
                                            err[-4000:])
    assert "Traceback" not in err, err[-4000:]
    assert "unexpected error" not in err, err[-4000:]
    for text in (*case.names, *case.fix):
        assert place.fill(text) in err, f"{place.fill(text)!r} not in stderr:\n{err[-4000:]}"
    for text in case.forbid:
        assert place.fill(text) not in err, err[-4000:]
    if case.max_stderr is not None:
        assert len(err) <= case.max_stderr, f"{len(err)} characters on stderr"
    if case.exit != 0:
        assert result.stdout == "", result.stdout[-2000:]
    if case.args[0] == "list" and case.exit == 0:  # problems are warnings, one a line
        assert all(line.startswith("warning: ") for line in err.splitlines()), err[-4000:]
        assert GOOD in listed_ids(result)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_bad_input(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if case.needs == "docker" and (problem := docker_engine_problem()):
        unavailable(problem)
    marker = uuid.uuid4().hex
    place = Place(tmp_path, environment(case, tmp_path, marker))
    if case.needs == "sshd":
        place.sshd = request.getfixturevalue("sshd")
    place.spec("kp-ok", {"argv": IPYKERNEL, "display_name": "KP OK", "language": "python"})
    place.config.write_text(place.fill(case.config))
    if case.setup is not None:
        case.setup(place)
    try:
        result = command(place, *(place.fill(a) for a in case.args), stdin=case.stdin)
        alive = leftover_processes(marker)
        assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"
        assert sorted(os.listdir(place.runtime)) == [], "left in the runtime dir"
        for path in case.absent:
            assert not os.path.exists(place.fill(path)), f"{place.fill(path)} was created"
        if "docker" in case.providers and case.needs == "docker":
            kernel_ids = {a for a in case.args if a.startswith("docker/")}
            assert not [c for k in kernel_ids for c in containers_of(k)], "a container"
        check_message(case, place, result)
        # ... and the bad input broke nothing else
        if case.fatal:
            if place.config.is_dir():
                place.config.rmdir()
            place.config.write_text("")
        assert GOOD in listed_ids(command(place, *LIST))
    finally:
        for process in marked_processes(marker):  # last resort: only what this case made
            process.kill()
