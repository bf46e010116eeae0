"""pytest plugin (``-p upstream_record_plugin``) for scripts/upstream_suites.py, loaded in
*both* modes: records each test's outcome as a JSON line as soon as it is known (the
counts survive a run the runner has to kill), and frees a test stuck on a hung child
process (a process-pool worker waiting forever) by killing the children that test
started, so the test fails and the run goes on instead of hanging at the pool's exit.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

#: where the JSON lines go (set by the runner)
OUT = os.environ.get("KP_UPSTREAM_RECORD", "")
#: seconds a test may run before the children it started are killed: far above the
#: slowest stock test (~16 s), below the suites' own per-test timeouts (100 s, 120 s)
REAP_AFTER = float(os.environ.get("KP_UPSTREAM_REAP_AFTER", "75"))

_state: dict[str, dict[str, Any]] = {}


def _write(record: dict[str, Any]) -> None:
    if OUT:
        with Path(OUT).open("a") as out:
            out.write(json.dumps(record) + "\n")


def _reap(since: float, nodeid: str) -> None:
    # ipykernel's dependency, so present wherever these suites run
    import psutil  # type: ignore[import-untyped,unused-ignore]

    killed = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.create_time() >= since:
                child.kill()
                killed.append(f"{child.pid} {' '.join(child.cmdline())[:120]}")
        except psutil.Error:
            pass
    _write({"reaped": nodeid, "after": REAP_AFTER, "processes": killed})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    timer = threading.Timer(REAP_AFTER, _reap, (time.time() - 1, item.nodeid))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "setup":  # a new attempt (flaky reruns the whole protocol)
        _state[report.nodeid] = {"outcome": "passed", "message": ""}
    state = _state.setdefault(report.nodeid, {"outcome": "passed", "message": ""})
    if report.failed:
        # pytest's own convention: a failing setup/teardown is an error, a failing call
        # a failure; the first problem is the one reported.
        if state["outcome"] not in ("failed", "error"):
            state["outcome"] = "failed" if report.when == "call" else "error"
            crash = getattr(report.longrepr, "reprcrash", None)
            text = crash.message if crash is not None else str(report.longrepr)
            state["message"] = (text.strip().splitlines() or [""])[0][:300]
    elif report.skipped and state["outcome"] == "passed":  # xfail too, as junit counts it
        state["outcome"] = "skipped"
    if report.when == "teardown":
        _write({"nodeid": report.nodeid, **state})


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:  # a module that fails to import: one error, as pytest counts it
        _write({"nodeid": report.nodeid or "<collection>", "outcome": "error",
                "message": str(report.longrepr).strip().splitlines()[-1][:300]})
