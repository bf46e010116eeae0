"""Kernels on other hosts: jobs on the containerised compute nodes kpnode2/kpnode3 (their
own host names and network namespaces), reached through an SSH tunnel to the node's
loopback; submitted from this machine, or from login host kplogin over SSH with the job
folders on the cluster's own file system (/shared, which this machine reaches only
through the test's back door). See scripts/slurm-cluster --nodes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, KernelFinder, KernelProviderError
from kernel_providers.testing import ConformanceSuite, run_code, unavailable
from kernel_providers_slurm.testing import detached_elsewhere, launching_process

NODES = {"kpnode2", "kpnode3"}
EXITS = ["python3", "-c", "print('slurm-exits-marker'); raise SystemExit(3)"]


@pytest.fixture(scope="session")
def cluster_dir(slurm_cluster: Path) -> Path:
    """The test cluster's folder, once its containerised nodes answer."""
    done = subprocess.run(["sinfo", "-h", "-p", "remote", "-o", "%D %T"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        unavailable("the Slurm test cluster has no containerised nodes (Docker is needed:"
                    " scripts/slurm-cluster start DIR --nodes)")
    return slurm_cluster.parent


def our_jobs(root: str) -> set[str]:
    """Ids of the queue's jobs of ours whose folder lies under ``root`` (as the cluster
    sees it)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%Z|%k"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    return {job_id for job_id, folder, comment in (line.split("|", 2)
                                                   for line in out.splitlines())
            if comment.startswith("kernel-providers ") and folder.startswith(f"{root}/")}


def ssh_connections() -> int:
    """This machine's established TCP connections to an sshd (port 22): the tunnels."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2].endswith(":0016") and fields[3] == "01":
            count += 1
    return count


@pytest.fixture
def roots(cluster_dir: Path, kp_isolated: Path, request: pytest.FixtureRequest
          ) -> Iterator[dict[str, str]]:
    """This test's job folders: "local" (seen at the same path here and on the nodes)
    and "login" (a path of the cluster's: /shared/...; ``here`` is where this machine
    sees it, for the checks only). Checks that nothing is left: job, folder, tunnel."""
    name = f"run-{os.getpid()}-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    folders = {"local": str(cluster_dir / "jobs" / name), "login": f"/shared/jobs/{name}",
               "here": str(cluster_dir / "shared" / "jobs" / name)}
    tunnels = ssh_connections()
    yield folders
    deadline = time.monotonic() + 15  # a cancelled job may be completing for a moment
    while time.monotonic() < deadline and (
            our_jobs(folders["local"]) | our_jobs(folders["login"])
            or ssh_connections() > tunnels):
        time.sleep(0.2)
    left = our_jobs(folders["local"]) | our_jobs(folders["login"])
    for job_id in left:
        subprocess.run(["scancel", job_id], check=False)
    assert not left, f"jobs left in the queue: {left}"
    for folder in (folders["local"], folders["here"]):
        assert not Path(folder).exists() or not list(Path(folder).iterdir()), \
            f"job folders left: {list(Path(folder).iterdir())}"
    assert ssh_connections() <= tunnels, "SSH connections left open"


def remote_config(cluster_dir: Path, roots: dict[str, str], **extra: Any) -> dict[str, Any]:
    """[providers.slurm]: profiles on the remote partition, submitted from here ("node")
    or from the login host ("login"); the cluster's ssh client files."""
    node = {"partition": "remote", "cpus": 1}
    login = {**node, "login": "kplogin", "job_dir": roots["login"]}
    profiles = {"node": node, "node-exits": {**node, "kernel": EXITS},
                "login": login, "login-exits": {**login, "kernel": EXITS}}
    profiles.update(extra.pop("profiles", {}))
    return {"job_dir": roots["local"], "python": "python3", "poll_interval": 0.2,
            "ssh_config": str(cluster_dir / "ssh" / "config"),
            "known_hosts": str(cluster_dir / "ssh" / "known_hosts"),
            "profiles": profiles, **extra}


def finder_for(cluster_dir: Path, roots: dict[str, str], **extra: Any) -> KernelFinder:
    return KernelFinder(Config(providers={"slurm": remote_config(cluster_dir, roots,
                                                                 **extra)}))


class _RemoteSuite(ConformanceSuite):
    concurrent_launches = 2
    roots: dict[str, str] = {}

    @pytest.fixture
    def finder(self, cluster_dir: Path, roots: dict[str, str]) -> KernelFinder:
        self.roots = roots
        return finder_for(cluster_dir, roots)

    def leftovers(self, runtime_dir: Path) -> set[str]:
        return super().leftovers(runtime_dir) | our_jobs(self.roots["local"]) \
            | our_jobs(self.roots["login"])


class TestNodeConformance(_RemoteSuite):
    """Submitted from this machine; the kernel on a node, tunnelled."""

    kernel_id = "slurm/node"
    failing_kernel_id = "slurm/node-exits"
    failing_kernel_output = "slurm-exits-marker"


class TestLoginConformance(_RemoteSuite):
    """Submitted from the login host; the kernel on a node, tunnelled through it."""

    kernel_id = "slurm/login"
    failing_kernel_id = "slurm/login-exits"
    failing_kernel_output = "slurm-exits-marker"


WHERE = ("import socket, ipykernel.connect as c;"
         " print(socket.gethostname(), c.get_connection_info(unpack=True)['ip'])")


@pytest.mark.parametrize("profile", ["node", "login"])
def test_kernel_runs_on_a_node_behind_a_tunnel(cluster_dir: Path, roots: dict[str, str],
                                                profile: str) -> None:
    """The kernel runs on another host, listening on that host's loopback only; this
    machine reaches it through SSH forwards on its own loopback."""
    async def scenario() -> None:
        launcher: Any = await finder_for(cluster_dir, roots).launch(f"slurm/{profile}")
        try:
            out, _, _ = await run_code(launcher, WHERE)
            host, ip = out.split()
            assert host in NODES and ip == "127.0.0.1", out
            assert launcher.connection_info["ip"] == "127.0.0.1"
            assert launcher.tunnel is not None and len(launcher.tunnel.listeners) == 5
            if profile == "login":
                # The job folder is the cluster's: reached over SFTP, not here.
                assert launcher.job.folder.startswith("/shared/jobs/")
                assert not Path(launcher.job.folder).exists()
                assert (Path(roots["here"]) / Path(launcher.job.folder).name).is_dir()
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


@pytest.mark.parametrize("profile", ["node", "login"])
def test_unknown_node_host_key_is_refused(cluster_dir: Path, roots: dict[str, str],
                                          tmp_path: Path, profile: str) -> None:
    """A node whose host key is not in known_hosts: no tunnel; the error names the
    host, the problem and the fix; the job is cancelled, nothing is left."""
    known = tmp_path / "known_hosts"
    lines = (cluster_dir / "ssh" / "known_hosts").read_text().splitlines()
    login_address = _login_address(cluster_dir)
    known.write_text("".join(f"{line}\n" for line in lines
                             if line.split()[0] == login_address))
    finder = finder_for(cluster_dir, roots, known_hosts=str(known))
    with pytest.raises(KernelProviderError) as failed:
        asyncio.run(finder.launch(f"slurm/{profile}"))
    message = str(failed.value)
    assert "host key not verified" in message and "known_hosts" in message, message


def _login_address(cluster_dir: Path) -> str:
    config = (cluster_dir / "ssh" / "config").read_text().split()
    return config[config.index("kplogin") + 2]


def test_login_host_that_does_not_answer(cluster_dir: Path, roots: dict[str, str]) -> None:
    """A login alias that leads nowhere: the error names it; nothing was submitted."""
    finder = finder_for(cluster_dir, roots, profiles={
        "nowhere": {"login": "kp-no-such-login.invalid", "partition": "remote"}})
    with pytest.raises(KernelProviderError, match=r"kp-no-such-login\.invalid"):
        asyncio.run(finder.launch("slurm/nowhere"))


def test_killed_launcher_login_job_is_cancelled(cluster_dir: Path,
                                                roots: dict[str, str]) -> None:
    """The launching process SIGKILLed: its reaper cancels the job through the login
    host within 5 s and removes its folder there."""
    proc, job_id = launching_process(remote_config(cluster_dir, roots), "slurm/login")
    try:
        assert job_id in our_jobs(roots["login"])
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 5
        while job_id in our_jobs(roots["login"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"],
                               capture_output=True, text=True).stdout.strip()
        assert state in ("", "COMPLETING"), f"job {job_id} still {state} 5 s later"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def cluster_kernelspec(cluster_dir: Path) -> Iterator[str]:
    """A kernelspec on the cluster's file system only (/shared/kernels): its name."""
    name = f"kp-marker-{os.getpid()}"
    folder = cluster_dir / "shared" / "kernels" / "kernels" / name
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Marker", "language": "python",
        "env": {"KP_SPEC_MARKER": "from-the-spec"}}))
    try:
        yield name
    finally:
        (folder / "kernel.json").unlink()
        folder.rmdir()


