"""The bridge with real Jupyter clients: nbclient, nbconvert and a jupyter_server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from kernel_providers_jupyter import (
    KernelProvidersKernelManager,
    KernelProvidersKernelSpecManager,
    jupyter_name,
)

CODE = "import socket, sys; print(socket.gethostname()); print(sys.prefix)"


def run_notebook(kernel_name: str) -> list[str]:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CODE),
                                         nbformat.v4.new_code_cell("6 * 7")])
    NotebookClient(nb, kernel_name=kernel_name, timeout=120,
                   kernel_manager_class=KernelProvidersKernelManager).execute()
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "42"
    return str(nb.cells[0].outputs[0]["text"]).splitlines()


def test_names_are_valid_stable_and_reversible(jupyter_env: Path) -> None:
    assert jupyter_name("spec/python3") == "python3"
    assert jupyter_name("conda/base") == "conda-base"
    assert jupyter_name("conda/analysis/ir") == "conda-analysis-ir"
    odd = jupyter_name("docker/my.registry/img:1.2")
    assert odd.startswith("docker-my.registry-img-1.2-") and odd == jupyter_name(
        "docker/my.registry/img:1.2")
    specs = KernelProvidersKernelSpecManager().get_all_specs()
    stock = specs["kp-bridge"]  # on Jupyter's path: exactly as stock jupyter_client has it
    assert stock["spec"]["display_name"] == "KP Bridge"
    assert stock["spec"]["argv"][1:3] == ["-m", "ipykernel_launcher"]
    assert "kernel_provisioner" not in stock["spec"]["metadata"]
    bridged = specs["kp-bridge-only"]  # only kernel-providers sees it
    assert bridged["spec"]["metadata"]["kernel_providers"]["id"] == "spec/kp-bridge-only"
    assert bridged["spec"]["metadata"]["kernel_provisioner"]["provisioner_name"] == \
        "kernel-providers-provisioner"
    assert bridged["spec"]["argv"][1:4] == ["-m", "kernel_providers_jupyter.shim",
                                            "spec/kp-bridge-only"]
    for name in specs:
        assert all((c.isalnum() and c.islower()) or c.isdigit() or c in "._-" for c in name)


def test_nbclient_runs_a_kernelspec_kernel(jupyter_env: Path) -> None:
    hostname, prefix = run_notebook("kp-bridge-only")
    assert hostname == socket.gethostname() and prefix == sys.prefix


def test_nbclient_runs_a_docker_kernel(docker_kernel: str, our_containers: Any) -> None:
    before = our_containers()
    hostname, prefix = run_notebook(docker_kernel)
    assert hostname != socket.gethostname() and prefix == "/usr"
    assert our_containers() == before  # the container went with the kernel


def test_nbconvert_executes_with_a_bridged_name(jupyter_env: Path, tmp_path: Path) -> None:
    from kernel_providers.cli import main

    assert main(["jupyter", "enable"]) == 0
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('converted')")])
    source = tmp_path / "in.ipynb"
    nbformat.write(nb, source)
    result = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to", "notebook",
         "--ExecutePreprocessor.kernel_name=kp-bridge-only", "--output", "out.ipynb",
         "--ExecutePreprocessor.store_widget_state=False",
         str(source)], capture_output=True, text=True, timeout=180, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-2000:]
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert out.cells[0].outputs[0]["text"] == "converted\n"


def test_enable_and_disable_write_jupyters_config(jupyter_env: Path, capsys: Any) -> None:
    from kernel_providers.cli import main

    server = jupyter_env / "jupyter_server_config.json"
    server.write_text(json.dumps({"ServerApp": {"port": 9999}}))  # a setting of the user's
    assert main(["jupyter", "enable"]) == 0
    config = json.loads(server.read_text())
    assert config["ServerApp"] == {
        "port": 9999, "kernel_spec_manager_class":
            "kernel_providers_jupyter.kernelspecs.KernelProvidersKernelSpecManager"}
    nbconvert = json.loads((jupyter_env / "jupyter_nbconvert_config.json").read_text())
    assert nbconvert["ExecutePreprocessor"]["kernel_manager_class"].endswith(
        "KernelProvidersKernelManager")
    assert main(["jupyter", "status"]) == 0
    assert capsys.readouterr().out.count("enabled:") == 2
    assert main(["jupyter", "disable"]) == 0
    assert json.loads(server.read_text()) == {"ServerApp": {"port": 9999}}


class Server:
    """A real `jupyter server` on loopback with the bridge enabled."""

    def __init__(self, config: Path, root: Path, cwd: Path | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = secrets.token_hex(16)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "server", "--no-browser", "--ip=127.0.0.1",
             f"--port={self.port}", f"--ServerApp.root_dir={root}",
             f"--IdentityProvider.token={self.token}",
             *(["--allow-root"] if os.getuid() == 0 else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy(), cwd=cwd)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = ""  # its stderr, once stopped

    async def fetch(self, path: str) -> bytes:
        from tornado.httpclient import AsyncHTTPClient

        response = await AsyncHTTPClient().fetch(
            self.url + path, headers={"Authorization": f"token {self.token}"})
        return bytes(response.body)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        response = await AsyncHTTPClient().fetch(HTTPRequest(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"},
            body=None if body is None and method in ("GET", "DELETE") else json.dumps(body or {}),
            request_timeout=180), raise_error=False)
        if response.code >= 400:
            raise AssertionError(f"{method} {path}: {response.code} {response.body[:500]!r}")
        return json.loads(response.body) if response.body else None

    async def ready(self) -> None:
        for _ in range(300):
            try:
                await self.request("GET", "/api/status")
                return
            except Exception:
                if self.process.poll() is not None:
                    err = self.process.stderr.read()  # type: ignore[union-attr]
                    raise AssertionError(err.decode()[-3000:]) from None
                await asyncio.sleep(0.1)
        raise AssertionError("jupyter server did not start")

    async def execute(self, kernel_id: str, code: str,
                      timeout: float = 120) -> list[dict[str, Any]]:
        """Run code over the kernel's websocket; the iopub messages until idle."""
        from tornado.websocket import websocket_connect

        ws = await websocket_connect(
            f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels"
            f"?token={self.token}")
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "t",
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False}}))
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                raw = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
                if raw is None:
                    raise AssertionError("websocket closed")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                seen.append(msg)
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    return seen
            raise AssertionError(f"no idle status after {timeout} s: {seen}")
        finally:
            ws.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.log = self.process.stderr.read().decode(errors="replace")
            self.process.stderr.close()


