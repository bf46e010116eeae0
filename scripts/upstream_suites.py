#!/usr/bin/env python3
"""Run jupyter_client's and nbclient's own test suites twice, stock and with the Jupyter
bridge's KernelProvidersKernelSpecManager as *the* KernelSpecManager, and compare.

    python scripts/upstream_suites.py [--suite S] [--mode M] [--report FILE] [-j N]

The upstream sources are the sdists of the versions installed in .venv, downloaded once
per version into ~/.cache/kernel-providers/upstream-sdists ($KP_UPSTREAM_SDISTS). Their
test dependencies (pytest-jupyter, pytest-asyncio, flaky ...) live in their own venv,
.venv-upstream, so their pytest plugins never touch our own suite; it holds our core,
spec provider and bridge as editable installs, and is only rebuilt when its inputs change.
Each run works in a fresh copy of the sources and loads scripts/upstream_record_plugin.py
(outcomes as JSON lines; a test hung on a child process gets its children killed after
75 s, so it fails instead of stalling the run); the bridged runs also load
scripts/upstream_bridge_plugin.py. Runs, logs and the report go to .upstream-suites/.

Prints a table (suite, mode, passed, failed, errors, skipped), writes the counts and the
failing test ids to a JSON report, and exits 1 when, for any suite, the bridged run has
more failures + errors than the stock one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10: tomli is a dependency of our core there
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".upstream-suites"  # runs, logs, report
#: the extracted sdists, per version, outside the work tree: CI runs in a fresh clone
SDISTS = Path(os.environ.get("KP_UPSTREAM_SDISTS") or Path(
    os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kernel-providers"
    / "upstream-sdists")
VENV = ROOT / ".venv-upstream"
BRIDGE_PLUGIN = "upstream_bridge_plugin"  # scripts/upstream_bridge_plugin.py: bridged only
RECORD_PLUGIN = "upstream_record_plugin"  # scripts/upstream_record_plugin.py: both modes
MODES = ("stock", "bridged")
#: bump to force a rebuild of .venv-upstream when the way it is built changes
SETUP_REVISION = "1"
#: our distributions the bridge needs (editable: source edits count without a rebuild)
OURS = ("core", "providers/kernelspec", "bridges/jupyter")
#: test extras that only measure or lint (coverage, type checks, hooks): not installed
SKIP_EXTRAS = {"coverage", "pytest-cov", "mypy", "pre-commit", "paramiko"}
#: the upstream suites know local kernelspecs only; same in both modes
DISABLE = "conda,venv,docker,ssh,slurm,example"
RERUNS = 2  # bridged-only failures run again alone, up to this many times
#: outcome in the record -> Result counter
COUNTERS = {"passed": "passed", "failed": "failed", "error": "errors", "skipped": "skipped"}
#: upstream_record_plugin kills the children of a test running longer than this (both modes)
REAP_AFTER = 75
#: wall-clock cap of one pytest run (both modes), far above a normal run
RUN_TIMEOUT = 420


@dataclass(frozen=True)
class Suite:
    dist: str
    paths: tuple[str, ...]
    #: extra pytest arguments, identical in both modes
    args: tuple[str, ...] = ()
    #: node ids deselected in both modes, with the reason. None so far: with
    #: jupyter_client 8.10.0 and nbclient 0.11.0 every test runs here (no network, no
    #: other kernel needed) and both modes of both suites take ~3.5 min at -j 2.
    deselect: dict[str, str] = field(default_factory=dict)


SUITES = {
    "jupyter_client": Suite(
        "jupyter_client",
        ("tests/test_kernelspec.py", "tests/test_kernelspecapp.py",
         "tests/test_kernelmanager.py", "tests/test_multikernelmanager.py",
         "tests/test_provisioning.py"),
        # pytest-asyncio is nbclient's (same venv), not jupyter_client's: its config warning
        # is an error under jupyter_client's filterwarnings=error. Their timeout_method
        # "thread" ends the whole run at the first hang ("restore to debug", they say);
        # "signal" fails just that test and goes on.
        ("-p", "no:asyncio", "-o", "timeout_method=signal"),
    ),
    # nbclient sets no timeout of its own; one keeps a hung kernel from eating the run.
    # pytest-asyncio warns (an error under their filterwarnings) without a loop scope.
    "nbclient": Suite("nbclient", ("tests",), (
        "--timeout=120", "-o", "asyncio_default_fixture_loop_scope=function")),
}


@dataclass
class Result:
    suite: str
    mode: str
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    exit_code: int | None = None
    log: str = ""
    #: node ids that failed or errored, with the first line of the message
    failures: dict[str, str] = field(default_factory=dict)
    #: bridged runs: KernelSpecManagers made, provisioner launches, aliases rebound
    bridge: dict[str, Any] = field(default_factory=dict)


def log(message: str) -> None:
    print(message, flush=True)


def main_python() -> Path:
    return Path(os.environ.get("KP_MAIN_PYTHON", ROOT / ".venv" / "bin" / "python"))


def installed_versions(dists: list[str]) -> dict[str, str]:
    """Versions installed in our main venv (what the bridge runs against)."""
    code = ("import importlib.metadata as m, json, sys;"
            "print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))")
    out = subprocess.run([str(main_python()), "-c", code, *dists], check=True,
                         capture_output=True, text=True).stdout
    versions: dict[str, str] = json.loads(out)
    return versions


def pip(python: Path, *args: str) -> None:
    """``python -m pip ARGS``, its output shown only on failure (this machine's pip config
    warns about every package it looks up)."""
    done = subprocess.run([str(python), "-m", "pip", *args, "--quiet",
                           "--disable-pip-version-check"], capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"pip {args[0]} failed (exit {done.returncode})")


def fetch_source(dist: str, version: str) -> Path:
    """The extracted sdist of ``dist==version``, downloaded only once."""
    target = SDISTS / f"{dist}-{version}"
    if (target / ".complete").exists():
        return target
    log(f"-- downloading the {dist} {version} sdist into {SDISTS}")
    SDISTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SDISTS) as tmp:  # same filesystem: rename below
        pip(main_python(), "download", "--no-deps", "--no-binary", ":all:",
            f"{dist}=={version}", "-d", tmp)
        (archive,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):  # 3.10.12+, 3.11.4+
                tar.extractall(tmp, filter="data")
            else:  # an sdist from PyPI of the version we already run
                tar.extractall(tmp)
        (extracted,) = (p for p in Path(tmp).iterdir() if p.is_dir())
        shutil.rmtree(target, ignore_errors=True)
        extracted.rename(target)
    (target / ".complete").write_text(version)
    return target


def upstream_test_extras(source: Path) -> list[str]:
    """The ``test`` extra of an upstream pyproject, less the measuring/linting tools."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    keep = []
    for requirement in project.get("optional-dependencies", {}).get("test", []):
        name = requirement.split(";")[0].split("[")[0]
        for op in "<>=!~ ":
            name = name.split(op)[0]
        if name.strip().lower() not in SKIP_EXTRAS and name.strip() != project["name"]:
            keep.append(requirement)
    return keep


