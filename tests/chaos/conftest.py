"""The chaos suite: every test here is part of the reliability report (its kind is its
module's name: ``test_ssh_faults.py`` -> "ssh faults")."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in item.nodeid.replace("\\\\", "/"):
            kind = item.nodeid.split("/")[-1].split(".py")[0].removeprefix("test_")
            item.add_marker(pytest.mark.reliability(kind.replace("_", " ")))