def _stdout(messages: list[dict[str, Any]]) -> str:
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")


def _lifecycle(jupyter_env: Path, tmp_path: Path, kernel_name: str) -> str:
    """Start, run, interrupt, restart and delete a kernel through a real server; the
    server's log."""
    from kernel_providers.cli import main

    assert main(["jupyter", "enable"]) == 0
    server = Server(jupyter_env, tmp_path)

    async def scenario() -> None:
        await server.ready()
        specs = await server.request("GET", "/api/kernelspecs")
        assert kernel_name in specs["kernelspecs"], sorted(specs["kernelspecs"])
        # Served by the bridge (the stock manager has no kernel_providers metadata).
        spec = specs["kernelspecs"][kernel_name]["spec"]
        assert spec["metadata"]["kernel_providers"]["id"]
        if kernel_name == "kp-bridge-only":  # its logo is served from its folder
            resources = specs["kernelspecs"][kernel_name]["resources"]
            assert "logo-64x64" in resources
            assert await server.fetch(f"/kernelspecs/{kernel_name}/logo-64x64.png") == \
                b"\x89PNG kp-logo"
        kernel = await server.request("POST", "/api/kernels", {"name": kernel_name})
        kid = kernel["id"]
        out = _stdout(await server.execute(kid, "import os; x = 1; print(os.getpid())"))
        first_pid = int(out)
        busy = asyncio.ensure_future(
            server.execute(kid, "import time\nwhile True: time.sleep(0.05)"))
        await asyncio.sleep(2)
        await server.request("POST", f"/api/kernels/{kid}/interrupt")
        messages = await asyncio.wait_for(busy, 60)
        assert any(m["msg_type"] == "error" and m["content"]["ename"] == "KeyboardInterrupt"
                   for m in messages)
        await server.request("POST", f"/api/kernels/{kid}/restart")
        out = _stdout(await server.execute(
            kid, "import os; print(os.getpid()); print('x' in dir())"))
        assert out.splitlines()[1] == "False"
        assert int(out.splitlines()[0]) != first_pid or kernel_name.startswith("docker")
        await server.request("DELETE", f"/api/kernels/{kid}")
        assert await server.request("GET", "/api/kernels") == []
        if not kernel_name.startswith("docker"):  # a local process: it is gone
            pid = int(out.splitlines()[0])
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"kernel process {pid} still runs after DELETE")

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
    return server.log


@pytest.mark.timeout(300)
def test_jupyter_server_lifecycle_of_a_kernelspec_kernel(jupyter_env: Path,
                                                        tmp_path: Path) -> None:
    _lifecycle(jupyter_env, tmp_path, "kp-bridge-only")
    assert list(Path(os.environ["JUPYTER_RUNTIME_DIR"]).glob("kernel-*.json")) == []


