"""The Slurm provider on a real cluster (scripts/slurm-cluster): the conformance suite,
queue waits, Slurm's refusals, orphans. Kernels run as jobs of node kpnode1 (this
machine), started by the nanny with this test run's Python."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, ConfigError, KernelDied, KernelFinder, LaunchFailed
from kernel_providers.testing import ConformanceSuite, run_code


def our_jobs(root: Path) -> set[str]:
    """Ids of the jobs in the queue that this test run's launches made: their comment
    says they are ours and they work in a folder under ``root`` (another test run
    sharing the cluster has its own)."""
    done = subprocess.run(["squeue", "-h", "-o", "%i|%Z|%k"], capture_output=True,
                          text=True, timeout=30, check=True)
    jobs = set()
    for line in done.stdout.splitlines():
        job_id, folder, comment = line.split("|", 2)
        if comment.startswith("kernel-providers ") and folder.startswith(f"{root}/"):
            jobs.add(job_id)
    return jobs


@pytest.fixture(scope="session")
def runs_jobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder under which this test run's job folders lie."""
    return tmp_path_factory.getbasetemp()


EXITS = [sys.executable, "-c", "print('slurm-exits-marker'); raise SystemExit(3)"]


def slurm_config(job_dir: Path, **extra: Any) -> dict[str, Any]:
    """[providers.slurm] for the test cluster: this run's Python on the node."""
    profiles = {"py": {"cpus": 1}, "exits": {"kernel": EXITS},
                "tiny": {"partition": "tiny", "cpus": 1}}
    profiles.update(extra.pop("profiles", {}))
    return {"job_dir": str(job_dir), "python": sys.executable, "poll_interval": 0.2,
            "profiles": profiles, **extra}


def launching_process(job_dir: Path, reaper: bool = True,
                      **extra: Any) -> tuple[subprocess.Popen[str], str]:
    """A process that launches slurm/py and sleeps (see testing.launching_process)."""
    from kernel_providers_slurm.testing import launching_process

    return launching_process(slurm_config(job_dir, **extra), "slurm/py", reaper)


