"""pytest plugin of kernel-providers (entry point ``pytest11``): isolation fixtures.

``kp_isolated`` gives a test its own Jupyter runtime dir (connection files) and an empty
configuration file, so the kernels and settings of the machine running the tests never
leak in. The conformance suite uses it automatically.

Tests marked ``@pytest.mark.reliability("<kind>")`` (faults, orphans, bad input,
security ...) are summed up at the end of the run in one table, the reliability suite's
report: what was tried, and whether it held.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@pytest.fixture
def kp_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime dir, cache dir (exec plans) and an empty config file; yields the
    runtime dir."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    config = tmp_path / "kernel_providers.toml"
    config.write_text("")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("KERNEL_PROVIDERS_CONFIG", str(config))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield runtime


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability(kind): part of the reliability suite (a fault, an orphan,"
        " bad input, a security property); summed up in a table at the end of the run")
    config.stash[_RESULTS] = _Results()


@dataclass
class _Results:
    rows: dict[str, list[str]] = field(default_factory=dict)


_RESULTS = pytest.StashKey[_Results]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marker = item.get_closest_marker("reliability")
    if marker is not None and (report.when == "call" or report.outcome != "passed"):
        kind = str(marker.args[0]) if marker.args else "other"
        rows = item.config.stash[_RESULTS].rows
        if report.when == "call" or item.nodeid not in rows:
            name = item.nodeid.split("::", 1)[-1]
            name = name if len(name) <= 90 else name[:89] + "…"
            rows[item.nodeid] = [kind, name, report.outcome,
                                 f"{report.duration:.1f}"]
        elif report.outcome != "passed":  # an error in teardown turns a pass into a failure
            rows[item.nodeid][2] = f"{report.when} {report.outcome}"
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = sorted(terminalreporter.config.stash[_RESULTS].rows.values())
    if not rows:
        return
    held = sum(row[2] == "passed" for row in rows)
    terminalreporter.section(f"reliability suite: {held} of {len(rows)} held")
    table = [["KIND", "TEST", "RESULT", "SECONDS"], *rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        terminalreporter.write_line("  ".join(cells).rstrip())

