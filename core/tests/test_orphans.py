"""Nothing outlives the launching process: its reaper ends what it left (real processes,
a real SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kernel_providers.testing import process_alive, process_gone

pytestmark = pytest.mark.reliability("orphans")

#: Launches a local kernel whose process group also holds a `sleep` (a process the kernel
#: started), prints what it made, then waits to be killed.
LAUNCHING_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from kernel_providers import KernelType, LaunchOptions, launch_local

    async def main():
        kernel_type = KernelType(id="test/grouped", display_name="grouped",
                                 language="python", provider="test")
        argv = ["sh", "-c", 'sleep 300 & echo "sleep $!"; exec "$0" -m ipykernel_launcher'
                ' -f "$1"', sys.executable, "{connection_file}"]
        launcher = await launch_local(kernel_type, argv, LaunchOptions())
        await launcher.wait_ready(60)
        sleep_pid = int(launcher.output.split("sleep ")[1].split()[0])
        print(json.dumps({"kernel": launcher.pid, "sleep": sleep_pid,
                          "file": launcher.connection_file, "end": sys.argv[1]}), flush=True)
        if sys.argv[1] == "exit":  # a script that ends without shutting its kernel down
            return
        await asyncio.sleep(600)

    asyncio.run(main())
""")


def _launch(end: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    script = subprocess.Popen([sys.executable, "-c", LAUNCHING_SCRIPT, end],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert script.stdout is not None
    line = script.stdout.readline()
    if not line:
        script.kill()
        raise AssertionError(f"the launching script failed: {script.communicate()[1]}")
    return script, json.loads(line)


def _gone_within(seconds: float, *pids: int) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if process_alive(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if process_alive(pid)]


@pytest.mark.parametrize("end", ["sigkill", "sigterm", "exit"])
def test_what_a_dead_launcher_started_is_gone_within_5_s(kp_isolated: Path, end: str) -> None:
    script, made = _launch(end)
    kernel, sleep, file = int(made["kernel"]), int(made["sleep"]), str(made["file"])  # type: ignore[call-overload]
    try:
        assert process_alive(sleep) and Path(file).exists()
        if end != "exit":
            script.send_signal(signal.SIGKILL if end == "sigkill" else signal.SIGTERM)
        script.wait(30)
        ended = time.monotonic()
        left = _gone_within(5, kernel, sleep)
        assert left == [], f"alive 5 s after the launcher's end ({end}): {left}"
        while Path(file).exists() and time.monotonic() - ended < 5:
            time.sleep(0.05)
        assert not Path(file).exists(), f"connection file {file} left behind ({end})"
    finally:
        for pid in (kernel, sleep):  # only what this test made
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if script.poll() is None:
            script.kill()
        script.communicate()


def test_a_launcher_that_cleans_up_leaves_its_reaper_nothing(kp_isolated: Path,
                                                             tmp_path: Path) -> None:
    """A file the reaper was asked to remove, then told to keep, survives its end."""
    keep = tmp_path / "keep"
    keep.write_text("")
    dropped = tmp_path / "dropped"
    dropped.write_text("")
    code = textwrap.dedent(f"""
        from kernel_providers.orphans import undo_if_orphaned
        undo_if_orphaned({{"remove_file": {str(keep)!r}}}).cancel()
        undo_if_orphaned({{"remove_file": {str(dropped)!r}}})
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    deadline = time.monotonic() + 5
    while dropped.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not dropped.exists() and keep.exists()


def _dead_pid() -> int:
    """A pid no process has now."""
    pid = 4_000_000
    while process_alive(pid):
        pid -= 1
    return pid


def test_cleanup_removes_the_connection_files_dead_launchers_left(kp_isolated: Path) -> None:
    """Without a reaper (it could not act), a SIGKILLed launcher leaves its connection
    file (with the kernel's key): `cleanup` removes it, and only files that are ours and
    whose writer is gone."""
    from kernel_providers.ownership import claim
    from kernel_providers.testing import command_argv

    env = {**os.environ, "KERNEL_PROVIDERS_NO_REAPER": "1"}
    script = subprocess.Popen([sys.executable, "-c", LAUNCHING_SCRIPT, "sigkill"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert script.stdout is not None
    made = json.loads(script.stdout.readline())
    script.kill()
    script.communicate(timeout=30)
    left = Path(str(made["file"]))
    assert left.exists()  # no reaper: the file stays
    dead = kp_isolated / f"kernel-kp-{_dead_pid()}-0a1b.json"
    dead.write_text("{}")
    live = kp_isolated / f"kernel-kp-{os.getpid()}-0a1b.json"  # this process is alive
    foreign = kp_isolated / "kernel-3f2a6c1e-7d4b-4c55-9a1e-0123456789ab.json"  # Jupyter's
    for path in (live, foreign):
        path.write_text("{}")
    held = claim("docker:held-by-this-process")
    out = subprocess.run(command_argv("cleanup"), capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KERNEL_PROVIDERS_DISABLE":
                              "spec,environments,conda,venv,docker,ssh,slurm,example"})
    assert out.returncode == 0, out.stderr
    assert f"core: removed connection file {left}" in out.stdout
    assert not left.exists() and not dead.exists()
    assert live.exists() and foreign.exists() and held.exists()
    assert process_gone(int(made["kernel"]), 5)  # its parent-death signal ended it
    if process_alive(int(made["sleep"])):  # without a reaper, what it started stays
        os.kill(int(made["sleep"]), signal.SIGKILL)
