"""Local launching specifics: parent death, port retries, env, argv, failures."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import (
    KernelFinder,
    KernelType,
    LaunchFailed,
    LaunchOptions,
    OutputBuffer,
    launch_local,
)
from kernel_providers.connection import PORT_NAMES, runtime_dir
from kernel_providers.local import build_env, substitute_argv
from kernel_providers.testing import run_code

KT = KernelType(id="t/k", display_name="k", language="python", provider="t")
IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_kernel_dies_with_a_killed_manager(kp_isolated: Path) -> None:
    manager = textwrap.dedent("""
        import asyncio, sys
        from kernel_providers import KernelType, LaunchOptions, launch_local
        KT = KernelType(id="t/k", display_name="k", language="python", provider="t")
        async def main():
            launcher = await launch_local(KT, %r, LaunchOptions())
            await launcher.wait_ready()
            print(launcher.pid, flush=True)
            await asyncio.sleep(3600)
        asyncio.run(main())
    """) % IPYKERNEL
    proc = subprocess.Popen([sys.executable, "-c", manager], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        kernel_pid = int(proc.stdout.readline())
        assert pid_alive(kernel_pid)
        proc.kill()  # SIGKILL: the manager gets no chance to clean up
        proc.wait(30)
        for _ in range(100):
            if not pid_alive(kernel_pid):
                break
            time.sleep(0.1)
        assert not pid_alive(kernel_pid), "the kernel outlived its killed manager"
    finally:
        proc.kill()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("taken", ["shell_port", "iopub_port"])
def test_busy_port_on_reuse_retries_with_new_ports(kp_isolated: Path, taken: str) -> None:
    # shell: ipykernel exits at once; iopub: its threads already run and it hangs after
    # the bind error, so the launcher must notice the error in its output.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    busy = blocker.getsockname()[1]
    reuse: Any = {p: busy if p == taken else 0 for p in PORT_NAMES}
    # Give every port a value (a restart reuses all five), one of them being taken.
    from kernel_providers.connection import allocate_ports

    reuse.update({p: v for p, v in allocate_ports().items() if p != taken})
    reuse["key"] = "ab" * 32

    async def scenario() -> None:
        launcher = await launch_local(KT, IPYKERNEL, LaunchOptions(connection_info=reuse))
        try:
            await launcher.wait_ready(60)
            assert launcher.connection_info[taken] != busy  # type: ignore[literal-required]
            assert launcher.connection_info["key"] == "ab" * 32
            out, _, _ = await run_code(launcher, "print('moved')")
            assert out == "moved\n"
        finally:
            await launcher.shutdown()

    try:
        asyncio.run(scenario())
    finally:
        blocker.close()
    assert list(kp_isolated.iterdir()) == []


def test_env_merge_substitution_and_cwd(kp_isolated: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KP_BASE", "base")
    spec_env = {"KP_SPEC": "spec-${KP_BASE}", "KP_BOTH": "from-spec"}
    options = LaunchOptions(env={"KP_BOTH": "from-options"}, cwd=str(tmp_path))

    async def scenario() -> None:
        launcher = await launch_local(KT, IPYKERNEL, options, env=spec_env)
        try:
            await launcher.wait_ready(60)
            out, _, _ = await run_code(launcher, (
                "import os; print(os.environ['KP_SPEC'], os.environ['KP_BOTH'],"
                " os.getcwd(), os.environ['JPY_PARENT_PID'] == str(os.getppid()))"))
            assert out == f"spec-base from-options {tmp_path} True\n"
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def test_argv_substitution_and_env_helpers() -> None:
    argv = substitute_argv(["k", "-f", "{connection_file}", "--res={resource_dir}"],
                           "/r/c.json", "/specs/k")
    assert argv == ["k", "-f", "/r/c.json", "--res=/specs/k"]
    env = build_env({"A": "1"}, {"B": "${A}2"}, None)
    assert env["B"] == "12" and env["PATH"] == os.environ["PATH"]


def test_missing_program_fails_clearly_and_leaves_nothing(kp_isolated: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(LaunchFailed, match=r"'/nonexistent/kernel'.*is the program installed"):
            await launch_local(KT, ["/nonexistent/kernel", "{connection_file}"], LaunchOptions())

    asyncio.run(scenario())
    assert list(kp_isolated.iterdir()) == []


def test_kernel_exiting_at_start_raises_with_output(kp_isolated: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('bad things', file=sys.stderr); exit(7)"]

    async def scenario() -> None:
        from kernel_providers import KernelDied

        with pytest.raises(KernelDied) as caught:
            launcher = await launch_local(KT, argv, LaunchOptions(), port_strategy="allocate")
            try:
                await launcher.wait_ready(30)
            finally:
                await launcher.cleanup()
        assert caught.value.status == 7
        assert "bad things" in caught.value.output and "exit status 7" in str(caught.value)

    asyncio.run(scenario())
    assert list(kp_isolated.iterdir()) == []


def test_kill_reaches_the_whole_process_group(kp_isolated: Path) -> None:
    async def scenario() -> None:
        launcher = await launch_local(KT, IPYKERNEL, LaunchOptions())
        await launcher.wait_ready(60)
        out, _, _ = await run_code(launcher, (
            "import subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print(child.pid)"))
        child = int(out)
        assert pid_alive(child)
        await launcher.shutdown()
        for _ in range(50):
            if not pid_alive(child):
                break
            await asyncio.sleep(0.1)
        assert not pid_alive(child), "a process the kernel started outlived shutdown"

    asyncio.run(scenario())


def test_signal_status_and_terminate_fallback(kp_isolated: Path) -> None:
    async def scenario() -> None:
        launcher = await launch_local(KT, IPYKERNEL, LaunchOptions())
        await launcher.wait_ready(60)
        await launcher.signal(signal.SIGTERM)
        assert await asyncio.wait_for(launcher.wait(), 30) == -signal.SIGTERM
        await launcher.cleanup()

    asyncio.run(scenario())


def test_output_buffer_is_bounded() -> None:
    buffer = OutputBuffer(limit=10)
    for chunk in (b"abc", b"defgh", b"ijklmnop"):
        buffer.append(chunk)
    assert buffer.text() == "ghijklmnop"
    buffer.append(b"x" * 50)
    assert buffer.text() == "x" * 10


def test_runtime_dir_is_private(kp_isolated: Path) -> None:
    assert runtime_dir() == kp_isolated
    assert kp_isolated.stat().st_mode & 0o777 == 0o700


@pytest.mark.reliability("bad input")
def test_an_unwritable_runtime_dir_is_a_clear_launch_failure(
        finder: KernelFinder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(blocker / "runtime"))
    with pytest.raises(LaunchFailed, match=r"cannot create Jupyter's runtime dir .*a-file/"
                                           r"runtime.*set JUPYTER_RUNTIME_DIR"):
        asyncio.run(finder.launch("test/python"))
