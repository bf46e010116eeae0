"""JupyterLab in a real browser with the bridge: the launcher lists every provider's
kernel with its logo; notebooks on a venv and a Docker kernel run, are interrupted and
restarted through the UI; a stopped server leaves no kernel process or container.

Everything is done as a user does it (launcher cards, toolbar, menus, keyboard); the
REST API is only read to know what to expect and what is left."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kernel_providers.testing import docker_image_problem, unavailable
from kernel_providers_jupyter import jupyter_name

pytestmark = [pytest.mark.timeout(600)]

IMAGE = os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm")
CHROMIUM = os.environ.get("KP_TEST_CHROMIUM", "/usr/bin/chromium")
# No browser download works here: Debian's chromium, headless, without any call home.
# --no-sandbox because the tests run as root (CI does).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
MANAGED = "io.kernel-providers.managed"
LAUNCHER = "io.kernel-providers.launcher"  # "host:pid:start" of the launching process
SPEC_NAME = "kp-browser"
SPEC_DISPLAY = "KP Browser spec"
VENV_NAME = "browser"
VENV_KERNEL = f"venv-{VENV_NAME}"
DOCKER_KERNEL = jupyter_name(f"docker/{IMAGE}")
#: A Docker kernel starts a container: give a slow, shared machine time.
START_TIMEOUT_MS = 180_000
RUN_TIMEOUT_MS = 60_000


def docker_client() -> Any:
    """A client of the Docker engine holding the test image (or unavailable())."""
    problem = docker_image_problem(IMAGE)
    if problem:
        unavailable(problem)
    import docker

    return docker.from_env()


def descendants(pid: int) -> set[int]:
    """Pids of every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has ended: only its parent has not reaped it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Lab:
    """A `jupyter lab` subprocess on loopback with the bridge's KernelSpecManager."""

    root: Path
    env: dict[str, str]
    log: Path
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def lab_url(self) -> str:
        # ?reset: every page starts from an empty workspace (no tab of an earlier test)
        return f"{self.url}/lab?reset&token={self.token}"

    @property
    def launcher_stamp(self) -> str:
        """The prefix of the launcher label on the containers this server starts."""
        assert self.process is not None
        return f"{socket.gethostname()}:{self.process.pid}:"

    def start(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
                 f"--port={self.port}", f"--ServerApp.root_dir={self.root}",
                 f"--IdentityProvider.token={self.token}",
                 "--ServerApp.kernel_spec_manager_class="
                 "kernel_providers_jupyter.kernelspecs.KernelProvidersKernelSpecManager",
                 # nothing from the internet: no news feed, update check or PyPI listing
                 "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
                 "--LabApp.check_for_updates_class="
                 "jupyterlab.handlers.announcements.NeverCheckForUpdate",
                 *(["--allow-root"] if os.getuid() == 0 else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.root)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"jupyter lab exited:\n{self.log_tail()}")
            try:
                self.get("/api/status")
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"jupyter lab did not answer in 120 s:\n{self.log_tail()}")

    def get(self, path: str) -> Any:
        """GET a REST path (for inspecting state only: the tests act through the UI)."""
        request = urllib.request.Request(self.url + path,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def status_of(self, path: str) -> int:
        """The HTTP status of a GET (what a browser would get for an <img> source)."""
        request = urllib.request.Request(self.url + path,
                                         headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def stop(self) -> int | None:
        """SIGTERM, as a service manager stops it: the server shuts its kernels down."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"jupyter lab ignored SIGTERM:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _spec_kernel(kernels: Path) -> None:
    """A kernelspec with ipykernel's logos as its own files."""
    from ipykernel.kernelspec import RESOURCES

    folder = kernels / SPEC_NAME
    folder.mkdir(parents=True)
    for logo in Path(RESOURCES).glob("logo-*"):
        shutil.copy(logo, folder / logo.name)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": SPEC_DISPLAY, "language": "python"}))


def _venv_kernel(venvs: Path, downloads: Path) -> Path:
    """A real virtualenv with ipykernel, its kernelspec (and logos) in the venv's
    share/jupyter/kernels as `pip install ipykernel` puts it."""
    from kernel_providers.testing.environments import ipykernel_wheel, make_venv, site_packages

    prefix = make_venv(venvs / VENV_NAME, ipykernel_wheel(downloads))
    # make_venv installs with pip --target, which leaves the wheel's data files (the
    # kernelspec) under site-packages/share; a plain install puts them in the prefix.
    if (site_packages(prefix) / "share").is_dir():
        shutil.copytree(site_packages(prefix) / "share", prefix / "share", dirs_exist_ok=True)
    assert (prefix / "share/jupyter/kernels/python3/logo-64x64.png").is_file()
    return prefix


@dataclass
class LabSetup:
    lab: Lab
    venv_prefix: Path
    runtime: Path


@pytest.fixture(scope="module")
def lab_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSetup]:
    """The isolated JupyterLab server: a spec kernel, a venv kernel and (with an engine)
    the Docker test image's kernel; conda, ssh and example providers disabled."""
    base = tmp_path_factory.mktemp("lab")
    runtime = base / "runtime"
    runtime.mkdir(mode=0o700)
    runtime.chmod(0o700)
    _spec_kernel(base / "jupyter-path" / "kernels")
    prefix = _venv_kernel(base / "venvs", base / "downloads")
    config = base / "kernel_providers.toml"
    # a loaded 2-core machine may need more than the default 10 s to ask Docker
    config.write_text(
        "discovery_timeout = 60\n"
        # only the test's own spec kernel, not the dev environment's python3
        '[providers.spec]\nexclude = ["python3"]\nnative_python = false\n'
        f"[providers.venv]\ndirs = [{json.dumps(str(base / 'venvs'))}]\n"
        "include_cwd = false\n")
    root = base / "notebooks"
    root.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("KERNEL_PROVIDERS_TRACE", "KERNEL_PROVIDERS_NO_AUTOLOAD",
                        "PYTHONWARNINGS", "VIRTUAL_ENV")}
    env.update({
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_DATA_DIR": str(base / "data"),
        "XDG_CACHE_HOME": str(base / "cache"),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_PATH": str(base / "jupyter-path"),
        "IPYTHONDIR": str(base / "ipython"),
        "KERNEL_PROVIDERS_CONFIG": str(config),
        "KERNEL_PROVIDERS_DISABLE": "conda,ssh,example",
    })
    lab = Lab(root=root, env=env, log=base / "jupyter-lab.log")
    try:
        lab.start()
        yield LabSetup(lab=lab, venv_prefix=prefix, runtime=runtime)
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright (or unavailable())."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable(f"playwright is not installed: {exc}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What the page reported: console errors and failed HTTP responses."""

    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"console errors: {self.console_errors}\n"
                f"failed requests: {self.failed}")


@contextmanager
def explained(log: PageLog, lab: Lab) -> Iterator[None]:
    """A failed assertion also tells what the page and the server logged."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log}\n--- server log:\n{lab.log_tail(30)}") from None


