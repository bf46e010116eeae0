"""Every hook: exercised with a real kernel, and documented with its signature."""

from __future__ import annotations

import asyncio
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import KernelLauncher, KernelType, LaunchOptions, hookimpl, hookspecs
from kernel_providers.testing import run_code

HOOKS = {name: fn for name, fn in vars(hookspecs).items()
         if callable(fn) and hasattr(fn, "kernel_providers_spec")}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"


class Recorder:
    """Implements every launch hook; the launch-options hook sets a variable the
    kernel must see (the real use: adjusting env before any launch)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def kernel_launch_options(self, kernel_type: KernelType, options: LaunchOptions) -> None:
        self.calls.append(("kernel_launch_options", kernel_type.id))
        options.env["KP_FROM_HOOK"] = f"set for {kernel_type.id}"

    @hookimpl
    def kernel_started(self, launcher: KernelLauncher) -> None:
        self.calls.append(("kernel_started", launcher.kernel_info is not None))

    @hookimpl
    def kernel_stopped(self, launcher: KernelLauncher, status: int | None) -> None:
        self.calls.append(("kernel_stopped", status))


def test_every_hook_is_exercised(kp_isolated: Path, make_finder: Any, fake_dists: Path,
                                 monkeypatch: Any, capsys: Any) -> None:
    from kernel_providers.cli import main

    # register_cli_commands: a plugin (installed as a fake distribution) adds a command.
    monkeypatch.setenv("KERNEL_PROVIDERS_DISABLE", "fakebroken,fakedup")
    assert main(["fakegood-hello", "world"]) == 0
    assert capsys.readouterr().out == "hello from fakegood, world\n"
    recorder = Recorder()
    finder = make_finder(recorder)  # the test provider comes through register_kernel_providers

    async def scenario() -> None:
        launcher = await finder.launch("test/python")
        out, _, _ = await run_code(launcher, "import os; print(os.environ['KP_FROM_HOOK'])")
        assert out == "set for test/python\n"
        await launcher.shutdown()
        await launcher.cleanup()  # idempotent: kernel_stopped fires once

    asyncio.run(scenario())
    assert "test" in finder.providers
    assert recorder.calls == [("kernel_launch_options", "test/python"),
                              ("kernel_started", True), ("kernel_stopped", 0)]
    exercised = {name for name, _ in recorder.calls} | {"register_kernel_providers",
                                                         "register_cli_commands"}
    assert exercised == set(HOOKS)


def test_a_failing_observer_hook_does_not_stop_the_kernel(kp_isolated: Path,
                                                          make_finder: Any) -> None:
    class Broken:
        @hookimpl
        def kernel_started(self, launcher: KernelLauncher) -> None:
            raise RuntimeError("observer bug")

        @hookimpl
        def kernel_stopped(self, launcher: KernelLauncher, status: int | None) -> None:
            raise RuntimeError("observer bug")

    heard = Recorder()
    finder = make_finder(heard, Broken())  # Broken is called first by pluggy's order

    async def scenario() -> None:
        launcher = await finder.launch("test/python")
        assert launcher.poll() is None
        assert await launcher.shutdown() == 0

    asyncio.run(scenario())
    # The other plugin still heard both events.
    assert [name for name, _ in heard.calls] == [
        "kernel_launch_options", "kernel_started", "kernel_stopped"]


def test_every_hook_is_documented_in_the_spec_and_the_docs() -> None:
    text = DOCS.read_text()
    for name, fn in HOOKS.items():
        assert (fn.__doc__ or "").strip(), f"hook {name} has no docstring"
        args = ", ".join(inspect.signature(fn).parameters)
        heading = rf"^##+ `?{re.escape(name)}\({re.escape(args)}\)`?\s*$"
        assert re.search(heading, text, re.MULTILINE), f"{DOCS} lacks '## {name}({args})'"


def _launch_and_stop(finder: Any, code: str | None = None) -> str:
    async def scenario() -> str:
        launcher = await finder.launch("test/python")
        out = ""
        if code is not None:
            out, _, _ = await run_code(launcher, code)
        await launcher.shutdown()
        return out

    return asyncio.run(scenario())


def test_observer_hooks_run_in_pluggys_order(kp_isolated: Path, make_finder: Any) -> None:
    heard: list[str] = []

    def observer(name: str, **opts: Any) -> Any:
        class Observer:
            @hookimpl(**opts)
            def kernel_started(self, launcher: KernelLauncher) -> None:
                heard.append(f"started:{name}")

            @hookimpl(**opts)
            def kernel_stopped(self, launcher: KernelLauncher, status: int | None) -> None:
                heard.append(f"stopped:{name}")
        return Observer()

    # pluggy: tryfirst first, trylast last, the others newest first.
    finder = make_finder(observer("last", trylast=True), observer("old"),
                         observer("first", tryfirst=True), observer("new"))
    _launch_and_stop(finder)
    order = ["first", "new", "old", "last"]
    assert heard == [f"started:{n}" for n in order] + [f"stopped:{n}" for n in order]


def test_wrappers_of_per_plugin_hooks_are_refused_and_others_honoured(
        kp_isolated: Path, make_finder: Any) -> None:
    import pytest

    class WrapsStarted:
        @hookimpl(wrapper=True)
        def kernel_started(self, launcher: KernelLauncher) -> Any:
            return (yield)

    finder = make_finder()
    with pytest.raises(ValueError, match="kernel_started is called for each plugin on its"
                                         " own, so it cannot be a wrapper"):
        finder.register(WrapsStarted(), name="wraps-started")
    assert not finder.manager.has_plugin("wraps-started")

    class WrapsOptions:
        """A wrapper sees the options after every plain hookimpl changed them."""

        @hookimpl(wrapper=True)
        def kernel_launch_options(self, kernel_type: KernelType,
                                  options: LaunchOptions) -> Any:
            result = yield
            options.env["KP_WRAPPED"] = f"after {options.env.get('KP_FROM_HOOK')}"
            return result

    finder.register(WrapsOptions())
    finder.register(Recorder())
    out = _launch_and_stop(finder, "import os; print(os.environ['KP_WRAPPED'])")
    assert out == "after set for test/python\n"


def test_trace_shows_every_hook_call(kp_isolated: Path, make_finder: Any, fake_dists: Path,
                                     monkeypatch: Any, capsys: Any) -> None:
    from kernel_providers.cli import main

    monkeypatch.setenv("KERNEL_PROVIDERS_TRACE", "1")
    monkeypatch.setenv("KERNEL_PROVIDERS_DISABLE", "fakebroken,fakedup")
    assert main(["fakegood-hello", "world"]) == 0
    finder = make_finder(Recorder())
    _launch_and_stop(finder)
    err = capsys.readouterr().err
    for name in HOOKS:
        assert re.search(rf"^ *{name} \[hook\]", err, re.MULTILINE), f"{name} not traced"


@pytest.mark.reliability("security")
def test_trace_never_shows_the_key(kp_isolated: Path, make_finder: Any, capsys: Any,
                                   monkeypatch: Any) -> None:
    """A restart passes the old connection (with its key) through kernel_launch_options:
    the trace shows the options without the key."""
    monkeypatch.setenv("KERNEL_PROVIDERS_TRACE", "1")
    finder = make_finder()

    async def scenario() -> str:
        launcher = await finder.launch("test/python")
        key = launcher.connection_info["key"]
        again = await launcher.restart()
        await again.shutdown()
        return str(key)

    key = asyncio.run(scenario())
    err = capsys.readouterr().err
    assert "connection_info=" in err and "'key': '<hidden>'" in err  # traced, key hidden
    assert key and key not in err