def ended(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def finder_for(job_dir: Path, **extra: Any) -> KernelFinder:
    return KernelFinder(Config(providers={"slurm": slurm_config(job_dir, **extra)}))


@pytest.fixture
def job_dir(slurm_cluster: Path, kp_isolated: Path, tmp_path: Path,
            runs_jobs: Path) -> Iterator[Path]:
    """The jobs' folder for one test; checks that no job and no job folder is left."""
    before = our_jobs(runs_jobs)
    folder = tmp_path / "jobs"
    yield folder
    deadline = time.monotonic() + 15  # a cancelled job may be completing for a moment
    while (left := our_jobs(runs_jobs) - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    for job_id in left:
        subprocess.run(["scancel", job_id], check=False)
    assert not left, f"jobs left in the queue: {left}"
    assert not folder.exists() or list(folder.iterdir()) == [], list(folder.iterdir())


class TestSlurmConformance(ConformanceSuite):
    kernel_id = "slurm/py"
    failing_kernel_id = "slurm/exits"
    failing_kernel_output = "slurm-exits-marker"
    concurrent_launches = 2  # the node has 2 CPUs: more would wait in the queue

    jobs_root = Path("/nonexistent")

    @pytest.fixture
    def finder(self, job_dir: Path, runs_jobs: Path) -> KernelFinder:
        self.jobs_root = runs_jobs
        return finder_for(job_dir)

    def leftovers(self, runtime_dir: Path) -> set[str]:
        return super().leftovers(runtime_dir) | our_jobs(self.jobs_root)


def test_code_runs_in_the_job(job_dir: Path) -> None:
    async def scenario() -> None:
        launcher = await finder_for(job_dir).launch("slurm/py")
        try:
            out, _, _ = await run_code(launcher, "import os; print(os.environ['SLURM_JOB_ID'])")
            assert out.strip() == launcher.job.job_id  # type: ignore[attr-defined]
            assert launcher.attach_state() == {  # the bridge re-attaches by these
                "job_id": launcher.job.job_id,  # type: ignore[attr-defined]
                "job_dir": launcher.job.folder,  # type: ignore[attr-defined]
                "login": None}  # submitted from this machine
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def test_slurm_refusal_is_the_error(job_dir: Path) -> None:
    """A partition Slurm does not have: sbatch's own message, the fix, nothing left."""
    finder = finder_for(job_dir, profiles={"nopart": {"partition": "no-such-part"}})
    with pytest.raises(LaunchFailed) as failed:
        asyncio.run(finder.launch("slurm/nopart"))
    message = str(failed.value)
    assert "slurm/nopart" in message and "invalid partition" in message.lower(), message
    assert "sinfo" in message


def test_unknown_profile_key_is_a_config_error(job_dir: Path) -> None:
    """The listing reports it (other profiles are not guessed at), a launch raises it."""
    finder = finder_for(job_dir, profiles={"typo": {"partitoin": "debug"}})
    assert asyncio.run(finder.find_kernels(provider="slurm")) == []
    (report,) = [r for r in finder.reports if r.id == "slurm"]
    assert report.status == "error"
    assert "[providers.slurm.profiles.typo]: unknown key 'partitoin'" in report.message
    with pytest.raises((ConfigError, LookupError), match="partitoin"):
        asyncio.run(finder.launch("slurm/py"))


@pytest.fixture
def full_tiny_partition(slurm_cluster: Path) -> Iterator[str]:
    """A job holding the one CPU of partition "tiny" (its jobs wait: Resources)."""
    done = subprocess.run(["sbatch", "--parsable", "-p", "tiny", "-c", "1", "--wrap",
                           "sleep 600", "-o", "/dev/null"], capture_output=True, text=True,
                          check=True)
    blocker = done.stdout.strip()
    try:
        for _ in range(100):
            state = subprocess.run(["squeue", "-h", "-j", blocker, "-o", "%T"],
                                   capture_output=True, text=True).stdout.strip()
            if state == "RUNNING":
                break
            time.sleep(0.1)
        yield blocker
    finally:
        subprocess.run(["scancel", blocker], check=False)


def test_queue_wait_shows_progress_and_gives_up(job_dir: Path, full_tiny_partition: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    finder = finder_for(job_dir, queue_wait=2)
    caplog.set_level(logging.INFO, logger="kernel_providers.progress")
    started = time.monotonic()
    with pytest.raises(LaunchFailed, match="still waits in the queue after 2 s") as failed:
        asyncio.run(finder.launch("slurm/tiny"))
    assert time.monotonic() - started < 30
    assert "queue_wait" in str(failed.value)
    pending = [r for r in caplog.records if getattr(r, "slurm_state", "") == "PENDING"]
    assert pending, [r.getMessage() for r in caplog.records]
    assert "PENDING" in pending[0].getMessage()


def test_cancelling_a_queued_launch_cancels_the_job(job_dir: Path, full_tiny_partition: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C (a cancelled task) while the job waits: scancel, nothing left."""
    finder = finder_for(job_dir)
    caplog.set_level(logging.INFO, logger="kernel_providers.progress")

    async def scenario() -> None:
        launch = asyncio.ensure_future(finder.launch("slurm/tiny"))
        for _ in range(100):
            if any(getattr(r, "slurm_state", "") == "PENDING" for r in caplog.records):
                break
            await asyncio.sleep(0.1)
        assert our_jobs(job_dir.parent), "the job was not submitted"
        launch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await launch

    asyncio.run(scenario())
    # (the job_dir fixture checks the queue and the folder)


@pytest.mark.parametrize("reaper", [True, False])
def test_a_dead_launchers_job_ends(job_dir: Path, reaper: bool) -> None:
    """The launching process SIGKILLed: its reaper cancels the job at once; without a
    reaper, the nanny ends the kernel when the lease runs out, which ends the job."""
    proc, job_id = launching_process(job_dir, reaper, lease_seconds=3)
    try:
        assert job_id in our_jobs(job_dir.parent)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed = time.monotonic()
        while job_id in our_jobs(job_dir.parent) and time.monotonic() - killed < 20:
            time.sleep(0.2)
        gone_after = time.monotonic() - killed
        assert job_id not in our_jobs(job_dir.parent), "the job outlived its launcher"
        assert gone_after < (5 if reaper else 3 + 10), gone_after
    finally:
        ended(proc)
    if not reaper:  # the folder stays for `cleanup` (nobody else removes it)
        shutil.rmtree(job_dir, ignore_errors=True)


def test_a_busy_event_loop_does_not_end_the_kernel(job_dir: Path) -> None:
    """The lease says the launching *process* lives, not that its event loop is free: a
    Jupyter server busy for longer than the lease (a blocking call in a handler) keeps
    its Slurm kernels."""
    async def scenario() -> None:
        launcher = await finder_for(job_dir, lease_seconds=2).launch("slurm/py")
        try:
            await launcher.execute("x = 1")
            time.sleep(5)  # blocks this event loop: no coroutine runs meanwhile
            await asyncio.sleep(0.5)  # (the nanny's check runs every 0.1 s)
            out, _, _ = await run_code(launcher, "print(x + 1)")
            assert out == "2\n", launcher.output
        finally:
            assert await launcher.shutdown() == 0

    asyncio.run(scenario())


def test_cleanup_cancels_only_our_orphans(job_dir: Path, tmp_path: Path) -> None:
    """A job whose comment looks like ours (with a dead launcher) but whose owner tag
    does not verify is never touched; an orphan of ours is cancelled."""
    from kernel_providers_slurm import SlurmProvider

    forged = subprocess.run(
        ["sbatch", "--parsable", "-o", "/dev/null", "--job-name=kp-py",
         "--comment=kernel-providers launcher=h:1:2 kernel=slurm/py owner=forged",
         "--wrap", "sleep 600"], capture_output=True, text=True, check=True).stdout.strip()
    proc, orphan = launching_process(job_dir, reaper=False)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        provider = SlurmProvider()
        provider.config.job_dir = str(job_dir)
        removed = asyncio.run(provider.cleanup_orphans())
        assert removed == [f"Slurm job {orphan} (slurm/py)"]
        for _ in range(150):  # (completing for a moment)
            queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True,
                                    text=True).stdout.split()
            if orphan not in queued:
                break
            time.sleep(0.1)
        assert forged in queued and orphan not in queued
        assert not any(job_dir.iterdir()), "the orphan's folder was left"
    finally:
        subprocess.run(["scancel", forged], check=False)
        ended(proc)


def test_a_detached_job_is_reattached_by_another_process(job_dir: Path) -> None:
    """As a restarted Jupyter server does: the launching process detaches the kernel and
    ends (past the lease: a detached job keeps running); another process re-attaches
    from attach_state and the connection info, runs code, and shuts it down."""
    from kernel_providers_slurm.testing import detached_elsewhere

    state, info = detached_elsewhere(slurm_config(job_dir, lease_seconds=2), "slurm/py")
    time.sleep(3)  # longer than the lease: a held job would have ended by now
    assert state["job_id"] in our_jobs(job_dir.parent)

    async def scenario() -> None:
        finder = finder_for(job_dir, lease_seconds=2)
        launcher = await finder.attach("slurm/py", state, info)
        try:
            out, _, _ = await run_code(launcher, "print(x + 1)")
            assert out == "42\n"
        finally:
            assert await launcher.shutdown() == 0

    asyncio.run(scenario())


def test_cli_shows_the_queue_on_a_live_line(job_dir: Path, full_tiny_partition: str,
                                            tmp_path: Path) -> None:
    """`kernel-providers run` on a terminal: while the job waits, the status line says
    its state and Slurm's reason; once it runs, the line is cleared and the code's
    output follows."""
    import pty
    import select

    from kernel_providers.testing import command_argv, command_environment

    (tmp_path / "cli").mkdir()
    env = command_environment(tmp_path / "cli", "kernelspec,environments,docker,ssh")
    Path(env["KERNEL_PROVIDERS_CONFIG"]).write_text(textwrap.dedent(f"""
        [providers.slurm]
        job_dir = {json.dumps(str(job_dir))}
        python = {json.dumps(sys.executable)}
        poll_interval = 0.2
        [providers.slurm.profiles.tiny]
        partition = "tiny"
        cpus = 1
    """))
    terminal, side = pty.openpty()
    proc = subprocess.Popen(command_argv("run", "slurm/tiny", "--code", "print(6 * 7)"),
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=side, text=True)
    os.close(side)
    shown = b""
    try:
        deadline = time.monotonic() + 60
        while b"PENDING (Resources)" not in shown and time.monotonic() < deadline:
            if select.select([terminal], [], [], 0.5)[0]:
                shown += os.read(terminal, 4096)
        assert b"PENDING (Resources)" in shown, shown
        subprocess.run(["scancel", full_tiny_partition], check=True)  # room: it starts
        out, _ = proc.communicate(timeout=120)
        with contextlib.suppress(OSError):
            while select.select([terminal], [], [], 0.2)[0]:
                shown += os.read(terminal, 4096)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(terminal)
    assert proc.returncode == 0, shown.decode(errors="replace")
    assert out.strip() == "42"
    line = shown.decode(errors="replace")
    assert "\r\x1b[K" in line and "starting slurm/tiny ... Slurm job" in line, line
    assert line.endswith("\r\x1b[K"), repr(line[-80:])  # cleared before the output


def test_a_bad_sbatch_option_is_sbatchs_error(job_dir: Path) -> None:
    finder = finder_for(job_dir, profiles={"bad": {"sbatch_args": ["--no-such-option"]}})
    with pytest.raises(LaunchFailed) as failed:
        asyncio.run(finder.launch("slurm/bad"))
    message = str(failed.value)
    assert "Slurm refused the job of slurm/bad" in message
    assert "no-such-option" in message and "sbatch_args" in message, message


@pytest.mark.timeout(300)
def test_the_time_limit_ends_the_kernel_and_says_so(job_dir: Path) -> None:
    """Slurm's time limit (1 minute, its smallest) ends the job under a running kernel:
    wait() returns the kernel's status, the output and the next request's error say
    the time limit was reached and what to do; nothing is left."""
    finder = finder_for(job_dir, profiles={"short": {"time": "1", "cpus": 1}})

    async def scenario() -> None:
        launcher = await finder.launch("slurm/short")
        try:
            status = await asyncio.wait_for(launcher.wait(), 200)
            assert status in (-signal.SIGTERM, -signal.SIGKILL), status
            assert "its time limit was reached: raise `time` in the profile" in \
                launcher.output, launcher.output
            with pytest.raises(KernelDied, match="time limit was reached"):
                await launcher.execute("1")
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def test_parameters_pick_the_partition_and_the_limits(job_dir: Path) -> None:
    """A profile's parameters: the job really runs in the chosen partition with the
    chosen time limit and CPUs (Slurm says so); asking beyond the profile, or for a
    partition it does not offer, is refused before anything is submitted."""
    from kernel_providers import LaunchOptions, ParameterError

    finder = finder_for(job_dir, profiles={"knobs": {
        "cpus": 1, "time": "10", "partitions": ["debug", "tiny"], "partition": "debug",
        "max_time": "1:00:00", "max_cpus": 2}})

    async def scenario() -> None:
        kernel = await finder.get_kernel_type("slurm/knobs")
        assert kernel.parameters is not None
        assert kernel.parameters["properties"]["partition"] == {
            "enum": ["debug", "tiny"], "title": "Partition", "default": "debug",
            "description": "the partition (queue) the job runs in"}
        launcher = await finder.launch("slurm/knobs", LaunchOptions(parameters={
            "partition": "tiny", "time": "0:20:00"}))
        try:
            job_id = launcher.job.job_id  # type: ignore[attr-defined]
            shown = subprocess.run(["scontrol", "show", "job", "-o", job_id],
                                   capture_output=True, text=True, check=True).stdout
            assert "Partition=tiny" in shown and "TimeLimit=00:20:00" in shown, shown
            assert "NumCPUs=1" in shown, shown
            out, _, _ = await run_code(launcher, "print(6 * 7)")
            assert out == "42\n"
        finally:
            assert await launcher.shutdown() == 0
        before = our_jobs(job_dir.parent)
        for values, says in (({"time": "2:00:00"}, "more than max_time = 1:00:00"),
                             ({"partition": "remote"}, "parameter 'partition' = \"remote\""),
                             ({"cpus": 3}, "parameter 'cpus' = 3 is not allowed"),
                             ({"time": "10; scancel -u root"}, "parameter 'time' = ")):
            with pytest.raises(ParameterError, match=re.escape(says)):
                await finder.launch("slurm/knobs", LaunchOptions(parameters=values))
        assert our_jobs(job_dir.parent) == before  # nothing was submitted

    asyncio.run(scenario())