@pytest.fixture
def lab_page(browser: Any, lab_setup: LabSetup) -> Iterator[tuple[Any, PageLog]]:
    """A fresh browser context on JupyterLab (an empty workspace), with its log."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    log = PageLog()

    def on_console(message: Any) -> None:
        if message.type == "error":
            log.console_errors.append(message.text)

    def on_response(response: Any) -> None:
        if response.status >= 400:
            log.failed.append(f"{response.status} {response.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    page.goto(lab_setup.lab.lab_url)
    try:
        yield page, log
    finally:
        context.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # not Playwright's 5 s: a shared 2-core machine
    return expect(locator)


def display_name(setup: LabSetup, kernel: str) -> str:
    specs = setup.lab.get("/api/kernelspecs")["kernelspecs"]
    assert kernel in specs, f"{kernel} not served; kernelspecs: {sorted(specs)}"
    return str(specs[kernel]["spec"]["display_name"])


def kernel_status(page: Any) -> Any:
    """The status bar item "<kernel display name> | <status>" of the current notebook."""
    return page.locator('#jp-main-statusbar [title^="Change kernel for"]')


def open_notebook(page: Any, display: str) -> Any:
    """Click the kernel's launcher card; returns the notebook panel once its kernel is
    idle."""
    page.locator(f'.jp-LauncherCard[data-category="Notebook"][title="{display}"]').click(
        timeout=RUN_TIMEOUT_MS)
    panel = page.locator(".jp-NotebookPanel:visible")
    panel.wait_for(timeout=RUN_TIMEOUT_MS)
    expect(kernel_status(page)).to_have_text(f"{display} | Idle", timeout=START_TIMEOUT_MS)
    return panel


def type_and_run(page: Any, panel: Any, index: int, code: str) -> Any:
    """Type code into cell ``index`` and run it with Shift+Enter; returns the cell."""
    cell = panel.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".cm-content").click()
    page.keyboard.insert_text(code)  # as pasted: no auto-closed brackets or indents
    page.keyboard.press("Shift+Enter")
    return cell


def prompt(cell: Any) -> Any:
    return cell.locator(".jp-InputArea-prompt")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def test_launcher_shows_every_providers_kernel_with_its_logo(
        lab_page: tuple[Any, PageLog], lab_setup: LabSetup) -> None:
    docker_client().close()
    page, log = lab_page
    lab = lab_setup.lab
    specs = lab.get("/api/kernelspecs")["kernelspecs"]
    # one kernel of each provider under test: the kernelspec as stock Jupyter has it,
    # the others served by the bridge
    for kernel in (SPEC_NAME, VENV_KERNEL, DOCKER_KERNEL):
        assert kernel in specs, f"{kernel} missing from {sorted(specs)}"
    for kernel in (VENV_KERNEL, DOCKER_KERNEL):
        assert specs[kernel]["spec"]["metadata"]["kernel_providers"]["id"]
    assert specs[SPEC_NAME]["spec"]["display_name"] == SPEC_DISPLAY

    cards = page.locator('.jp-LauncherCard[data-category="Notebook"]')
    expect(cards).to_have_count(len(specs), timeout=RUN_TIMEOUT_MS)
    # Wait until every <img> has loaded or failed; naturalWidth then tells which.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-Launcher img')].every(i => i.complete)",
        timeout=RUN_TIMEOUT_MS)
    shown = {card["title"]: card for card in cards.evaluate_all("""cards => cards.map(c => ({
        title: c.getAttribute('title'),
        imgs: [...c.querySelectorAll('img')].map(i => ({
            src: i.getAttribute('src'), width: i.naturalWidth})),
        badge: c.querySelector('.jp-LauncherCard-noKernelIcon')?.textContent ?? null}))""")}
    assert set(shown) == {s["spec"]["display_name"] for s in specs.values()}

    problems = []
    for kernel in (SPEC_NAME, VENV_KERNEL, DOCKER_KERNEL):
        model = specs[kernel]
        card = shown[model["spec"]["display_name"]]
        logos = {k: v for k, v in model["resources"].items() if k.startswith("logo-")}
        # a Python kernel without logos of its own (the image) shows ipykernel's
        if "logo-64x64" not in logos:
            problems.append(f"{kernel}: no logo in its kernelspec model: {model}")
        # the card shows one of them, and every one is served
        for img in card["imgs"] or [{"src": None, "width": 0}]:
            if img["width"] <= 0:
                status = lab.status_of(img["src"]) if img["src"] else None
                problems.append(f"{kernel}: card logo {img['src']} not loaded (HTTP {status})")
        for key, url in sorted(logos.items()):
            if (status := lab.status_of(url)) != 200:
                problems.append(f"{kernel}: {key} {url} answers HTTP {status}")
    assert not problems, "\n".join(problems) + f"\n{log}\n--- server log:\n{lab.log_tail(20)}"


@pytest.mark.parametrize("kind", ["venv", "docker"])
def test_notebook_runs_interrupts_and_restarts(
        kind: str, lab_page: tuple[Any, PageLog], lab_setup: LabSetup) -> None:
    if kind == "docker":
        docker_client().close()
    page, log = lab_page
    with explained(log, lab_setup.lab):
        display = display_name(lab_setup, VENV_KERNEL if kind == "venv" else DOCKER_KERNEL)
        panel = open_notebook(page, display)

        # run: where does the kernel run?
        cell = type_and_run(page, panel, 0, "import os, socket, sys; x = 42; print("
                                            "socket.gethostname(), sys.prefix, os.getpid())")
        output = cell.locator(".jp-OutputArea")
        expect(output).to_have_text(re.compile(r"^\S+ \S+ \d+\s*$"), timeout=RUN_TIMEOUT_MS)
        hostname, prefix, pid = output.inner_text().split()
        expect(prompt(cell)).to_have_text("[1]:")
        if kind == "venv":
            assert (hostname, prefix) == (socket.gethostname(), str(lab_setup.venv_prefix))
        else:  # in the container
            assert hostname != socket.gethostname() and prefix == "/usr"

        # interrupt a long cell from the toolbar, once it really runs
        cell = type_and_run(page, panel, 1,
                            "import time; print('sleeping', flush=True); time.sleep(60)")
        output = cell.locator(".jp-OutputArea")
        expect(output).to_contain_text("sleeping", timeout=RUN_TIMEOUT_MS)
        expect(prompt(cell)).to_have_text("[*]:")
        expect(kernel_status(page)).to_have_text(f"{display} | Busy")
        started = time.monotonic()
        panel.locator('[data-jp-item-name="interrupt"] jp-button').click()
        expect(output).to_contain_text("KeyboardInterrupt", timeout=30_000)
        assert time.monotonic() - started < 30  # the interrupt ended it, not the sleep
        expect(kernel_status(page)).to_have_text(f"{display} | Idle", timeout=RUN_TIMEOUT_MS)
        expect(prompt(cell)).to_have_text("[2]:")

        # restart from the Kernel menu, confirmed in its dialog: the variable is gone
        page.locator(".lm-MenuBar-item", has_text="Kernel").click()
        page.locator('.lm-Menu-item[data-command="kernelmenu:restart"]').click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("Restart Kernel?")
        dialog.locator(".jp-mod-accept").click()
        expect(dialog).to_have_count(0)
        cell = type_and_run(page, panel, 2, "import os; print('x' in globals(), os.getpid())")
        output = cell.locator(".jp-OutputArea")
        expect(output).to_have_text(re.compile(r"^False \d+\s*$"), timeout=START_TIMEOUT_MS)
        expect(prompt(cell)).to_have_text("[1]:")  # a new kernel counts from 1 again
        expect(kernel_status(page)).to_have_text(f"{display} | Idle", timeout=RUN_TIMEOUT_MS)
        if kind == "venv":  # a new process; the old one has ended
            assert output.inner_text().split()[1] != pid and not alive(int(pid))


def test_server_shutdown_leaves_no_kernel_or_container(
        lab_page: tuple[Any, PageLog], lab_setup: LabSetup) -> None:
    """Runs last (file order): stops the module's server while its kernels run."""
    client = docker_client()
    page, log = lab_page
    lab = lab_setup.lab
    assert lab.process is not None

    def ours() -> list[Any]:  # containers this server's launcher started (not others')
        return [c for c in client.containers.list(all=True, filters={"label": f"{MANAGED}=1"})
                if c.labels.get(LAUNCHER, "").startswith(lab.launcher_stamp)]

    def strays() -> list[str]:  # processes of a kernel of this test, whoever's child
        marks = (str(lab_setup.runtime), str(lab_setup.venv_prefix))
        return [f"{p}: {cmdline(p)}" for p in (int(d.name) for d in Path("/proc").glob("[0-9]*"))
                if any(m in cmdline(p) for m in marks) and alive(p)]

    try:
        with explained(log, lab):
            running = {k["name"] for k in lab.get("/api/kernels")}
            for kernel in (VENV_KERNEL, DOCKER_KERNEL):
                if kernel not in running:  # the test runs alone: start them as a user does
                    page.goto(lab.lab_url)
                    open_notebook(page, display_name(lab_setup, kernel))
            processes = descendants(lab.process.pid)
            assert ours(), "no container of this server's Docker kernel"
            assert strays(), "no process of the venv kernel"

            lab.stop()
            # the server has exited; give the engine a moment to remove the containers
            deadline = time.monotonic() + 30
            while ours() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not ours(), [f"{c.short_id} {c.status}" for c in ours()]
            # within 5 s (docs/reliability.md): the server's reaper may still be finishing
            deadline = time.monotonic() + 5
            while [p for p in processes if alive(p)] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not [p for p in processes if alive(p)], \
                [f"{p}: {cmdline(p)}" for p in processes if alive(p)]
            assert not strays()
            assert not list(lab_setup.runtime.glob("kernel-*.json")), "connection files left"
    finally:
        client.close()