def ensure_venv(versions: dict[str, str], sources: dict[str, Path]) -> Path:
    """.venv-upstream, built when missing or when any of its inputs changed."""
    requirements = [f"{d}=={v}" for d, v in versions.items()] + [
        r for d in versions for r in upstream_test_extras(sources[d])]
    # Same versions as our main venv for everything both have (ipykernel, pyzmq ...).
    freeze = subprocess.run([str(main_python()), "-m", "pip", "freeze", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout
    constraints = "".join(line + "\n" for line in freeze.splitlines()
                          if "==" in line and " @ " not in line)
    inputs = {
        "revision": SETUP_REVISION, "requirements": requirements,
        "constraints": constraints, "python": str(main_python().resolve()),
        "ours": {p: (ROOT / p / "pyproject.toml").read_text() for p in OURS},
    }
    stamp = VENV / ".inputs.json"
    python = VENV / "bin" / "python"
    try:
        built: dict[str, Any] = json.loads(stamp.read_text())
    except (OSError, ValueError):
        built = {}
    if python.exists() and built == inputs:
        return python
    changed = [k for k in inputs if built.get(k) != inputs[k]] if built else ["missing"]
    log(f"-- building {VENV.name} ({', '.join(changed)})")
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([str(main_python()), "-m", "venv", str(VENV)], check=True)
    constraints_file = CACHE / "constraints.txt"
    constraints_file.write_text(constraints)
    editables = [a for p in OURS for a in ("-e", str(ROOT / p))]
    pip(python, "install", "-c", str(constraints_file), *editables, *requirements)
    stamp.write_text(json.dumps(inputs, indent=1, sort_keys=True))
    return python


def parse_record(path: Path, result: Result) -> None:
    """Counts from upstream_record_plugin's JSON lines (the last attempt of a test wins)."""
    outcomes: dict[str, tuple[str, str]] = {}
    reaped: dict[str, list[str]] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        record = json.loads(line)
        if "bridge" in record:
            result.bridge = record["bridge"]
        elif "reaped" in record:
            reaped[record["reaped"]] = record["processes"]
        else:
            outcomes[record["nodeid"]] = (record["outcome"], record["message"])
    for node, (outcome, message) in outcomes.items():
        if outcome in ("failed", "error"):
            if node in reaped:
                message = (f"hung: its {len(reaped[node])} child process(es) killed after"
                           f" {REAP_AFTER}s; then: {message}")
            result.failures[node] = message
        counter = COUNTERS[outcome]
        setattr(result, counter, getattr(result, counter) + 1)


def run_suite(python: Path, name: str, source: Path, mode: str,
              nodes: list[str] | None = None, tag: str = "") -> Result:
    """One pytest run of a suite in ``mode``; only ``nodes`` (test ids) if given, its
    files then named with ``tag``."""
    suite = SUITES[name]
    result = Result(name, mode)
    runs = CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    record = runs / f"{name}-{mode}{tag}.jsonl"
    logfile = runs / f"{name}-{mode}{tag}.log"
    result.log = str(logfile.relative_to(ROOT))
    record.unlink(missing_ok=True)
    config = runs / "kernel_providers.toml"  # empty: no user config leaks in
    config.touch()
    # (test_kernelspecapp.py and the like: only where this version has them)
    paths = nodes or [p for p in suite.paths if (source / p).exists()]
    cmd = [str(python), "-m", "pytest", *paths, "-c", "pyproject.toml", "--rootdir", ".",
           # our core's pytest11 plugin autoloads in that venv: keep the suites pristine
           "-p", "no:kernel_providers", "-p", "no:cacheprovider", "-p", RECORD_PLUGIN,
           "--color=no", *suite.args, *(f"--deselect={node}" for node in suite.deselect)]
    if mode == "bridged":
        cmd += ["-p", BRIDGE_PLUGIN]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "KERNEL_PROVIDERS_", "JUPYTER_", "VIRTUAL_ENV"))}
    env.update(PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=str(ROOT / "scripts"), KERNEL_PROVIDERS_DISABLE=DISABLE,
               KERNEL_PROVIDERS_CONFIG=str(config), PYTHONDONTWRITEBYTECODE="1",
               KP_UPSTREAM_RECORD=str(record), KP_UPSTREAM_REAP_AFTER=str(REAP_AFTER))
    # A fresh copy per run: runs may go in parallel, and tests leave files in their cwd
    # (ipc sockets, notebooks' outputs); the cached sdist stays pristine.
    workdir = runs / f"{name}-{mode}{tag}"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(source, workdir, ignore=shutil.ignore_patterns("docs", ".complete"))
    started = time.monotonic()
    with logfile.open("w") as out:
        out.write(" ".join(cmd) + "\n\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            result.exit_code = proc.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
            proc.wait()
            out.write(f"\n!! killed after {RUN_TIMEOUT}s\n")
    result.seconds = round(time.monotonic() - started, 1)
    parse_record(record, result)
    problem = None
    if result.exit_code not in (0, 1):  # killed, crashed, an internal or usage error
        problem = f"pytest exit {result.exit_code}; see {result.log}"
    elif mode == "bridged" and not result.bridge.get("kernel_spec_managers"):
        problem = f"the bridge was never used (no bridged KernelSpecManager); see {result.log}"
    elif mode == "bridged" and result.bridge.get("stock_left"):
        problem = f"stock KernelSpecManager still bound at {result.bridge['stock_left']}"
    if problem:  # counts as one error of the run itself
        result.errors += 1
        result.failures[f"<{name} {mode} run>"] = problem
    return result


def rerun_flaky(python: Path, name: str, source: Path,
                failures: dict[str, str]) -> dict[str, int]:
    """Run each bridged-only failure bridged again, up to RERUNS times, alone: a test
    that then passes failed from the load of the parallel runs (upstream marks several
    such tests flaky), not from the bridge. Returns node id -> the rerun it passed."""
    passed: dict[str, int] = {}
    for node in sorted(n for n in failures if not n.startswith("<")):
        for attempt in range(1, RERUNS + 1):
            result = run_suite(python, name, source, "bridged", [node],
                               f"-rerun-{len(passed) + 1}-{attempt}")
            if not result.failures and result.passed:
                passed[node] = attempt
                break
    return passed


def table(results: list[Result]) -> str:
    head = ("suite", "mode", "passed", "failed", "errors", "skipped", "seconds")
    rows = [head] + [(r.suite, r.mode, str(r.passed), str(r.failed), str(r.errors),
                      str(r.skipped), f"{r.seconds:.0f}") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
                     for row in rows)


def compare(results: list[Result], suites: list[str], python: Path, sources: dict[str, Path]
            ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, int]], list[str]]:
    """(bridged-only failures, those of them that passed on a rerun, suites whose bridged
    run is worse than stock once the flaky ones are discounted); prints the failures."""
    regressions: dict[str, dict[str, str]] = {}
    flaky: dict[str, dict[str, int]] = {}
    worse: list[str] = []
    for name in suites:
        by_mode = {r.mode: r for r in results if r.suite == name}
        if len(by_mode) < 2:
            continue
        stock, bridged = by_mode["stock"], by_mode["bridged"]
        regressions[name] = {n: m for n, m in bridged.failures.items()
                             if n not in stock.failures}
        flaky[name] = rerun_flaky(python, name, sources[SUITES[name].dist],
                                  regressions[name])
        if bridged.failed + bridged.errors - len(flaky[name]) > stock.failed + stock.errors:
            worse.append(name)
    for name, failures in regressions.items():
        if failures:
            log(f"-- {name}: failing bridged only ({len(failures)}):")
            for node, message in sorted(failures.items()):
                log(f"   {node}: {message}")
                if node in flaky.get(name, {}):
                    log(f"     flaky, not a regression: passed bridged on rerun"
                        f" {flaky[name][node]} of {RERUNS}")
    return regressions, flaky, worse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", action="append", choices=sorted(SUITES),
                        help="run only this suite (repeatable); default all")
    parser.add_argument("--mode", action="append", choices=MODES,
                        help="run only this mode (repeatable); default both")
    parser.add_argument("--report", type=Path, default=CACHE / "report.json",
                        help="JSON report file (default %(default)s)")
    # Two at a time: the suites mostly wait on kernels, and the stock and bridged runs of
    # a suite then share the machine's load alike.
    parser.add_argument("-j", "--jobs", type=int, default=2,
                        help="pytest runs at once (default %(default)s)")
    args = parser.parse_args(argv)
    suites: list[str] = args.suite or list(SUITES)
    modes: list[str] = args.mode or list(MODES)

    started = time.monotonic()
    CACHE.mkdir(exist_ok=True)
    versions = installed_versions([SUITES[s].dist for s in SUITES])
    sources = {d: fetch_source(d, v) for d, v in versions.items()}
    python = ensure_venv(versions, sources)
    log(f"-- upstream suites: {', '.join(f'{d} {v}' for d, v in versions.items())}"
        f" ({VENV.name} ready after {time.monotonic() - started:.0f}s)")
    for name in suites:
        for node, reason in SUITES[name].deselect.items():
            log(f"   deselected in both modes: {name} {node}: {reason}")

    jobs = [(s, m) for s in suites for m in modes]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(
            lambda job: run_suite(python, job[0], sources[SUITES[job[0]].dist], job[1]),
            jobs))

    print(table(results), flush=True)
    for r in results:
        if r.bridge:
            log(f"   {r.suite} bridged: {r.bridge['kernel_spec_managers']} bridged"
                f" KernelSpecManagers made, {r.bridge['provisioner_launches']} kernels started"
                f" through its provisioner; the bridge is KernelSpecManager at"
                f" {len(r.bridge['bound'])} module attributes (list in the report)")
    regressions, flaky, worse = compare(results, suites, python, sources)
    report = {
        "versions": versions,
        "deselected": {s: SUITES[s].deselect for s in suites},
        "results": [asdict(r) for r in results],
        "bridged_only_failures": regressions,
        "bridged_only_flaky": flaky,
        "worse_bridged": worse,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    log(f"-- report: {args.report}; logs: {CACHE.relative_to(ROOT)}/runs/"
        f" ({report['seconds']:.0f}s in all)")
    if worse:
        log(f"!! bridged has more failures + errors than stock in: {', '.join(worse)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
