"""Chaos: the same failure through every entry point.

``test_bad_input.py`` drives the CLI with each bad input; here a few failures of each
kind (a kernel whose program is missing, a kernel.json the provider skipped, a kernel
that exits while starting, an unreachable SSH host) go through the other ways in: the
Python API (async and blocking), jupyter_client as nbclient/papermill use it (our
KernelManager), and a real jupyter_server's REST API as JupyterLab uses it. Each must
raise (or reply with) one message naming the thing and the fix — the same words the CLI
prints — never jupyter_server's "Unhandled error"; afterwards no kernel process and no
connection file is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from kernel_providers import KernelFinder, KernelProviderError
from kernel_providers.blocking import BlockingKernelFinder
from kernel_providers.testing import process_alive, write_kernelspec

MARKER = f"kp-entry-{uuid.uuid4().hex[:10]}"  # on every kernel's command line here
EXITS = [sys.executable, "-c", f"import sys; print('bye {MARKER}'); sys.exit(4)",
         "{connection_file}"]


@dataclass(frozen=True)
class Case:
    """A kernel id that cannot start, and what every entry point must say about it."""

    id: str
    names: tuple[str, ...]  # the thing (may hold {root})
    fix: tuple[str, ...]

    def words(self, root: Path) -> list[str]:
        return [w.replace("{root}", str(root)) for w in (*self.names, *self.fix)]


CASES = [
    Case("spec/nocommand", ("'spec/nocommand'", "{root}/no-such-program", "No such file"),
         ("check the kernel's argv",)),
    Case("spec/envnul", ("{root}/kernels/envnul/kernel.json", "must not hold a NUL"),
         ("`kernel-providers list`",)),
    Case("spec/exits", ("'spec/exits'", "bye"), ("ended while starting",)),
    Case("ssh/deadbox/python3", ("'deadbox'", "unreachable"), ("check HostName/Port",)),
]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cases' kernelspecs and SSH host in a folder of their own, the environment
    pointing at it (spec and ssh providers only); yields the folder."""
    root = tmp_path_factory.mktemp("entry")
    kernels = root / "kernels"
    write_kernelspec(kernels, "nocommand", {
        "argv": [str(root / "no-such-program"), MARKER, "-f", "{connection_file}"],
        "display_name": "No command"})
    write_kernelspec(kernels, "envnul", {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Env NUL", "env": {"A": "x\u0000y"}})
    write_kernelspec(kernels, "exits", {"argv": EXITS, "display_name": "Exits"})
    (root / "ssh_config").write_text(
        f"Host deadbox\n  HostName 127.0.0.1\n  Port {closed_port()}\n  User root\n")
    (root / "known_hosts").write_text("")
    config = root / "kernel_providers.toml"
    config.write_text(
        f"ready_timeout = 30\n[providers.spec]\nextra_dirs = [{json.dumps(str(kernels))}]\n"
        f'[providers.ssh]\nhosts = ["deadbox"]\nssh_config = "{root}/ssh_config"\n'
        f'known_hosts = "{root}/known_hosts"\nconnect_timeout = 5\n')
    for name in ("runtime", "jupyter-config", "jupyter-data", "user-data"):
        (root / name).mkdir(mode=0o700)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KERNEL_PROVIDERS_CONFIG", str(config))
        env.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
        env.setenv("JUPYTER_CONFIG_DIR", str(root / "jupyter-config"))
        env.setenv("JUPYTER_PATH", str(root / "jupyter-data"))
        env.setenv("JUPYTER_DATA_DIR", str(root / "user-data"))
        env.setenv("XDG_CACHE_HOME", str(root / "cache"))
        env.setenv("KERNEL_PROVIDERS_DISABLE", "conda,venv,example,docker,environments")
        import kernel_providers_jupyter.shared as shared

        shared.forget_shared_finder()
        yield root
        shared.forget_shared_finder()


@pytest.fixture(scope="module")
def server(place: Path) -> Iterator[tuple[str, str]]:
    """A jupyter_server with the bridge enabled: (its URL, its token)."""
    from kernel_providers.cli import main

    assert main(["jupyter", "enable"]) == 0
    token, port = secrets.token_hex(16), closed_port()
    log = (place / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
         f"--ServerApp.root_dir={place}", f"--IdentityProvider.token={token}",
         *(["--allow-root"] if os.getuid() == 0 else [])],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if asyncio.run(rest(url, token, "GET", "/api/status"))[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None:
                pytest.fail((place / "server.log").read_text()[-3000:])
            asyncio.run(asyncio.sleep(0.1))
        yield url, token
    finally:
        process.terminate()
        process.wait(30)
        log.close()


async def rest(url: str, token: str, method: str, path: str,
               body: Any = None) -> tuple[int, Any]:
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    response = await AsyncHTTPClient().fetch(HTTPRequest(
        url + path, method=method, headers={"Authorization": f"token {token}"},
        body=None if method == "GET" else json.dumps(body or {}), request_timeout=120),
        raise_error=False)
    return response.code, json.loads(response.body) if response.body else None


def python_api(case: Case) -> str:
    with pytest.raises(KernelProviderError) as raised:
        asyncio.run(KernelFinder().launch(case.id))
    return str(raised.value)


def blocking_api(case: Case) -> str:
    with pytest.raises(KernelProviderError) as raised:
        BlockingKernelFinder().launch(case.id)
    return str(raised.value)


def nbclient(case: Case) -> str:
    import nbformat
    from nbclient import NotebookClient

    from kernel_providers_jupyter import KernelProvidersKernelManager, jupyter_name

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    client = NotebookClient(notebook, kernel_name=jupyter_name(case.id), timeout=60,
                            kernel_manager_class=KernelProvidersKernelManager)
    with pytest.raises(Exception) as raised:
        client.execute()
    return str(raised.value)


ENTRY_POINTS = {"python": python_api, "blocking": blocking_api, "nbclient": nbclient,
                "jupyter_server": None}


def leftovers(place: Path) -> list[str]:
    """Connection files in the runtime dir, and kernel processes carrying the marker."""
    files = [p.name for p in (place / "runtime").glob("kernel-*.json")]
    procs = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if MARKER in " ".join(proc.info["cmdline"] or ()) and process_alive(proc.pid):
            procs.append(f"pid {proc.pid}")
    return files + procs


@pytest.mark.timeout(180)
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_entry_point_says_what_where_and_the_fix(case: Case, entry: str, place: Path,
                                                      request: pytest.FixtureRequest
                                                      ) -> None:
    if entry == "jupyter_server":
        from kernel_providers_jupyter import jupyter_name

        url, token = request.getfixturevalue("server")
        code, reply = asyncio.run(rest(url, token, "POST", "/api/kernels",
                                       {"name": jupyter_name(case.id)}))
        assert code >= 400, reply
        message = reply["message"]
        assert message != "Unhandled error"
        assert asyncio.run(rest(url, token, "GET", "/api/kernels"))[1] == []
    else:
        message = ENTRY_POINTS[entry](case)  # type: ignore[misc]
    missing = [w for w in case.words(place) if w not in message]
    assert not missing, f"{entry}: the message lacks {missing}: {message}"
    assert "Traceback" not in message
    assert leftovers(place) == []
