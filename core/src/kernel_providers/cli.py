"""The ``kernel-providers`` command: list, inspect, run and launch kernels of every provider.

Exit codes: 0 success; 1 the code given to ``run`` raised; 2 usage errors, unknown
kernels, bad configuration; 3 a kernel failed to start or died; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import re
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from .errors import ConfigError, KernelProviderError, LaunchFailed, NoSuchKernel
from .finder import KernelFinder
from .launcher import KernelLauncher
from .ownership import remove_stale_files
from .parameters import ParameterError, allowed_values, parse_value
from .pool_cli import add_pool_commands, autostart
from .provider import PROGRESS_LOGGER
from .switches import switched_on
from .text import one_line
from .types import LaunchOptions

if TYPE_CHECKING:
    from .protocol import Message
    from .types import KernelType

__all__ = ["main"]

EXIT_OK, EXIT_CODE_RAISED, EXIT_USAGE, EXIT_KERNEL_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Exit(Exception):
    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _one_line_warnings() -> None:
    def show(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
        _err(f"warning: {message}")
    warnings.showwarning = show


_finder: KernelFinder | None = None


def _make_finder(pool: bool = False) -> KernelFinder:
    """The command's one finder (and so one plugin manager), made on first use; it holds
    a pool only for ``pool serve`` (other commands are short-lived: they ask the pool
    service)."""
    global _finder
    if _finder is None:
        try:
            _finder = KernelFinder(pool=pool)
        except ConfigError as exc:
            raise _Exit(EXIT_USAGE, f"error: {exc}") from None
    return _finder


def _report_problems(finder: KernelFinder) -> None:
    # What providers say comes from folder and file names: one line each, whatever it holds.
    for error in finder.plugin_errors:
        _err(one_line(f"warning: {error}"))
    for report in finder.reports:
        if report.status == "error":
            _err(one_line(f"warning: provider {report.id!r} failed: {report.message}"))
        for problem in report.problems:
            _err(one_line(f"warning: {report.id}: {problem}"))


def _table(rows: list[list[str]], out: TextIO) -> None:
    rows = [[one_line(cell) for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


# --- list / providers / info -------------------------------------------------------------


async def cmd_list(args: argparse.Namespace) -> int:
    finder = _make_finder()
    try:
        kernels = await finder.find_kernels(refresh=args.refresh, provider=args.provider,
                                            all=args.all)
    except NoSuchKernel:
        raise _Exit(EXIT_USAGE, f"error: no provider {args.provider!r} is installed; see"
                    " `kernel-providers providers`") from None
    _report_problems(finder)
    if args.json:
        json.dump([k.to_dict() for k in kernels], sys.stdout, indent=2)
        print()
    elif kernels:
        _table([["ID", "LANGUAGE", "DISPLAY NAME"]]
               + [[k.id, k.language, _shown_name(k)] for k in kernels], sys.stdout)
    else:
        _err("no kernels found (`kernel-providers providers` shows what was searched)")
    return EXIT_OK


def _shown_name(kernel: KernelType) -> str:
    """The display name, with what `list` should say about it: the working directory's
    project (the id `.` picks it), or why it cannot start and the fix."""
    if not kernel.launchable:
        return f"{kernel.display_name} — not launchable: {kernel.metadata.get('hint', '')}"
    return f"{kernel.display_name}  [project: `.`]" if kernel.in_project else \
        kernel.display_name


async def cmd_providers(args: argparse.Namespace) -> int:
    finder = _make_finder()
    await finder.find_kernels(refresh=True)
    reports = finder.reports
    if args.json:
        json.dump({"providers": [r.to_dict() for r in reports],
                   "plugin_errors": [str(e) for e in finder.plugin_errors]},
                  sys.stdout, indent=2)
        print()
        return EXIT_OK
    rows = [["ID", "DISTRIBUTION", "VERSION", "STATUS", "KERNELS", "TIME"]]
    for r in reports:
        rows.append([r.id, r.distribution or f"(plugin {r.plugin})", r.version or "-",
                     r.status, str(r.kernel_count), f"{r.seconds * 1000:.0f} ms"])
    if len(rows) > 1:
        _table(rows, sys.stdout)
    else:
        _err("no providers installed (pip install kernel-providers-kernelspec, ...)")
    _report_problems(finder)
    return EXIT_OK


async def cmd_info(args: argparse.Namespace) -> int:
    finder = _make_finder()
    kernel = await finder.get_kernel_type(args.id)
    provider = finder.providers[kernel.provider]
    data = kernel.to_dict()
    data["distribution"], data["version"] = provider.distribution, provider.version
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
        return EXIT_OK
    for key in ("id", "display_name", "language", "provider", "distribution",
                "interrupt_mode"):
        print(one_line(f"{key + ':':16}{data[key]}"))
    properties = (kernel.parameters or {}).get("properties") or {}
    if properties:
        required = set((kernel.parameters or {}).get("required") or [])
        print("parameters:")
        rows = [["  NAME", "TYPE", "DEFAULT", "ALLOWED", "DESCRIPTION"]]
        for name, prop in properties.items():
            prop = prop if isinstance(prop, dict) else {}
            default = json.dumps(prop["default"]) if "default" in prop else (
                "(required)" if name in required else "-")
            rows.append([f"  {name}", str(prop.get("type", "-")), default, allowed_values(prop),
                         str(prop.get("description") or prop.get("title") or "")])
        _table([[one_line(cell) for cell in row] for row in rows], sys.stdout)
    for section in ("metadata", "resources"):
        if data[section]:
            print(f"{section}:")
            for key, value in data[section].items():
                shown = json.dumps(value) if not isinstance(value, str) else value
                print(one_line(f"  {key}: {shown}"))
    return EXIT_OK


async def cmd_cleanup(args: argparse.Namespace) -> int:
    finder = _make_finder()
    failed = False
    for provider in finder.providers.values():
        try:
            removed = await provider.cleanup_orphans()
        except Exception as exc:
            failed = True
            _err(f"error: provider {provider.id!r} could not clean up: {exc}")
            continue
        for line in removed:
            print(f"{provider.id}: removed {line}")
    for line in remove_stale_files():  # the connection files (with keys) dead launchers left
        print(f"core: removed {line}")
    return EXIT_KERNEL_FAILED if failed else EXIT_OK


# --- run / launch ------------------------------------------------------------------------


_ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _patient_while_shutting_down(loop: asyncio.AbstractEventLoop) -> None:
    """From here on, until the command returns, a signal does not end this process half
    way through a shutdown (that would leave a container or remote kernel behind)."""
    for signum in _ENDING_SIGNALS:
        loop.add_signal_handler(signum, _err, "still shutting the kernel down; a moment")


class _Progress(logging.Handler):
    """A launch's progress (``report_progress`` records): on a terminal the spinner's
    live line, else one line on stderr per change."""

    def __init__(self, kernel_id: str, live: bool) -> None:
        super().__init__(logging.INFO)
        self.kernel_id, self.live = kernel_id, live
        self.text = f"starting {kernel_id} ..."

    def emit(self, record: logging.LogRecord) -> None:
        message = str(getattr(record, "progress", record.getMessage()))
        if self.live:
            self.text = f"starting {self.kernel_id} ... {message}"
        else:
            _err(f"{self.kernel_id}: {message}")


async def _spinner(progress: _Progress) -> None:
    for frame in itertools.cycle("|/-\\"):
        sys.stderr.write(f"\r\x1b[K{frame} {progress.text}")
        sys.stderr.flush()
        await asyncio.sleep(0.1)


async def _parameters(finder: KernelFinder, args: argparse.Namespace) -> dict[str, Any]:
    """The values of ``--params-file`` and then ``--param NAME=VALUE`` (typed by the kernel
    type's schema); checked against it when the kernel is launched."""
    values: dict[str, Any] = {}
    if args.params_file:
        try:
            with open(args.params_file, encoding="utf-8") as f:
                loaded = json.load(f)
        except OSError as exc:
            raise _Exit(EXIT_USAGE, f"error: cannot read {args.params_file}:"
                        f" {exc.strerror}") from None
        except ValueError as exc:
            raise _Exit(EXIT_USAGE, f"error: {args.params_file} is not JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise _Exit(EXIT_USAGE, f"error: {args.params_file} must hold a JSON object of"
                        " parameter values")
        values.update(loaded)
    if args.param:
        kernel_type = await finder.get_kernel_type(args.id)
        for item in args.param:
            name, sep, text = item.partition("=")
            if not sep or not name:
                raise _Exit(EXIT_USAGE, f"error: --param {item!r}: write NAME=VALUE")
            values[name] = parse_value(kernel_type, name, text)
    return values


async def _start(finder: KernelFinder, kernel_id: str,
                 parameters: dict[str, Any] | None = None) -> KernelLauncher:
    progress = _Progress(kernel_id, sys.stderr.isatty())
    logger = logging.getLogger(PROGRESS_LOGGER)
    # Shown here only, not also as a "warning:" line by the root handler.
    logger.addHandler(progress)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    spinner = asyncio.ensure_future(_spinner(progress)) if progress.live else None
    try:
        launcher = await finder.launch(kernel_id, LaunchOptions(parameters=parameters or {}))
        autostart(finder)
        return launcher
    finally:
        logger.removeHandler(progress)
        logger.propagate = True
        if spinner is not None:
            spinner.cancel()
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _render(msg: Message) -> None:
    kind, content = msg["msg_type"], msg["content"]
    if kind == "stream":
        stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
        stream.write(content.get("text", ""))
        stream.flush()
    elif kind in ("execute_result", "display_data"):
        text = content.get("data", {}).get("text/plain")
        if text is not None:
            print(text, flush=True)
    elif kind == "error":
        trace = "\n".join(content.get("traceback") or
                          [f"{content.get('ename')}: {content.get('evalue')}"])
        _err(trace if sys.stderr.isatty() else _ANSI.sub("", trace))


def _read_code(args: argparse.Namespace) -> str:
    if args.code is not None:
        return str(args.code)
    where = "standard input" if args.file == "-" else args.file
    try:
        if args.file == "-":
            return sys.stdin.buffer.read().decode("utf-8")
        with open(args.file, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise _Exit(EXIT_USAGE, f"error: cannot read {where}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # the kernel would get mangled code
        raise _Exit(EXIT_USAGE, f"error: {where} is not UTF-8 text (byte"
                    f" {exc.object[exc.start]:#04x} at offset {exc.start}); save the code"
                    " as UTF-8") from None


async def cmd_run(args: argparse.Namespace) -> int:
    code = _read_code(args)
    finder = _make_finder()
    launcher = await _start(finder, args.id, await _parameters(finder, args))
    loop = asyncio.get_running_loop()
    execution = asyncio.ensure_future(launcher.execute(code, _render))
    interrupts: list[asyncio.Future[None]] = []

    def on_sigint() -> None:
        if not interrupts:
            _err("\ninterrupting the kernel (Ctrl-C again to shut it down)")
            interrupts.append(asyncio.ensure_future(launcher.interrupt()))
        else:
            execution.cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    # Being told to end (a closed terminal, a service manager) shuts the kernel down as a
    # second Ctrl-C does: nothing is left behind.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, execution.cancel)
    try:
        reply = await execution
    except asyncio.CancelledError:
        _patient_while_shutting_down(loop)
        _err("shutting the kernel down")
        await launcher.shutdown()
        return EXIT_INTERRUPTED
    except BaseException:
        # Whatever went wrong here (the kernel died, stdout was closed under us): the
        # kernel and everything its launch made go too.
        _patient_while_shutting_down(loop)
        await asyncio.shield(launcher.cleanup())
        raise
    _patient_while_shutting_down(loop)
    await launcher.release()  # (its exit status is not this command's)
    return EXIT_OK if reply["content"].get("status") == "ok" else EXIT_CODE_RAISED


async def cmd_launch(args: argparse.Namespace) -> int:
    finder = _make_finder()
    launcher = await _start(finder, args.id, await _parameters(finder, args))
    if args.json:
        json.dump({"id": launcher.kernel_type.id, "connection_file": launcher.connection_file,
                   "connection_info": launcher.connection_info}, sys.stdout)
        print(flush=True)
    else:
        print(launcher.connection_file, flush=True)
        _err(f"kernel {launcher.kernel_type.id} is running; connect with"
             f" `jupyter console --existing {launcher.connection_file}`; Ctrl-C stops it")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in _ENDING_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    ended = asyncio.ensure_future(launcher.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    _patient_while_shutting_down(loop)
    if ended.done():
        status = ended.result()
        await launcher.cleanup()
        _err(f"kernel {launcher.kernel_type.id} ended with status {status}")
        return EXIT_OK if status == 0 else EXIT_KERNEL_FAILED
    ended.cancel()
    status = await launcher.shutdown()
    _err(f"kernel {launcher.kernel_type.id} shut down (status {status})")
    return EXIT_OK


# --- entry point -------------------------------------------------------------------------


BUILTIN_COMMANDS = {"list", "providers", "info", "run", "launch", "cleanup", "pool"}


def _parameter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--param", action="append", metavar="NAME=VALUE",
                        help="a value for one of the kernel's parameters (typed by its"
                        " schema; `info ID` lists them); repeatable")
    parser.add_argument("--params-file", metavar="FILE",
                        help="a JSON object of parameter values (--param overrides)")


def _parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kernel-providers",
        description="Find and start Jupyter kernels from every installed provider.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the kernels of every provider")
    p.add_argument("--json", action="store_true", help="print a JSON array of kernel types")
    p.add_argument("--provider", metavar="P", help="only the kernels of provider P")
    p.add_argument("--refresh", action="store_true", help="ignore cached discovery results")
    p.add_argument("--all", action="store_true", help="also environments that cannot start"
                   " a kernel yet (no ipykernel), with the command that fixes that")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("providers", help="installed providers and how their discovery went")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_providers)

    p = sub.add_parser("info", help="describe one kernel")
    p.add_argument("id", help="kernel id, e.g. spec/python3")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser("run", help="start a kernel, run code in it, shut it down")
    p.add_argument("id", help="kernel id, e.g. spec/python3 (`.`: the kernel of the project"
                   " enclosing the current directory)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--code", "-c", help="the code to run")
    source.add_argument("file", nargs="?", help="a file of code, or - for standard input")
    _parameter_arguments(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("cleanup", help="remove what kernels of dead launchers left behind"
                       " (containers ...)")
    p.set_defaults(handler=cmd_cleanup)

    p = sub.add_parser("launch", help="start a kernel and keep it running until Ctrl-C")
    p.add_argument("id", help="kernel id, e.g. spec/python3 (`.`: the current project's)")
    p.add_argument("--json", action="store_true",
                   help="print the connection info as JSON too")
    _parameter_arguments(p)
    p.set_defaults(handler=cmd_launch)
    add_pool_commands(sub)
    if with_plugins:
        _plugin_commands(sub)
    return parser


def _plugin_commands(sub: Any) -> None:
    def failed(plugin: str, exc: Exception) -> None:
        _err(f"warning: plugin {plugin!r} could not add its commands: {exc}")

    _make_finder().manager.call_each("register_cli_commands", failed, subparsers=sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    _one_line_warnings()
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)
    global _finder
    _finder = None
    try:
        # Plugins' commands are only loaded when a built-in one is not asked for.
        args = _parser(with_plugins=command not in BUILTIN_COMMANDS).parse_args(words)
        args.finder = _finder  # a plugin's command reuses the finder that loaded it
        status: int = asyncio.run(args.handler(args))
        return status
    except _Exit as exc:
        if exc.message:
            _err(exc.message)
        return exc.code
    except (NoSuchKernel, ConfigError, ParameterError) as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except LaunchFailed as exc:
        _err(f"error: {exc}")
        return EXIT_KERNEL_FAILED
    except KernelProviderError as exc:
        _err(f"error: {exc}")
        return EXIT_KERNEL_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `kernel-providers list --json | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if switched_on("KERNEL_PROVIDERS_TRACE"):
            raise
        _err(f"unexpected error: {type(exc).__name__}: {exc}\nIf a plugin causes this, rule"
             " it out with KERNEL_PROVIDERS_DISABLE=<plugin> (see `kernel-providers"
             " providers`) or KERNEL_PROVIDERS_NO_AUTOLOAD=1; KERNEL_PROVIDERS_TRACE=1"
             " shows the traceback.")
        return EXIT_KERNEL_FAILED


if __name__ == "__main__":
    sys.exit(main())
