"""A real Slurm cluster on this machine for the whole test session (see
kernel_providers_slurm.testing); its SLURM_CONF in the environment of every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """The cluster's slurm.conf (started here, stopped at the end of the session)."""
    from kernel_providers_slurm.testing import slurm_cluster

    with slurm_cluster() as conf:
        yield conf
