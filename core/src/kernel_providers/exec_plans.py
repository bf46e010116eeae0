"""Exec plans: a local kernel that replaces its caller starts again without discovery.

A launch with ``LaunchOptions.replace_process`` (the Jupyter bridge's shim) ends in
``exec``. Just before it, the core records what it runs: the argv (the connection file
as ``{connection_file}``), the changes to the environment, the working directory, and the
stat signature of every input of that launch: the files and folders the provider names
(:meth:`KernelProvider.launch_inputs`), the configuration file and the folders plugins
are installed in. :func:`replay` runs a plan again when the same kernel id is asked for
in the same working directory with the same environment (``JPY_*`` variables aside) and
none of its inputs changed; otherwise it returns and the caller launches the normal way,
which records afresh. Providers that name no inputs, and launches that a
``kernel_launch_options`` hook may change, are never recorded.

Plans live in ``$XDG_CACHE_HOME/kernel-providers/exec-plans`` (0700 folder, 0600
files); they hold no copy of the environment, only its digest and the kernel's own
variables. ``KERNEL_PROVIDERS_NO_EXEC_PLANS=1`` turns replaying off.

This module imports nothing heavy: replaying must cost next to nothing.
"""

from __future__ import annotations

import json
import os
import sys

from .switches import switched_on

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import NoReturn

__all__ = ["become", "plan_file", "plans_dir", "record", "replay", "standard_inputs"]

_VERSION = 1
_PLACEHOLDER = "{connection_file}"
_KEEP = 64  # plans kept; the oldest go first


def plans_dir() -> str:
    """Where exec plans are kept."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".cache")
    return os.path.join(cache, "kernel-providers", "exec-plans")


def _digest(kernel_id: str, cwd: str, environ: Mapping[str, str]) -> str:
    try:
        from _blake2 import blake2b  # CPython's own: no OpenSSL to load, unlike hashlib
    except ImportError:  # pragma: no cover - other interpreters
        from hashlib import blake2b

    # JPY_* variables differ per start (session names, the client's pid) and reach the
    # kernel from the environment either way; everything else decides the launch.
    material = json.dumps([kernel_id, cwd, sorted(
        (k, v) for k, v in environ.items() if not k.startswith("JPY_"))])
    return blake2b(material.encode("utf-8", "surrogateescape"), digest_size=20).hexdigest()


def plan_file(kernel_id: str, cwd: str | None = None,
              environ: Mapping[str, str] | None = None) -> str:
    """The plan for ``kernel_id`` started from ``cwd`` with ``environ`` (default: this
    process's)."""
    digest = _digest(kernel_id, cwd or os.getcwd(), os.environ if environ is None else environ)
    return os.path.join(plans_dir(), digest + ".json")


def _signature(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def standard_inputs(config_file: str) -> list[str]:
    """Inputs of every launch: the configuration file and the folders on ``sys.path``
    (installing or removing a plugin changes one of them). Not the working directory
    that ``python -m`` puts there: files come and go in it all the time, and plans are
    kept per working directory anyway."""
    here = os.getcwd()
    return [config_file, *(p for p in sys.path if p and p != here and os.path.isdir(p))]


def record(kernel_id: str, argv: list[str], env: Mapping[str, str], cwd: str | None,
           connection_file: str, inputs: Iterable[str]) -> None:
    """Record the command about to replace this process; never raises (a plan that
    cannot be written only means the next start takes the normal way)."""
    try:
        changed: dict[str, str | None] = {
            k: v for k, v in env.items()
            if os.environ.get(k) != v and not k.startswith("JPY_")}
        changed.update({k: None for k in os.environ if k not in env
                        and not k.startswith("JPY_")})
        plan = {"version": _VERSION, "kernel_id": kernel_id,
                "argv": [a.replace(connection_file, _PLACEHOLDER) for a in argv],
                "env": changed, "cwd": cwd,
                "inputs": [[p, _signature(p)] for p in dict.fromkeys(inputs)]}
        folder = plans_dir()
        os.makedirs(folder, mode=0o700, exist_ok=True)
        path = plan_file(kernel_id)
        temporary = f"{path}.{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(plan, stream)
        os.replace(temporary, path)  # readers see a whole plan or none
        _prune(folder)
    except (OSError, ValueError, TypeError):
        pass


def _prune(folder: str) -> None:
    import contextlib  # recording only: replaying stays light

    entries = []
    for entry in os.scandir(folder):
        if entry.name.endswith(".json"):
            try:
                entries.append((entry.stat().st_mtime_ns, entry.path))
            except OSError:
                continue
    for _, path in sorted(entries)[:-_KEEP]:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _load(kernel_id: str) -> dict[str, object] | None:
    try:
        with open(plan_file(kernel_id), encoding="utf-8") as stream:
            plan = json.load(stream)
    except (OSError, ValueError):
        return None
    if not isinstance(plan, dict) or plan.get("version") != _VERSION \
            or plan.get("kernel_id") != kernel_id:
        return None
    inputs = plan.get("inputs")
    if not isinstance(inputs, list) or not all(
            isinstance(i, list) and len(i) == 2 and _signature(i[0]) == i[1] for i in inputs):
        return None  # something the launch depends on changed: discover again
    return plan


def replay(kernel_id: str, connection_file: str) -> None:
    """Become the kernel ``kernel_id`` on ``connection_file`` if a valid plan exists;
    returns (doing nothing) otherwise, or if the plan's program cannot be run."""
    if switched_on("KERNEL_PROVIDERS_NO_EXEC_PLANS"):
        return
    plan = _load(kernel_id)
    if plan is None:
        return
    try:
        argv = [str(a).replace(_PLACEHOLDER, connection_file) for a in plan["argv"]]  # type: ignore[attr-defined]
        env = dict(os.environ)
        for name, value in plan["env"].items():  # type: ignore[attr-defined]
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        cwd = plan.get("cwd")
    except (AttributeError, TypeError):
        return
    if switched_on("KERNEL_PROVIDERS_TRACE"):
        print(f"kernel-providers: {kernel_id}: replaying exec plan"
              f" {plan_file(kernel_id)}", file=sys.stderr, flush=True)
    here = os.getcwd()
    try:
        become(argv, env, str(cwd) if cwd else None)
    except OSError:
        os.chdir(here)  # the normal way starts where this process was, and says why
        import signal

        for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # Python's own settings again
            signal.signal(signum, signal.SIG_IGN)


def become(argv: list[str], env: Mapping[str, str], cwd: str | None) -> NoReturn:
    """Replace this process with ``argv`` (OSError if it cannot be run)."""
    import signal

    for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; a kernel
        signal.signal(signum, signal.SIG_DFL)        # starts with the defaults
    sys.stdout.flush()
    sys.stderr.flush()
    if cwd:
        os.chdir(cwd)
    os.execvpe(argv[0], argv, env)