def test_the_clusters_kernelspecs_as_kernel_types(cluster_dir: Path, roots: dict[str, str],
                                                  cluster_kernelspec: str) -> None:
    """kernelspecs = true: the kernelspecs the login host sees after the profile's setup
    lines are slurm/<profile>/<spec>, and one runs on a node with its spec's env."""
    finder = finder_for(cluster_dir, roots, profiles={"specs": {
        "login": "kplogin", "partition": "remote", "cpus": 1, "kernelspecs": True,
        "setup": ["export JUPYTER_PATH=/shared/kernels"], "job_dir": roots["login"]}})

    async def scenario() -> None:
        kernels = {k.id: k for k in await finder.find_kernels(provider="slurm")}
        kernel_id = f"slurm/specs/{cluster_kernelspec}"
        assert {"slurm/specs", "slurm/specs/python3", kernel_id} <= set(kernels), kernels
        assert kernels[kernel_id].display_name == "Marker (Slurm specs)"
        assert kernels[kernel_id].metadata["slurm"]["kernelspec"] == cluster_kernelspec
        launcher: Any = await finder.launch(kernel_id)
        try:
            out, _, _ = await run_code(launcher, "import os, socket; print(socket."
                                       "gethostname(), os.environ['KP_SPEC_MARKER'])")
            host, marker = out.split()
            assert host in NODES and marker == "from-the-spec"
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def test_kernelspecs_that_cannot_be_listed_are_a_problem(cluster_dir: Path,
                                                         roots: dict[str, str]) -> None:
    """The cluster's Python is not there: the profile itself stays listed, the
    provider's report says why its kernelspecs are missing."""
    finder = finder_for(cluster_dir, roots, python="/nonexistent/python3", profiles={
        "nospecs": {"login": "kplogin", "kernelspecs": True}})
    kernels = asyncio.run(finder.find_kernels(provider="slurm"))
    assert "slurm/nospecs" in {k.id for k in kernels}
    (report,) = [r for r in finder.reports if r.id == "slurm"]
    assert any("could not list the cluster's kernelspecs on login host kplogin" in p
               for p in report.problems), report


