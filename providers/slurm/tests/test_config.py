"""The Slurm provider's parts that need no cluster: profile checking, how Slurm's end
of a job is told and turned into a status, and what happens without Slurm's commands."""

from __future__ import annotations

import asyncio

import pytest

from kernel_providers import ConfigError, ProviderUnavailable
from kernel_providers_slurm import SlurmProvider
from kernel_providers_slurm.cluster import LocalCluster
from kernel_providers_slurm.config import parse_profiles
from kernel_providers_slurm.jobs import JobState
from kernel_providers_slurm.launcher import _ended_by_slurm, _status_of


@pytest.mark.parametrize(("profiles", "message"), [
    ({"bad name": {}}, "a profile name is letters"),
    ({"p": "partition=debug"}, "expected a table of options"),
    ({"p": {"kernel": []}}, "kernel must not be an empty list"),
    ({"p": {"cpus": "four"}}, "cpus"),
])
def test_profiles_are_checked(profiles: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_profiles(profiles)


@pytest.mark.parametrize(("state", "says"), [
    (None, "Slurm no longer knows job 7"),
    (JobState("TIMEOUT", "TimeLimit"), "time limit was reached: raise `time`"),
    (JobState("OUT_OF_MEMORY"), "raise `mem`"),
    (JobState("CANCELLED by 0"), "it was cancelled"),
    (JobState("BOOT_FAIL", "NodeDown"), "its state is BOOT_FAIL (reason: NodeDown)"),
])
def test_slurms_end_of_a_job_is_told(state: JobState | None, says: str) -> None:
    assert says in _ended_by_slurm("7", state)


@pytest.mark.parametrize(("exit_code", "status"), [
    ("0:15", -15), ("3:0", 3), ("0:0", 0), ("", None), ("x:y", None)])
def test_slurms_exit_code_as_popen_reports_it(exit_code: str, status: int | None) -> None:
    assert _status_of(JobState("FAILED", exit_code=exit_code)) == status
    assert _status_of(None) is None


def test_without_slurms_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    provider = SlurmProvider()
    provider.config.profiles = {"p": {}}
    with pytest.raises(ProviderUnavailable, match="sbatch is not on PATH"):
        asyncio.run(provider.find_kernels())
    with pytest.raises(ProviderUnavailable, match=r"squeue is not on PATH.*slurm-client"):
        asyncio.run(LocalCluster().run("squeue"))