@pytest.mark.timeout(300)
def test_jupyter_server_lifecycle_of_a_docker_kernel(docker_kernel: str, jupyter_env: Path,
                                                    tmp_path: Path, our_containers: Any) -> None:
    before = our_containers()
    _lifecycle(jupyter_env, tmp_path, docker_kernel)
    assert our_containers() == before  # nothing left: the container is gone


@pytest.mark.timeout(300)
def test_jupyter_server_lifecycle_of_a_slurm_kernel(jupyter_env: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel as a Slurm batch job, as JupyterLab drives it: start, run, interrupt,
    restart, delete; nothing left in the queue; the job's progress in the server's
    log."""
    from kernel_providers_slurm.testing import slurm_cluster

    with slurm_cluster():
        table = {"job_dir": str(tmp_path / "jobs"), "python": sys.executable,
                 "poll_interval": 0.2}
        _allow(monkeypatch, "[providers.slurm]\n"
               + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
               + "[providers.slurm.profiles.lab]\ncpus = 1\n")
        log = _lifecycle(jupyter_env, tmp_path, "slurm-lab")
        assert re.search(r"slurm/lab: Slurm job \d+: (PENDING|RUNNING)", log), log[-3000:]
        queue = subprocess.run(["squeue", "-h", "-o", "%Z"], capture_output=True,
                               text=True, check=True).stdout
        assert str(tmp_path / "jobs") not in queue, queue  # no job of this test is left


@pytest.mark.timeout(300)
def test_a_restarted_server_reattaches_to_a_docker_kernel(docker_kernel: str,
                                                         our_containers: Any) -> None:
    from jupyter_client.provisioning import KernelProvisionerFactory

    before = our_containers()
    # The first "server" starts the kernel, saves what jupyter_client persists, and dies
    # without cleaning up (os._exit): the container keeps running.
    script = (
        "import asyncio, json, os\n"
        "from kernel_providers_jupyter import KernelProvidersKernelManager\n"
        "async def main():\n"
        f"    km = KernelProvidersKernelManager(kernel_name={docker_kernel!r})\n"
        "    await km.start_kernel()\n"
        "    info = await km.provisioner.get_provisioner_info()\n"
        "    info['connection_info'] = {k: v.decode() if isinstance(v, bytes) else v\n"
        "                               for k, v in info['connection_info'].items()}\n"
        "    print(json.dumps(info), flush=True)\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=180, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout.splitlines()[-1])
    assert len(our_containers() - before) == 1

    async def restarted_server() -> None:
        km = KernelProvidersKernelManager(kernel_name=docker_kernel)
        km.kernel_id = info["kernel_id"]
        km.load_connection_info(info["kernel_providers_connection"])
        km.provisioner = KernelProvisionerFactory.instance().create_provisioner_instance(
            km.kernel_id, km.kernel_spec, parent=km)
        await km.provisioner.load_provisioner_info(info)
        assert await km.is_alive()
        client = km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
            reply = await client.execute_interactive("import socket; socket.gethostname()",
                                                     timeout=60)
            assert reply["content"]["status"] == "ok"
        finally:
            client.stop_channels()
        await km.shutdown_kernel()

    asyncio.run(restarted_server())
    assert our_containers() == before  # shut down from the new server: nothing left


def _allow(monkeypatch: pytest.MonkeyPatch, table: str) -> None:
    """Enable one more provider with a config table (the fixture disables the others)."""
    import kernel_providers_jupyter.shared as shared

    monkeypatch.setenv("KERNEL_PROVIDERS_DISABLE", "conda,example")
    config = Path(os.environ["KERNEL_PROVIDERS_CONFIG"])
    # a loaded CI machine may need longer than the default 10 s to list a host
    config.write_text("discovery_timeout = 60\n" + config.read_text() + table)
    shared.forget_shared_finder()  # sees the new configuration


def test_nbclient_runs_a_venv_kernel(jupyter_env: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from kernel_providers.testing.environments import ipykernel_wheel, make_venv

    venvs = tmp_path / "venvs"
    prefix = make_venv(venvs / "bridged", ipykernel_wheel(tmp_path))
    _allow(monkeypatch, f"[providers.venv]\ndirs = [{json.dumps(str(venvs))}]\n"
                        "include_cwd = false\n[providers.ssh]\nhosts = []\n")
    _, sys_prefix = run_notebook("venv-bridged")
    assert sys_prefix == str(prefix)


def test_nbclient_runs_an_ssh_kernel(docker_kernel: str, jupyter_env: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import docker

    from kernel_providers_ssh.testing import start_sshd

    client = docker.from_env()
    sshd = start_sshd(client, os.environ.get("KP_TEST_IMAGE", "kernel-providers-test:bookworm"),
                      tmp_path)
    try:
        _allow(monkeypatch, f"[providers.ssh]\nhosts = [\"testbox\"]\nconnect_timeout = 30\n"
                            f"ssh_config = {json.dumps(str(sshd.ssh_config))}\n"
                            f"known_hosts = {json.dumps(str(sshd.known_hosts))}\n"
                            "[providers.venv]\ndirs = []\ninclude_cwd = false\n")
        hostname, _ = run_notebook("ssh-testbox-python3")
        assert hostname == sshd.hostname
    finally:
        sshd.stop()
        client.close()


# Prints the kernel's folder, and when its process started (boot time + start ticks).
CWD_AND_START = (
    "import os\nprint(os.getcwd())\n"
    "boot = next(int(l.split()[1]) for l in open('/proc/stat') if l.startswith('btime'))\n"
    "ticks = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])\n"
    "print(boot + ticks / os.sysconf('SC_CLK_TCK'))")


@pytest.mark.timeout(300)
def test_jupyter_server_hands_out_pooled_kernels(jupyter_env: Path, tmp_path: Path) -> None:
    """[pool] configured: the server's kernels are started before a client asks, and a
    notebook's kernel still runs in the notebook's folder with a fresh history."""
    from kernel_providers.cli import main

    config = Path(os.environ["KERNEL_PROVIDERS_CONFIG"])
    config.write_text(config.read_text() + '[pool."spec/kp-bridge-only"]\nsize = 1\n')
    assert main(["jupyter", "enable"]) == 0
    (tmp_path / "sub").mkdir()
    server = Server(jupyter_env, tmp_path)

    async def scenario() -> None:
        await server.ready()
        await server.request("GET", "/api/kernelspecs")  # the bridge's finder: it fills
        await asyncio.sleep(5)  # time for the pooled kernel to start
        for _ in range(2):  # the second comes from the refill
            asked = time.time()
            kernel = await server.request("POST", "/api/kernels",
                                          {"name": "kp-bridge-only", "path": "sub/nb.ipynb"})
            messages = await server.execute(kernel["id"], CWD_AND_START)
            cwd, started = _stdout(messages).split()
            assert cwd == str(tmp_path / "sub")
            assert float(started) < asked, "the kernel was started after the request"
            replies = [m for m in messages if m["msg_type"] == "execute_input"]
            assert replies[0]["content"]["execution_count"] == 1
            await asyncio.sleep(5)  # the refill
            # A restart takes the next pooled kernel (new ports, which the server
            # adopts; a client reconnects, as JupyterLab does after a restart).
            asked = time.time()
            await server.request("POST", f"/api/kernels/{kernel['id']}/restart")
            messages = await server.execute(kernel["id"], CWD_AND_START)
            cwd, restarted = _stdout(messages).split()
            assert cwd == str(tmp_path / "sub")
            assert float(restarted) < asked, "the restart started a kernel of its own"
            await server.request("DELETE", f"/api/kernels/{kernel['id']}")
            await asyncio.sleep(5)  # the refill

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_jupyter_server_defaults_to_the_projects_kernel(
        jupyter_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started in a project (a pyproject.toml and its .venv with ipykernel), the server's
    default kernel, which new notebooks get, is that project's environment; configuring
    default_kernel_name still wins."""
    from kernel_providers.cli import main
    from kernel_providers.testing.environments import ipykernel_wheel, make_venv

    project = tmp_path / "solar"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "solar"\n')
    make_venv(project / ".venv", ipykernel_wheel(tmp_path / "wheels"))
    monkeypatch.setenv("KERNEL_PROVIDERS_DISABLE", "conda,pixi,example,ssh,docker,slurm")
    assert main(["jupyter", "enable"]) == 0
    for configured, expected in ((None, jupyter_name("venv/solar")), ("kp-bridge", "kp-bridge")):
        if configured is not None:
            (jupyter_env / "jupyter_server_config.json").write_text(json.dumps({
                **json.loads((jupyter_env / "jupyter_server_config.json").read_text()),
                "MappingKernelManager": {"default_kernel_name": configured}}))
        server = Server(jupyter_env, project, cwd=project / "notebooks")
        try:
            asyncio.run(_default_kernel(server, expected, project / ".venv",
                                        run=configured is None))
        finally:
            server.stop()


async def _default_kernel(server: Server, expected: str, prefix: Path, run: bool) -> None:
    """The server says ``expected`` is its default kernel; with ``run``, a kernel started
    without a name runs in ``prefix``."""
    await server.ready()
    specs = await server.request("GET", "/api/kernelspecs")
    assert specs["default"] == expected, specs["default"]
    assert expected in specs["kernelspecs"]
    if run:
        kernel = await server.request("POST", "/api/kernels", {"path": "nb.ipynb"})
        messages = await server.execute(kernel["id"], "import sys; print(sys.prefix)")
        assert _stdout(messages).strip() == str(prefix)
        await server.request("DELETE", f"/api/kernels/{kernel['id']}")