@pytest.mark.parametrize("profile", ["node", "login"])
def test_a_detached_remote_job_is_reattached(cluster_dir: Path, roots: dict[str, str],
                                             profile: str) -> None:
    """As a restarted Jupyter server does: one process detaches a kernel running on a
    node and ends (its tunnel with it; past the lease, the job keeps running); another
    re-attaches, which opens a tunnel on the same local ports, runs code, shuts down."""
    state, info = detached_elsewhere(remote_config(cluster_dir, roots, lease_seconds=2),
                                     f"slurm/{profile}")
    assert state["login"] == ("kplogin" if profile == "login" else None)
    time.sleep(3)  # longer than the lease: a held job would have ended by now
    root = roots["login" if profile == "login" else "local"]
    assert state["job_id"] in our_jobs(root)

    async def scenario() -> None:
        finder = finder_for(cluster_dir, roots, lease_seconds=2)
        launcher: Any = await finder.attach(f"slurm/{profile}", state, info)
        try:
            assert launcher.tunnel is not None
            assert {p: launcher.connection_info[p] for p in ("shell_port", "hb_port")} \
                == {p: info[p] for p in ("shell_port", "hb_port")}
            out, _, _ = await run_code(launcher, "print(x + 1)")
            assert out == "42\n"
        finally:
            assert await launcher.shutdown() == 0

    asyncio.run(scenario())
