"""Real Jupyter clients on the kernelspecs ``kernel-providers jupyter sync`` writes, each
on a virtualenv kernel and a Docker kernel: ``jupyter console``, ``jupyter execute``,
papermill, ``jupyter nbconvert --execute``, ``jupyter kernelspec list``, a script that runs
the kernelspec's argv itself (the shim), ``start_new_kernel``, a forking process, and
``start_kernel`` arguments and transports through the bridge.

One module-wide set-up: private Jupyter dirs and configuration, one real virtualenv, one
run of the real ``kernel-providers jupyter sync``. Every client runs as a subprocess in
that environment; each test checks that the code ran in the right kernel and that nothing
(process, container, runtime file) is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kernel_providers.testing import docker_image_problem, process_gone, unavailable
from kernel_providers.testing.environments import ipykernel_wheel, make_venv
from kernel_providers_jupyter.kernelspec_files import PROVISIONER, SHIM_MODULE, jupyter_name

IMAGE = os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
KERNEL_IDS = {"venv": "venv/kp-clients", "docker": f"docker/{IMAGE}"}
NAMES = {kind: jupyter_name(kernel_id) for kind, kernel_id in KERNEL_IDS.items()}
BIN = Path(sys.executable).parent
WAIT = 180.0  # seconds one client run may take on a slow, shared machine
MARK = "KP-RESULT"
#: What every client runs: where the code ran, as one JSON line.
CODE = ("import json, os, socket, sys; print('KP-RESULT' + json.dumps({'prefix': sys.prefix,"
        " 'host': socket.gethostname(), 'pid': os.getpid()}))")
MANAGED, LAUNCHER = "io.kernel-providers.managed", "io.kernel-providers.launcher"


# --- set-up -------------------------------------------------------------------------------


@dataclass
class Setup:
    """The module's environment: folders, the synced kernelspecs, Docker's state."""

    root: Path
    env: dict[str, str]
    venv: Path
    kernels: Path  # JUPYTER_DATA_DIR/kernels, where sync writes
    runtime: Path
    sync: subprocess.CompletedProcess[str]
    docker_problem: str | None  # why the Docker kernel cannot run here, or None

    def runtime_files(self) -> set[str]:
        # The bridge's KernelSpecManager keeps kernelspec folders there by design.
        return set(os.listdir(self.runtime)) - {"kernel-providers-kernelspecs"}


def client_env(root: Path, config: Path, data: Path) -> dict[str, str]:
    """This machine's environment with private Jupyter dirs and kernel-providers config."""
    env = dict(os.environ)
    for name in ("KERNEL_PROVIDERS_TRACE", "KERNEL_PROVIDERS_NO_AUTOLOAD", "PYTHONWARNINGS",
                 "JUPYTER_CONFIG_PATH", "JUPYTER_PREFER_ENV_PATH"):
        env.pop(name, None)
    runtime = root / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # jupyter finds its subcommands
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTER_CONFIG_DIR": str(root / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_PATH": str(root / "jupyter-path"),
        "IPYTHONDIR": str(root / "ipython"),
        "XDG_CACHE_HOME": str(root / "cache"),  # the shim's exec plans
        "KERNEL_PROVIDERS_CONFIG": str(config),
        "KERNEL_PROVIDERS_DISABLE": "conda,ssh,example",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    })
    return env


def write_config(path: Path, envs: Path) -> Path:
    path.write_text(f"[providers.venv]\ndirs = [{json.dumps(str(envs))}]\n"
                    "include_cwd = false\n")
    return path


