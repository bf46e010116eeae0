"""The Docker provider against a real engine: conformance, what runs where, failures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import (
    KernelFinder,
    LaunchFailed,
    LaunchOptions,
    ParameterError,
    ProviderUnavailable,
)
from kernel_providers.testing import ConformanceSuite, run_code

IMAGE_ID = "docker/kernel-providers-test:bookworm"


class TestDockerConformance(ConformanceSuite):
    kernel_id = IMAGE_ID
    failing_kernel_id = "docker/exits"
    failing_kernel_output = "docker-exits-marker"

    @pytest.fixture
    def finder(self, docker_finder: Any, test_image: str) -> KernelFinder:
        return docker_finder(images=[{  # type: ignore[no-any-return]
            "image": test_image, "name": "exits",
            "argv": ["python3", "-c", "print('docker-exits-marker'); raise SystemExit(3)"]}])

    def leftovers(self, runtime_dir: Path) -> set[str]:
        from kernel_providers_docker.engine import connect

        client = connect()
        containers = {c.id for c in client.containers.list(
            all=True, filters={"label": "io.kernel-providers.managed=1"})}
        return super().leftovers(runtime_dir) | containers


def test_code_runs_in_the_container(docker_finder: Any) -> None:
    finder = docker_finder(env={"KP_FROM_CONFIG": "yes"})

    async def scenario() -> None:
        launcher = await finder.launch(IMAGE_ID)
        try:
            out, _, _ = await run_code(launcher, (
                "import socket, os, sys; print(socket.gethostname());"
                " print(os.path.exists('/etc/debian_version'), os.environ['KP_FROM_CONFIG']);"
                " print(sys.version_info[:2])"))
            hostname, flags, version = out.splitlines()
            assert hostname == launcher.container.short_id  # type: ignore[attr-defined]
            assert flags == "True yes"
            assert version == "(3, 11)"
            # The connection file inside the container is private to its user.
            mode = launcher.container.exec_run(  # type: ignore[attr-defined]
                ["stat", "-c", "%a", "/tmp/kernel-providers-connection.json"]).output
            assert mode.strip() == b"600"
            # Ports are published on the loopback interface only.
            ports = launcher.container.attrs["NetworkSettings"]["Ports"]  # type: ignore[attr-defined]
            assert {b["HostIp"] for v in ports.values() for b in v} == {"127.0.0.1"}
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def test_limits_mounts_and_cwd(docker_finder: Any, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data.txt").write_text("from the host")
    monkeypatch.chdir(tmp_path)
    finder = docker_finder(mount_cwd="/work", mem_limit="256m", cpus=0.5)

    async def scenario() -> None:
        launcher = await finder.launch(IMAGE_ID)
        try:
            out, _, _ = await run_code(
                launcher, "import os; print(os.getcwd(), open('data.txt').read())")
            assert out == "/work from the host\n"
            config = launcher.container.attrs["HostConfig"]  # type: ignore[attr-defined]
            assert config["Memory"] == 256 * 1024 * 1024 and config["NanoCpus"] == 5 * 10**8
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def test_missing_image_and_bad_label(docker_finder: Any, docker_client: Any,
                                     tmp_path: Path) -> None:
    # An image whose label is not valid JSON: reported, listing goes on.
    empty = subprocess.run(["tar", "-c", "-T", "/dev/null"], capture_output=True).stdout
    subprocess.run(["docker", "import", "--change", "LABEL io.jupyter.kernelspec='{not json'",
                    "-", "kp-badlabel:1"], input=empty, check=True, capture_output=True)
    try:
        finder = docker_finder(images=["kp-no-such-image:0"])
        kernels = [k.id for k in asyncio.run(finder.find_kernels())]
        assert IMAGE_ID in kernels
        assert "docker/kp-badlabel:1" not in kernels
        assert "docker/kp-no-such-image:0" not in kernels
        problems = "\n".join(next(r for r in finder.reports if r.id == "docker").problems)
        assert "image kp-badlabel:1: label io.jupyter.kernelspec: invalid JSON" in problems
        assert "'kp-no-such-image:0' is not present" in problems
        # Listed because it may be pulled, but no registry answers: a clear failure.
        finder = docker_finder(images=[{"image": "kp-no-such-image:0", "pull": "missing"}],
                               pull_timeout=60)

        async def scenario() -> None:
            with pytest.raises(LaunchFailed, match="pulling kp-no-such-image:0 failed"):
                await finder.launch("docker/kp-no-such-image:0")

        asyncio.run(scenario())
    finally:
        docker_client.images.remove("kp-badlabel:1", force=True)


def test_unreachable_engine_is_reported(kp_isolated: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    finder = KernelFinder()
    kernels = asyncio.run(finder.find_kernels())
    report = next(r for r in finder.reports if r.id == "docker")
    assert report.status == "error"
    assert f"Docker engine not reachable at unix://{tmp_path}/no-docker.sock" in report.message
    assert "is dockerd running?" in report.message
    assert any(k.provider == "spec" for k in kernels)  # the others still list
    with pytest.raises(ProviderUnavailable):
        from kernel_providers_docker.engine import connect

        connect()


def test_interrupt_kill_and_status(docker_finder: Any) -> None:
    finder = docker_finder()

    async def scenario() -> None:
        launcher = await finder.launch(IMAGE_ID)
        await launcher.signal(signal.SIGTERM)
        assert await asyncio.wait_for(launcher.wait(), 30) == -signal.SIGTERM
        await launcher.cleanup()

    asyncio.run(scenario())


@pytest.mark.reliability("orphans")
def test_orphaned_containers_are_cleaned_up(docker_finder: Any, docker_client: Any,
                                            tmp_path: Path) -> None:
    docker_finder()  # the leftover check
    script = textwrap.dedent(f"""
        import asyncio, json
        from kernel_providers import KernelFinder
        async def main():
            launcher = await KernelFinder().launch({IMAGE_ID!r})
            print(json.dumps(launcher.container.id), flush=True)
            await asyncio.sleep(3600)
        asyncio.run(main())
    """)
    # Without its reaper (killed with it, or the engine unreachable then), a dead
    # launcher's container stays until `cleanup`.
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "KERNEL_PROVIDERS_NO_REAPER": "1"})
    try:
        assert proc.stdout is not None
        container_id = json.loads(proc.stdout.readline())
        # While its launcher lives, cleanup leaves it alone.
        out = subprocess.run(["kernel-providers", "cleanup"], capture_output=True, text=True,
                             check=True).stdout
        assert container_id[:12] not in out
        proc.kill()
        proc.wait(30)
        out = subprocess.run(["kernel-providers", "cleanup"], capture_output=True, text=True,
                             check=True).stdout
        assert f"docker: removed container {container_id[:12]}" in out
        from docker.errors import NotFound

        with pytest.raises(NotFound):
            docker_client.containers.get(container_id)
    finally:
        proc.kill()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.reliability("orphans")
@pytest.mark.parametrize("end", ["sigkill", "sigterm", "exit"])
def test_a_dead_launchers_container_is_gone_within_5_s(docker_finder: Any,
                                                       docker_client: Any, end: str) -> None:
    """Killed, terminated, or a script that ends without shutting its kernel down: the
    launching process's reaper removes the container, no `cleanup` needed."""
    docker_finder()  # the leftover check
    script = textwrap.dedent(f"""
        import asyncio, json, sys
        from kernel_providers import KernelFinder
        async def main():
            launcher = await KernelFinder().launch({IMAGE_ID!r})
            print(json.dumps([launcher.container.id, launcher.connection_file]), flush=True)
            if sys.argv[1] != "exit":
                await asyncio.sleep(3600)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, end], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        container_id, connection_file = json.loads(proc.stdout.readline())
        if end != "exit":
            proc.send_signal(signal.SIGKILL if end == "sigkill" else signal.SIGTERM)
        proc.wait(30)
        assert gone_within(docker_client, container_id, 5), "the container outlived 5 s"
        assert not Path(connection_file).exists()
    finally:
        proc.kill()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.reliability("orphans")
@pytest.mark.parametrize("moment", ["starting", "shutting-down"])
def test_sigterm_to_run_leaves_no_container(docker_finder: Any, docker_client: Any,
                                            moment: str) -> None:
    """`kernel-providers run` terminated while its container starts, or while it shuts
    the kernel down after the output: nothing stays."""
    docker_finder()  # the leftover check

    def ours() -> set[str]:
        return {c.id for c in docker_client.containers.list(
            all=True, filters={"label": "io.kernel-providers.managed=1"})}

    before = ours()
    code = "print('the-output', flush=True)"
    proc = subprocess.Popen(["kernel-providers", "run", IMAGE_ID, "--code", code],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if moment == "starting":
            deadline = time.monotonic() + 60
            while not ours() - before:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.02)
        else:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "the-output"
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        deadline = time.monotonic() + 5
        while ours() - before:
            assert time.monotonic() < deadline, "a container outlived `run` by 5 s"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.communicate(timeout=30)


# --- the launch's cwd: mounted at mount_cwd and worked in, or ignored without it ---

CWD_PROBE = "import json, os; print(json.dumps([os.getcwd(), sorted(os.listdir())]))"


def folder(path: Path, marker: str) -> Path:
    """``path`` created, holding a file named ``marker`` to recognise it by."""
    path.mkdir()
    (path / marker).write_text(marker)
    return path


async def kernel_cwd(finder: KernelFinder, options: LaunchOptions) -> tuple[str, list[str]]:
    """The kernel's working directory and what it lists there."""
    launcher = await finder.launch(IMAGE_ID, options)
    try:
        out, _, _ = await run_code(launcher, CWD_PROBE)
    finally:
        await launcher.shutdown()
    cwd, listing = json.loads(out)
    return cwd, listing


def test_mount_cwd_mounts_the_clients_cwd(docker_finder: Any, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    notebooks = folder(tmp_path / "notebooks", "notebook-file.txt")
    monkeypatch.chdir(folder(tmp_path / "manager", "manager-file.txt"))
    finder = docker_finder(mount_cwd="/work")
    cwd, listing = asyncio.run(kernel_cwd(finder, LaunchOptions(cwd=str(notebooks))))
    assert cwd == "/work"
    assert listing == ["notebook-file.txt"]


def test_mount_cwd_mounts_the_managers_cwd_at_launch(docker_finder: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder(tmp_path / "at-listing", "listing-file.txt"))
    finder = docker_finder(mount_cwd="/work")
    asyncio.run(finder.find_kernels())
    # The folder current when the kernel starts, not when kernels were listed.
    monkeypatch.chdir(folder(tmp_path / "at-launch", "launch-file.txt"))
    cwd, listing = asyncio.run(kernel_cwd(finder, LaunchOptions()))
    assert cwd == "/work"
    assert listing == ["launch-file.txt"]


def test_cwd_is_ignored_without_mount_cwd(docker_finder: Any, docker_client: Any,
                                          test_image: str, tmp_path: Path) -> None:
    # Nothing of this machine is mounted: a host path means nothing in the container.
    notebooks = folder(tmp_path / "notebooks", "notebook-file.txt")
    image_dir = docker_client.images.get(test_image).attrs["Config"].get("WorkingDir") or "/"
    cwd, listing = asyncio.run(kernel_cwd(docker_finder(), LaunchOptions(cwd=str(notebooks))))
    assert cwd == image_dir
    assert "notebook-file.txt" not in listing


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_mount_cwd_of_a_folder_that_is_not_there(docker_finder: Any, docker_client: Any,
                                                 tmp_path: Path, kind: str) -> None:
    cwd = tmp_path / "notebooks"
    if kind == "file":
        cwd.write_text("not a folder")
    finder = docker_finder(mount_cwd="/work")
    before = {c.id for c in docker_client.containers.list(
        all=True, filters={"label": "io.kernel-providers.managed=1"})}

    async def scenario() -> None:
        with pytest.raises(LaunchFailed) as failed:
            await finder.launch(IMAGE_ID, LaunchOptions(cwd=str(cwd)))
        message = str(failed.value)
        assert IMAGE_ID in message and str(cwd) in message and "/work" in message
        assert ("does not exist" if kind == "missing" else "is not a folder") in message
        assert "pass an existing folder as cwd" in message

    asyncio.run(scenario())
    after = {c.id for c in docker_client.containers.list(
        all=True, filters={"label": "io.kernel-providers.managed=1"})}
    assert after == before
    assert cwd.exists() == (kind == "file")  # Docker did not create it either


@pytest.mark.reliability("bad input")
@pytest.mark.parametrize(("table", "message"), [
    ({"mem_limit": "lots"}, "mem_limit = 'lots' is not a size; write a number with a unit"),
    ({"network": "host"}, "network = 'host': its ports are published on 127.0.0.1 only"),
    ({"mounts": ["{missing}:/data"]}, "does not exist on this machine; create it, or fix"
                                      " `mounts` in [providers.docker]"),
])
def test_impossible_settings_fail_clearly(docker_finder: Any, tmp_path: Path,
                                          table: dict[str, Any], message: str) -> None:
    missing = tmp_path / "missing"
    table = {k: [m.format(missing=missing) for m in v] if isinstance(v, list) else v
             for k, v in table.items()}
    finder = docker_finder(**table)
    with pytest.raises(LaunchFailed, match=re.escape(message)):
        asyncio.run(finder.launch(IMAGE_ID))
    assert not missing.exists()  # Docker would have made it, as root


# --- cleanup touches only what is ours and no longer owned ----------------------------


def gone_within(docker_client: Any, container_id: str, seconds: float) -> bool:
    """Whether the container is gone (removed) within ``seconds``."""
    from docker.errors import NotFound

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            docker_client.containers.get(container_id)
        except NotFound:
            return True
        time.sleep(0.1)
    return False


def _cleanup() -> str:
    out = subprocess.run(["kernel-providers", "cleanup"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.reliability("ownership")
def test_cleanup_never_touches_look_alikes(docker_finder: Any, docker_client: Any,
                                           test_image: str, tmp_path: Path) -> None:
    """Containers with our labels that we did not make: copied labels and a forged tag,
    and one launched with another machine's secret (same hostname, shared engine)."""
    import socket

    from kernel_providers.ownership import owner_tag

    docker_finder()  # the leftover check covers our own containers only
    dead = f"{socket.gethostname()}:999999:0"  # a launcher that no longer runs
    elsewhere = tmp_path / "other-machine"
    script = ("import sys; from kernel_providers.ownership import owner_tag;"
              " print(owner_tag(*sys.argv[1:]))")
    other_tag = subprocess.run(
        [sys.executable, "-c", script, "kernel-providers-lookalike2", dead, "docker/x"],
        env={**os.environ, "XDG_DATA_HOME": str(elsewhere)}, capture_output=True,
        text=True, check=True).stdout.strip()
    made = []
    try:
        for name, tag in (("kernel-providers-lookalike1", "forged." + "0" * 64),
                          ("kernel-providers-lookalike2", other_tag)):
            made.append(docker_client.containers.run(
                test_image, ["sleep", "300"], detach=True, name=name, labels={
                    "io.kernel-providers.managed": "1",
                    "io.kernel-providers.kernel-id": "docker/x",
                    "io.kernel-providers.launcher": dead,
                    "io.kernel-providers.owner": tag}))
        assert owner_tag("kernel-providers-lookalike2", dead, "docker/x") != other_tag
        out = _cleanup()
        for container in made:
            container.reload()
            assert container.status == "running", out
            assert container.short_id not in out
    finally:
        for container in made:
            container.remove(force=True)


@pytest.mark.reliability("ownership")
def test_cleanup_leaves_a_kernel_a_live_process_reattached_to(docker_finder: Any,
                                                              docker_client: Any) -> None:
    """Its labels name a dead launcher; the process that re-attached owns it now."""
    from docker.errors import NotFound

    docker_finder()  # the leftover check
    no_reaper = {**os.environ, "KERNEL_PROVIDERS_NO_REAPER": "1"}
    first = textwrap.dedent(f"""
        import asyncio, json, os
        from kernel_providers import KernelFinder
        async def main():
            launcher = await KernelFinder().launch({IMAGE_ID!r})
            print(json.dumps([launcher.attach_state(), dict(launcher.connection_info)]),
                  flush=True)
            os._exit(0)  # dies without cleaning up, and without a reaper
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", first], capture_output=True, text=True,
                         timeout=120, env=no_reaper, check=True)
    state, info = json.loads(out.stdout)
    container_id = state["container_id"]
    second = textwrap.dedent(f"""
        import asyncio, json, sys
        from kernel_providers import KernelFinder
        async def main():
            state, info = json.loads(sys.argv[1])
            launcher = await KernelFinder().attach({IMAGE_ID!r}, state, info)
            print("attached", flush=True)
            await asyncio.sleep(3600)
        asyncio.run(main())
    """)
    owner = subprocess.Popen([sys.executable, "-c", second, json.dumps([state, info])],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "attached"
        assert container_id[:12] not in _cleanup()  # its new owner lives
        docker_client.containers.get(container_id)
        owner.kill()  # the new owner dies: its reaper removes the container
        owner.wait(30)
        assert gone_within(docker_client, container_id, 5), "the container outlived 5 s"
    finally:
        owner.kill()
        owner.wait(30)
        if owner.stdout is not None:
            owner.stdout.close()
        with contextlib.suppress(NotFound):
            docker_client.containers.get(container_id).remove(force=True)


# The container's own limits, from cgroup v2's files, else v1's.
CGROUP = """
import os
def first(*paths):
    for path in paths:
        try:
            return open(path).read().split()
        except OSError:
            pass
    return ["-"]
cpu = first("/sys/fs/cgroup/cpu.max")
if cpu == ["-"]:
    v1 = "/sys/fs/cgroup/cpu/cpu.cfs_"
    cpu = first(v1 + "quota_us") + first(v1 + "period_us")
memory = first("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
print(*cpu, *memory, os.path.exists("/data/shared.txt"))
"""


def test_parameters_set_the_containers_limits(docker_finder: Any, tmp_path: Path) -> None:
    """cpus, memory and a mount chosen by parameter: the kernel's own cgroup says so; a
    value above the configured maximum, or a mount config does not offer, is refused
    before any container exists."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "shared.txt").write_text("x")
    finder = docker_finder(max_cpus=1, max_memory="512m",
                           mount_choices=[f"{shared}:/data:ro"])

    async def scenario() -> None:
        kernel = await finder.get_kernel_type(IMAGE_ID)
        assert kernel.parameters is not None
        assert set(kernel.parameters["properties"]) == {"cpus", "memory", "mounts"}
        launcher = await finder.launch(IMAGE_ID, LaunchOptions(parameters={
            "cpus": 0.5, "memory": "256m", "mounts": [f"{shared}:/data:ro"]}))
        try:
            out, _, _ = await run_code(launcher, CGROUP)
            assert out.split() == ["50000", "100000", str(256 * 1024 * 1024), "True"], out
        finally:
            await launcher.shutdown()
        for values, says in (({"cpus": 2}, "parameter 'cpus' = 2 is not allowed"),
                             ({"memory": "1g"}, "more than max_memory = 512m"),
                             ({"mounts": ["/etc:/etc"]}, "parameter 'mounts' = "),
                             ({"privileged": True}, "has no parameter 'privileged'")):
            with pytest.raises(ParameterError, match=re.escape(says)):
                await finder.launch(IMAGE_ID, LaunchOptions(parameters=values))

    asyncio.run(scenario())