def sync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``kernel-providers jupyter sync`` command."""
    return subprocess.run([str(BIN / "kernel-providers"), "jupyter", "sync", *args], env=env,
                          capture_output=True, text=True, timeout=WAIT, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("clients")
    wheels = os.environ.get("KP_TEST_WHEELS")
    wheel = ipykernel_wheel(Path(wheels) if wheels else root / "wheels")
    venv = make_venv(root / "envs" / "kp-clients", wheel)
    env = client_env(root, write_config(root / "kernel_providers.toml", root / "envs"),
                     root / "jupyter-data")
    problem = docker_image_problem(IMAGE)
    if problem is not None:
        env["KERNEL_PROVIDERS_DISABLE"] += ",docker"
    result = sync(env)
    yield Setup(root, env, venv, root / "jupyter-data" / "kernels", root / "runtime", result,
                problem)


@pytest.fixture(params=sorted(KERNEL_IDS))
def kind(request: pytest.FixtureRequest, setup: Setup) -> str:
    """``venv`` or ``docker`` (the Docker one needs an engine: fails in CI, else skips)."""
    if request.param == "docker" and setup.docker_problem:
        unavailable(setup.docker_problem)
    return str(request.param)


# --- helpers ------------------------------------------------------------------------------


@dataclass
class Ran:
    pid: int
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"exit {self.returncode}\n--- stdout\n{self.stdout[-6000:]}\n--- stderr\n"
                f"{self.stderr[-6000:]}")


def run(setup: Setup, *argv: str, stdin: str = "", cwd: Path | None = None,
        timeout: float = WAIT) -> Ran:
    """Run a client to its end in its own session (killed, and the test failed, if it
    outlives ``timeout``)."""
    proc = subprocess.Popen(argv, env=setup.env, cwd=cwd or setup.root, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session this test started
        out, err = proc.communicate()
        remove_containers(containers_of([proc.pid]))
        pytest.fail(f"{argv} did not end within {timeout:g} s\n{Ran(proc.pid, -9, out, err)}")
    return Ran(proc.pid, proc.returncode, out, err)


def results(text: str) -> list[dict[str, Any]]:
    """Every result line the test code printed."""
    return [json.loads(m) for m in re.findall(rf"{MARK}(\{{.*?\}})", text)]


def result_of(text: str, ran: Ran | None = None) -> dict[str, Any]:
    found = results(text)
    assert len(found) == 1, f"expected one result line in:\n{text}\n{ran or ''}"
    return found[0]


def check_ran_in(kind: str, setup: Setup, result: dict[str, Any]) -> None:
    """The code ran in the venv (its sys.prefix), or in a container (another host)."""
    if kind == "venv":
        assert os.path.realpath(result["prefix"]) == os.path.realpath(setup.venv), result
    else:
        assert result["host"] != socket.gethostname(), result
        assert result["prefix"] == "/usr", result


def containers_of(pids: Iterable[int]) -> list[str]:
    """Containers of ours launched on this host by one of ``pids`` (their launcher label)."""
    wanted = set(pids)
    if not wanted or docker_image_problem(IMAGE) is not None:
        return []
    import docker

    client = docker.from_env()
    try:
        found = []
        for container in client.containers.list(all=True, filters={"label": f"{MANAGED}=1"}):
            host, _, rest = container.labels.get(LAUNCHER, "").partition(":")
            pid = rest.partition(":")[0]
            if host == socket.gethostname() and pid.isdigit() and int(pid) in wanted:
                found.append(container.id)
        return found
    finally:
        client.close()


def remove_containers(ids: Iterable[str]) -> None:
    """Remove containers this test made (never anyone else's)."""
    ids = list(ids)
    if not ids:
        return
    import docker

    client = docker.from_env()
    try:
        for container_id in ids:
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(container_id).remove(force=True)
    finally:
        client.close()


def leftovers(setup: Setup, launchers: Iterable[int], runtime_before: set[str],
              kernel_pids: Iterable[int] = ()) -> list[str]:
    """What the runs of ``launchers`` left: containers (removed here), kernel processes,
    runtime files. Waits a little for things that end on their own."""
    found: list[str] = []
    launchers = list(launchers)
    deadline = time.monotonic() + 20
    containers = containers_of(launchers)
    while containers and time.monotonic() < deadline:
        time.sleep(0.5)
        containers = containers_of(launchers)
    if containers:
        remove_containers(containers)
        found.append(f"containers {[c[:12] for c in containers]}")
    found += [f"kernel process {pid}" for pid in kernel_pids if not process_gone(pid)]
    files = setup.runtime_files() - runtime_before
    if files:
        found.append(f"runtime files {sorted(files)}")
    return found


def write_notebook(path: Path, parameters: bool = False) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    cells = []
    code = CODE
    if parameters:
        cell = nbformat.v4.new_code_cell("marker = 'default'")
        cell.metadata["tags"] = ["parameters"]
        cells.append(cell)
        code = CODE.replace("os.getpid()}", "os.getpid(), 'marker': marker}")
    cells.append(nbformat.v4.new_code_cell(code))
    nb.cells = cells
    nbformat.write(nb, str(path))
    return path


def notebook_output(path: Path) -> str:
    """The stream text of an executed notebook."""
    nb = json.loads(path.read_text())
    return "".join("".join(out.get("text", "")) if isinstance(out.get("text"), list)
                   else out.get("text", "")
                   for cell in nb["cells"] for out in cell.get("outputs", ()))


def script(setup: Setup, name: str, source: str) -> Path:
    path = setup.root / "scripts" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(source)
    return path


# --- sync ---------------------------------------------------------------------------------


def test_sync_writes_one_kernelspec_per_provider_kernel(setup: Setup) -> None:
    assert setup.sync.returncode == 0, setup.sync
    kinds = ["venv"] if setup.docker_problem else ["venv", "docker"]
    assert sorted(p.name for p in setup.kernels.iterdir()) == sorted(NAMES[k] for k in kinds)
    for kind in kinds:
        folder = setup.kernels / NAMES[kind]
        assert f"write: {folder} ({KERNEL_IDS[kind]})" in setup.sync.stdout
        spec = json.loads((folder / "kernel.json").read_text())
        assert spec["argv"] == [sys.executable, "-m", SHIM_MODULE, KERNEL_IDS[kind],
                                "-f", "{connection_file}"]
        assert spec["language"] == "python" and spec["display_name"]
        assert spec["env"] == {}
        assert spec["metadata"]["kernel_providers"] == {
            "id": KERNEL_IDS[kind], "provider": kind, "synced": True}
        assert spec["metadata"]["kernel_provisioner"] == {
            "provisioner_name": PROVISIONER, "config": {"kernel_providers_id": KERNEL_IDS[kind]}}
        for logo in ("logo-32x32.png", "logo-64x64.png"):  # real copies, not symlinks
            path = folder / logo
            assert path.is_file() and not path.is_symlink() and path.stat().st_size > 0
    assert "spec/" not in setup.sync.stdout  # kernelspecs stay as they are
    if setup.docker_problem:
        unavailable(setup.docker_problem)


def test_sync_again_changes_nothing(setup: Setup) -> None:
    before = {p: p.read_bytes() for p in setup.kernels.rglob("*") if p.is_file()}
    again = sync(setup.env)
    assert again.returncode == 0, again
    assert not re.search(r"^(write|update|remove):", again.stdout, re.M), again.stdout
    assert f"{len(list(setup.kernels.iterdir()))} unchanged in {setup.kernels}" in again.stdout
    assert {p: p.read_bytes() for p in setup.kernels.rglob("*") if p.is_file()} == before


def test_sync_removes_gone_kernels_keeps_foreign_folders_and_dry_run(setup: Setup,
                                                                     tmp_path: Path) -> None:
    # Its own environments folder and data dir: copies of the module's venv.
    envs = tmp_path / "envs"
    for name in ("kp-gone", "kp-clash"):
        shutil.copytree(setup.venv, envs / name, symlinks=True)
    data = tmp_path / "data"
    env = client_env(tmp_path, write_config(tmp_path / "kp.toml", envs), data)
    env["KERNEL_PROVIDERS_DISABLE"] = "conda,ssh,example,docker"
    kernels = data / "kernels"
    foreign = kernels / "venv-kp-clash"  # a folder we did not write, with our name
    foreign.mkdir(parents=True)
    (foreign / "kernel.json").write_text(json.dumps(
        {"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "mine", "language": "python"}))
    snapshot = {p.name: p.read_bytes() for p in foreign.iterdir()}

    dry = sync(env, "--dry-run")
    assert dry.returncode == 0, dry
    assert f"would write: {kernels / 'venv-kp-gone'} (venv/kp-gone)" in dry.stdout
    assert sorted(p.name for p in kernels.iterdir()) == ["venv-kp-clash"]

    done = sync(env)
    assert done.returncode == 0, done
    assert f"write: {kernels / 'venv-kp-gone'} (venv/kp-gone)" in done.stdout
    assert f"{foreign}: exists and was not written by kernel-providers" in done.stderr
    assert {p.name: p.read_bytes() for p in foreign.iterdir()} == snapshot

    shutil.rmtree(envs / "kp-gone")
    dry = sync(env, "--dry-run")
    assert dry.returncode == 0, dry
    assert f"would remove: {kernels / 'venv-kp-gone'} (venv/kp-gone" in dry.stdout
    assert (kernels / "venv-kp-gone" / "kernel.json").is_file()

    done = sync(env)
    assert done.returncode == 0, done
    assert f"remove: {kernels / 'venv-kp-gone'} (venv/kp-gone: no longer offered)" \
        in done.stdout
    assert sorted(p.name for p in kernels.iterdir()) == ["venv-kp-clash"]
    assert {p.name: p.read_bytes() for p in foreign.iterdir()} == snapshot


def test_sync_watch_picks_up_new_and_removed_kernels(setup: Setup, tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    envs.mkdir()
    data = tmp_path / "data"
    env = client_env(tmp_path, write_config(tmp_path / "kp.toml", envs), data)
    env["KERNEL_PROVIDERS_DISABLE"] = "conda,ssh,example,docker"
    folder = data / "kernels" / "venv-kp-watched"
    watch = subprocess.Popen([str(BIN / "kernel-providers"), "jupyter", "sync", "--watch",
                              "0.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, stdin=subprocess.DEVNULL)
    try:
        def until(condition: Any, what: str) -> None:
            deadline = time.monotonic() + 60
            while not condition():
                assert watch.poll() is None, f"--watch ended: {watch.communicate()}"
                assert time.monotonic() < deadline, what
                time.sleep(0.2)

        shutil.copytree(setup.venv, envs / "kp-watched", symlinks=True)  # a new venv
        until(lambda: (folder / "kernel.json").is_file(), "the new venv was not synced")
        shutil.rmtree(envs / "kp-watched")
        until(lambda: not folder.exists(), "the removed venv's kernelspec stayed")
    finally:
        watch.send_signal(signal.SIGINT)
        out, _ = watch.communicate(timeout=WAIT)
    assert f"write: {folder} (venv/kp-watched)" in out
    assert f"remove: {folder} (venv/kp-watched: no longer offered)" in out


# --- jupyter kernelspec list --------------------------------------------------------------


def test_kernelspec_list(setup: Setup, kind: str) -> None:
    name, folder = NAMES[kind], setup.kernels / NAMES[kind]
    plain = run(setup, str(BIN / "jupyter"), "kernelspec", "list")
    assert plain.returncode == 0, plain
    assert re.search(rf"^\s*{re.escape(name)}\s+{re.escape(str(folder))}\s*$", plain.stdout,
                     re.M), plain
    listed = run(setup, str(BIN / "jupyter"), "kernelspec", "list", "--json")
    assert listed.returncode == 0, listed
    entry = json.loads(listed.stdout)["kernelspecs"][name]
    assert entry["resource_dir"] == str(folder)
    assert entry["spec"]["argv"][2:4] == [SHIM_MODULE, KERNEL_IDS[kind]]
    assert entry["spec"]["metadata"]["kernel_provisioner"]["provisioner_name"] == PROVISIONER
    missing = run(setup, str(BIN / "jupyter"), "kernelspec", "list", "--missing", "--json")
    assert missing.returncode == 0, missing
    assert name not in json.loads(missing.stdout)["kernelspecs"]


# --- clients that read the kernelspec and start it through the provisioner ----------------


def test_jupyter_console(setup: Setup, kind: str) -> None:
    before = setup.runtime_files()
    ran = run(setup, str(BIN / "jupyter"), "console", "--kernel", NAMES[kind],
              "--simple-prompt", stdin=CODE + "\n")
    assert ran.returncode == 0, ran
    assert "Shutting down kernel" in ran.stdout, ran
    result = result_of(ran.stdout, ran)
    check_ran_in(kind, setup, result)
    # The console only sends shutdown_request and exits, never calling the provisioner's
    # cleanup: the provisioner cleans up at exit, as a stock kernel ends with its manager.
    assert not leftovers(setup, [ran.pid], before, [result["pid"]] if kind == "venv" else [])


def test_jupyter_execute(setup: Setup, kind: str) -> None:
    before = setup.runtime_files()
    nb = write_notebook(setup.root / f"execute-{kind}.ipynb")
    out = setup.root / f"executed-{kind}.ipynb"
    ran = run(setup, str(BIN / "jupyter"), "execute", f"--kernel_name={NAMES[kind]}",
              f"--output={out.name}", nb.name)
    assert ran.returncode == 0, ran
    result = result_of(notebook_output(out), ran)
    check_ran_in(kind, setup, result)
    assert not leftovers(setup, [ran.pid], before, [result["pid"]] if kind == "venv" else [])


def test_papermill(setup: Setup, kind: str) -> None:
    before = setup.runtime_files()
    nb = write_notebook(setup.root / f"papermill-{kind}.ipynb", parameters=True)
    out = setup.root / f"papermill-out-{kind}.ipynb"
    ran = run(setup, str(BIN / "papermill"), "-k", NAMES[kind], "-p", "marker", "injected",
              str(nb), str(out))
    assert ran.returncode == 0, ran
    result = result_of(notebook_output(out), ran)
    check_ran_in(kind, setup, result)
    assert result["marker"] == "injected"
    assert not leftovers(setup, [ran.pid], before, [result["pid"]] if kind == "venv" else [])


def test_nbconvert_execute(setup: Setup, kind: str) -> None:
    before = setup.runtime_files()
    nb = write_notebook(setup.root / f"nbconvert-{kind}.ipynb")
    ran = run(setup, str(BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
              f"--ExecutePreprocessor.kernel_name={NAMES[kind]}", "--output",
              f"nbconvert-out-{kind}.ipynb", nb.name)
    assert ran.returncode == 0, ran
    result = result_of(notebook_output(setup.root / f"nbconvert-out-{kind}.ipynb"), ran)
    check_ran_in(kind, setup, result)
    assert not leftovers(setup, [ran.pid], before, [result["pid"]] if kind == "venv" else [])


# --- a script that runs the kernelspec's argv itself (the shim) ---------------------------

SHIM_CLIENT = r'''
"""Run a kernelspec's argv on a connection file of our own, as VS Code does."""
import json, os, secrets, signal, subprocess, sys, time
from queue import Empty

from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file
from jupyter_client.kernelspec import KernelSpecManager

name, key, code = sys.argv[1], sys.argv[2], sys.argv[3]
report = {}
spec = KernelSpecManager().get_kernel_spec(name)  # stock: the synced folder
path = os.path.join(os.environ["JUPYTER_RUNTIME_DIR"], f"client-{os.getpid()}.json")
cf, _ = write_connection_file(path, key=secrets.token_hex(32).encode() if key == "random"
                              else b"")
report["connection_file"] = cf
argv = [a.replace("{connection_file}", cf) for a in spec.argv]
proc = subprocess.Popen(argv, start_new_session=True)
report["pid"] = proc.pid
print("KP-PID", proc.pid, flush=True)
kc = BlockingKernelClient()
kc.load_connection_file(cf)
kc.start_channels()
try:
    if key == "empty":  # what a single plain wait_for_ready does while the kernel starts
        started = time.monotonic()
        try:
            kc.wait_for_ready(timeout=60)
            report["plain_wait_for_ready"] = "ready"
        except RuntimeError as exc:
            report["plain_wait_for_ready"] = f"RuntimeError: {exc}"
        report["plain_seconds"] = round(time.monotonic() - started, 1)
    # A robust script retries: without a manager, wait_for_ready takes a heartbeat not
    # yet beating (a container still starting) for a dead kernel.
    deadline = time.monotonic() + 120
    while True:
        try:
            kc.wait_for_ready(timeout=10)
            break
        except RuntimeError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    texts = []
    hook = lambda m: texts.append(m["content"].get("text", ""))
    kc.execute_interactive(code, output_hook=hook, timeout=60)
    report["output"] = "".join(texts)
    # Interrupt a long cell with SIGINT to the process the client started.
    msg_id = kc.execute("import time; time.sleep(60)")
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            break
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGINT)
    while True:
        reply = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    report["interrupted"] = reply["content"].get("ename")
    for _ in range(20):  # an old ipykernel aborts what comes right after an error
        status = kc.execute_interactive("1 + 1", timeout=60, output_hook=lambda m: None)[
            "content"]["status"]
        if status != "aborted":
            break
        time.sleep(0.5)
    report["after_interrupt"] = status
    proc.send_signal(signal.SIGTERM)
    report["exit"] = proc.wait(60)
finally:
    kc.stop_channels()
    if proc.poll() is None:
        proc.kill()
        proc.wait()
report["connection_file_kept"] = os.path.exists(cf)
print("KP-REPORT" + json.dumps(report), flush=True)
'''


def run_shim_client(setup: Setup, kind: str, key: str) -> tuple[Ran, dict[str, Any]]:
    before = setup.runtime_files()
    path = script(setup, "shim_client.py", SHIM_CLIENT)
    ran = run(setup, sys.executable, str(path), NAMES[kind], key, CODE)
    pids = [int(p) for p in re.findall(r"^KP-PID (\d+)$", ran.stdout, re.M)]
    found = re.findall(r"^KP-REPORT(.*)$", ran.stdout, re.M)
    left = leftovers(setup, pids, before | {f"client-{ran.pid}.json"}, pids)
    assert ran.returncode == 0 and found, ran
    report: dict[str, Any] = json.loads(found[0])
    check_ran_in(kind, setup, result_of(report["output"], ran))
    assert not left, f"left behind: {left}"
    assert report["connection_file_kept"], "the shim must not delete the client's file"
    return ran, report


def test_shim_from_a_plain_script(setup: Setup, kind: str) -> None:
    _, report = run_shim_client(setup, kind, "random")
    assert report["interrupted"] == "KeyboardInterrupt", report
    assert report["after_interrupt"] == "ok", report
    if kind == "venv":  # the kernel replaced the shim: the client's process is the kernel
        assert result_of(report["output"])["pid"] == report["pid"], report
    else:  # the shim shut the kernel down and exits with its status
        assert report["exit"] == 0, report
    Path(report["connection_file"]).unlink()


def test_shim_with_an_empty_key_and_plain_wait_for_ready(setup: Setup) -> None:
    """jupyter_client's write_connection_file makes an empty key by default; the kernel
    must answer on it (not on a key of its own). Also records what one plain
    ``wait_for_ready(timeout=60)`` does while a container starts."""
    if setup.docker_problem:
        unavailable(setup.docker_problem)
    _, report = run_shim_client(setup, "docker", "empty")
    assert report["interrupted"] == "KeyboardInterrupt", report
    print(f"plain wait_for_ready(timeout=60) on a starting Docker kernel:"
          f" {report['plain_wait_for_ready']} after {report['plain_seconds']} s")
    Path(report["connection_file"]).unlink()


# --- scripts using jupyter_client and the bridge ------------------------------------------

START_NEW_KERNEL = r'''
import json, sys
from jupyter_client.manager import start_new_kernel

km, kc = start_new_kernel(kernel_name=sys.argv[1], startup_timeout=120)
texts = []
reply = kc.execute_interactive(sys.argv[2], timeout=60,
                               output_hook=lambda m: texts.append(m["content"].get("text", "")))
kc.stop_channels()
km.shutdown_kernel()
print("KP-REPORT" + json.dumps({"status": reply["content"]["status"], "output": "".join(texts),
                                "alive": km.is_alive(), "manager": type(km).__name__}))
'''


def test_start_new_kernel(setup: Setup, kind: str) -> None:
    before = setup.runtime_files()
    ran = run(setup, sys.executable, str(script(setup, "start_new.py", START_NEW_KERNEL)),
              NAMES[kind], CODE)
    assert ran.returncode == 0, ran
    report = json.loads(re.findall(r"^KP-REPORT(.*)$", ran.stdout, re.M)[0])
    assert report["status"] == "ok" and report["alive"] is False, report
    result = result_of(report["output"], ran)
    check_ran_in(kind, setup, result)
    assert not leftovers(setup, [ran.pid], before, [result["pid"]] if kind == "venv" else [])


FORK = r'''
import asyncio, json, multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor

from kernel_providers_jupyter import KernelProvidersKernelManager, KernelProvidersKernelSpecManager


async def run(name, code):
    km = KernelProvidersKernelManager(kernel_name=name)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        texts = []
        await kc.execute_interactive(
            code, timeout=60, output_hook=lambda m: texts.append(m["content"].get("text", "")))
        return "".join(texts)
    finally:
        kc.stop_channels()
        await km.shutdown_kernel()


def child(name, code):
    return os.getpid(), asyncio.run(run(name, code))


name, code = sys.argv[1], sys.argv[2]
specs = KernelProvidersKernelSpecManager().get_all_specs()
report = {"specs": sorted(specs), "parent": asyncio.run(run(name, code))}
with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
    report["child_pid"], report["child"] = pool.submit(child, name, code).result(timeout=150)
print("KP-REPORT" + json.dumps(report), flush=True)
'''


def test_fork_after_using_the_bridge(setup: Setup, kind: str) -> None:
    before = setup.runtime_files()
    ran = run(setup, sys.executable, str(script(setup, "fork.py", FORK)), NAMES[kind], CODE)
    assert ran.returncode == 0, ran
    report = json.loads(re.findall(r"^KP-REPORT(.*)$", ran.stdout, re.M)[0])
    assert NAMES[kind] in report["specs"]
    parent, child = result_of(report["parent"], ran), result_of(report["child"], ran)
    check_ran_in(kind, setup, parent)
    check_ran_in(kind, setup, child)
    kernels = [parent["pid"], child["pid"]] if kind == "venv" else []
    assert not leftovers(setup, [ran.pid, report["child_pid"]], before, kernels)


START_KERNEL = r'''
import asyncio, json, os, sys
from jupyter_client.manager import AsyncKernelManager

from kernel_providers_jupyter import KernelProvidersKernelSpecManager

CODE = ("import json, os, sys; print('KP-RESULT' + json.dumps({'prefix': sys.prefix,"
        " 'pid': os.getpid(), 'cwd': os.getcwd(), 'mark': os.environ.get('KP_CLIENTS_MARK'),"
        " 'hist_file': str(get_ipython().history_manager.hist_file)}))")


async def main(name, transport, cwd):
    report = {}
    km = AsyncKernelManager(kernel_name=name, transport=transport,
                            kernel_spec_manager=KernelProvidersKernelSpecManager())
    try:
        await km.start_kernel(extra_arguments=["--HistoryManager.hist_file=:memory:"],
                              cwd=cwd, env={"KP_CLIENTS_MARK": "from-the-client"})
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        return report
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        texts = []
        await kc.execute_interactive(
            CODE, timeout=60, output_hook=lambda m: texts.append(m["content"].get("text", "")))
        report["output"] = "".join(texts)
        report["connection"] = {k: v for k, v in km.get_connection_info().items() if k != "key"}
    finally:
        kc.stop_channels()
        await km.shutdown_kernel()
    return report


name, transport = sys.argv[1], sys.argv[2]
cwd = sys.argv[3] if len(sys.argv) > 3 else None
print("KP-REPORT" + json.dumps(asyncio.run(main(name, transport, cwd))), flush=True)
'''


def test_start_kernel_arguments_reach_the_kernel(setup: Setup, kind: str) -> None:
    before = setup.runtime_files()
    workdir = setup.root / f"workdir-{kind}"
    workdir.mkdir(exist_ok=True)
    ran = run(setup, sys.executable, str(script(setup, "start_kernel.py", START_KERNEL)),
              NAMES[kind], "tcp", str(workdir))
    assert ran.returncode == 0, ran
    report = json.loads(re.findall(r"^KP-REPORT(.*)$", ran.stdout, re.M)[0])
    assert "error" not in report, report
    result = result_of(report["output"], ran)
    assert result["mark"] == "from-the-client"  # env: what the client added
    assert result["hist_file"] == ":memory:"  # extra_arguments
    if kind == "venv":
        assert os.path.realpath(result["prefix"]) == os.path.realpath(setup.venv)
        assert result["cwd"] == str(workdir)
    else:
        # Without [providers.docker] mount_cwd the container has none of this machine's
        # folders: the client's cwd does not apply, the image's working dir does.
        import docker

        client = docker.from_env()
        try:
            image_dir = client.images.get(IMAGE).attrs["Config"].get("WorkingDir") or "/"
        finally:
            client.close()
        assert result["prefix"] == "/usr"
        assert result["cwd"] == image_dir
    assert not leftovers(setup, [ran.pid], before, [result["pid"]] if kind == "venv" else [])


def test_ipc_transport(setup: Setup, kind: str) -> None:
    before = setup.runtime_files()
    workdir = setup.root / f"ipc-{kind}"  # jupyter_client's ipc paths are relative
    workdir.mkdir(exist_ok=True)
    ran = run(setup, sys.executable, str(script(setup, "start_kernel.py", START_KERNEL)),
              NAMES[kind], "ipc", cwd=workdir)
    assert ran.returncode == 0, ran
    report = json.loads(re.findall(r"^KP-REPORT(.*)$", ran.stdout, re.M)[0])
    if kind == "venv":
        assert "error" not in report, report
        assert report["connection"]["transport"] == "ipc"
        result = result_of(report["output"], ran)
        assert os.path.realpath(result["prefix"]) == os.path.realpath(setup.venv)
        assert list(workdir.iterdir()) == []  # the socket files are removed
        kernels = [result["pid"]]
    else:  # never silently tcp
        assert "ipc" in report.get("error", ""), report
        assert "LaunchFailed" in report["error"], report
        kernels = []
    assert not leftovers(setup, [ran.pid], before, kernels)
