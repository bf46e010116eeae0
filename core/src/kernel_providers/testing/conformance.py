"""The launcher-contract conformance suite, run against one kernel id of a provider.

Every test starts real kernels through :class:`~kernel_providers.KernelFinder` and
checks the launcher contract (docs/concepts.md, "The launcher contract") end to end.
The kernel must be a Python kernel (ipykernel): the tests run small Python snippets in
it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from ..blocking import BlockingKernelFinder
from ..errors import LaunchFailed
from ..finder import KernelFinder
from ..launcher import KernelLauncher
from ..protocol import Message
from ..types import InterruptMode

__all__ = ["ConformanceSuite", "run_code"]

T = TypeVar("T")


async def run_code(launcher: KernelLauncher, code: str,
                   timeout: float = 60.0) -> tuple[str, str, Message]:
    """Run ``code``; returns (stdout text, last ``text/plain`` result, execute_reply)."""
    stdout: list[str] = []
    result: list[str] = []

    def collect(msg: Message) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            stdout.append(msg["content"]["text"])
        elif msg["msg_type"] == "execute_result":
            result.append(msg["content"]["data"].get("text/plain", ""))

    reply = await launcher.execute(code, collect, timeout)
    return "".join(stdout), (result[-1] if result else ""), reply


class ConformanceSuite:
    """Subclass with ``kernel_id`` set; override fixtures or hooks to fit a provider.

    ``failing_kernel_id``: a kernel of the provider that exits at once and prints
    ``failing_kernel_output`` (``None``: that test skips with the reason, and fails in CI).
    ``leftovers()``: what the provider's launches leave on the machine (connection files
    by default; providers add containers, tunnels, processes); compared before and after.
    ``killed_status``: what ``wait`` returns after ``kill`` (-SIGKILL, as Popen).
    """

    kernel_id: ClassVar[str] = ""
    failing_kernel_id: ClassVar[str | None] = None
    failing_kernel_output: ClassVar[str] = ""
    concurrent_launches: ClassVar[int] = 16
    ready_timeout: ClassVar[float] = 120.0
    killed_status: ClassVar[int | None] = -signal.SIGKILL

    @pytest.fixture
    def finder(self, kp_isolated: Path) -> KernelFinder:
        """The finder the tests use; override to register plugins or pass a config."""
        return KernelFinder()

    @pytest.fixture
    def runtime_dir(self, kp_isolated: Path) -> Path:
        """Where connection files go during the test."""
        return kp_isolated

    def leftovers(self, runtime_dir: Path) -> set[str]:
        """Everything a launch of this provider may leave behind; must be empty after."""
        return {str(p) for p in runtime_dir.glob("*.json")}

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run an async scenario on a fresh event loop."""
        async def main() -> T:
            return await make()
        return asyncio.run(main())

    async def launch(self, finder: KernelFinder, kernel_id: str | None = None) -> KernelLauncher:
        """Launch the kernel under test and wait until it is ready."""
        from ..types import LaunchOptions

        return await finder.launch(kernel_id or self.kernel_id,
                                   LaunchOptions(ready_timeout=self.ready_timeout))

    # --- discovery -------------------------------------------------------------------

    def test_kernel_is_listed(self, finder: KernelFinder) -> None:
        kernels = self.run(lambda: finder.find_kernels(refresh=True))
        ids = [k.id for k in kernels]
        assert self.kernel_id in ids, f"{self.kernel_id} not in {ids}: {finder.reports}"
        kernel = next(k for k in kernels if k.id == self.kernel_id)
        assert kernel.provider == self.kernel_id.split("/")[0]
        assert kernel.display_name and kernel.interrupt_mode in ("signal", "message")
        assert kernel.to_dict()["id"] == self.kernel_id

    # --- lifecycle -------------------------------------------------------------------

    def test_launch_ready_execute_shutdown(self, finder: KernelFinder,
                                           runtime_dir: Path) -> None:
        before = self.leftovers(runtime_dir)

        async def scenario() -> None:
            launcher = await self.launch(finder)
            assert launcher.kernel_type.id == self.kernel_id
            assert launcher.poll() is None
            assert launcher.kernel_info and launcher.kernel_info["status"] == "ok"
            info = launcher.connection_info
            assert info["ip"] in ("127.0.0.1", "localhost")
            assert info["signature_scheme"] == "hmac-sha256" and len(info["key"]) >= 64
            path = Path(launcher.connection_file)
            assert path.stat().st_mode & 0o777 == 0o600
            out, result, reply = await run_code(launcher, "print('hello'); 6 * 7")
            assert reply["content"]["status"] == "ok"
            assert out == "hello\n" and result == "42"
            status = await launcher.shutdown()
            assert status == 0, f"shutdown status {status}; output:\n{launcher.output}"
            assert launcher.poll() == 0 and not path.exists()

        self.run(scenario)
        assert self.leftovers(runtime_dir) == before, (self.leftovers(runtime_dir), before)

    @pytest.mark.parametrize("mode", ["signal", "message"])
    def test_interrupt(self, finder: KernelFinder, mode: InterruptMode) -> None:
        async def scenario() -> None:
            launcher = await self.launch(finder)
            try:
                # Both modes on one kernel: the contract honours the kernel type's mode.
                launcher.kernel_type = dataclasses.replace(launcher.kernel_type,
                                                           interrupt_mode=mode)
                busy = asyncio.ensure_future(
                    run_code(launcher, "import time\nwhile True: time.sleep(0.01)"))
                await asyncio.sleep(1.0)
                assert not busy.done()
                await launcher.interrupt()
                _, _, reply = await asyncio.wait_for(busy, 30)
                assert reply["content"]["status"] == "error"
                assert reply["content"]["ename"] == "KeyboardInterrupt"
                out, _, reply = await run_code(launcher, "print('still alive')")
                if reply["content"]["status"] == "aborted":
                    # After an error, ipykernel aborts what arrives before it has drained
                    # its queue (stop_on_error): a loaded machine sends in that window.
                    out, _, reply = await run_code(launcher, "print('still alive')")
                assert out == "still alive\n", reply["content"]
            finally:
                await launcher.shutdown()

        self.run(scenario)

    def test_signal_reaches_kernel(self, finder: KernelFinder) -> None:
        async def scenario() -> None:
            launcher = await self.launch(finder)
            try:
                await run_code(launcher, (
                    "import signal\nGOT = []\n"
                    "signal.signal(signal.SIGUSR1, lambda *a: GOT.append(1))"))
                await launcher.signal(signal.SIGUSR1)
                for _ in range(50):
                    _, result, _ = await run_code(launcher, "len(GOT)")
                    if result == "1":
                        break
                    await asyncio.sleep(0.1)
                assert result == "1", "SIGUSR1 did not reach the kernel"
                assert launcher.poll() is None
            finally:
                await launcher.shutdown()

        self.run(scenario)

    def test_kill_then_wait_returns_status(self, finder: KernelFinder,
                                           runtime_dir: Path) -> None:
        before = self.leftovers(runtime_dir)

        async def scenario() -> None:
            launcher = await self.launch(finder)
            await launcher.kill()
            status = await asyncio.wait_for(launcher.wait(), 30)
            assert status == self.killed_status
            assert launcher.poll() == status
            await launcher.cleanup()

        self.run(scenario)
        assert self.leftovers(runtime_dir) == before, (self.leftovers(runtime_dir), before)

    def test_restart_keeps_connection(self, finder: KernelFinder, runtime_dir: Path) -> None:
        before = self.leftovers(runtime_dir)

        async def scenario() -> None:
            first = await self.launch(finder)
            await run_code(first, "x = 1")
            second = await first.restart()
            try:
                assert first.poll() is not None
                assert second.poll() is None
                assert second.connection_info["key"] == first.connection_info["key"]
                out, _, _ = await run_code(second, "print('x' in globals())")
                assert out == "False\n", "restart did not give a fresh kernel"
            finally:
                await second.shutdown()

        self.run(scenario)
        assert self.leftovers(runtime_dir) == before, (self.leftovers(runtime_dir), before)

    def test_cleanup_is_idempotent_and_complete(self, finder: KernelFinder,
                                                runtime_dir: Path) -> None:
        before = self.leftovers(runtime_dir)

        async def scenario() -> None:
            launcher = await self.launch(finder)
            assert self.leftovers(runtime_dir) != before
            await launcher.cleanup()
            assert launcher.poll() is not None
            await launcher.cleanup()
            assert not Path(launcher.connection_file).exists()

        self.run(scenario)
        assert self.leftovers(runtime_dir) == before, (self.leftovers(runtime_dir), before)

    def test_concurrent_launches_get_distinct_ports(self, finder: KernelFinder,
                                                    runtime_dir: Path) -> None:
        before = self.leftovers(runtime_dir)

        async def scenario() -> None:
            results = await asyncio.gather(
                *(self.launch(finder) for _ in range(self.concurrent_launches)),
                return_exceptions=True)
            launchers = [r for r in results if isinstance(r, KernelLauncher)]
            try:
                errors = [r for r in results if not isinstance(r, KernelLauncher)]
                assert not errors, f"{len(errors)} launches failed: {errors[0]!r}"
                ports = [(k.connection_info["ip"], k.connection_info.get(p))
                         for k in launchers for p in
                         ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")]
                assert len(set(ports)) == len(ports), "two kernels share a port"
                outs = await asyncio.gather(*(run_code(k, f"print({i})")
                                              for i, k in enumerate(launchers)))
                assert [o for o, _, _ in outs] == [f"{i}\n" for i in range(len(launchers))]
            finally:
                await asyncio.gather(*(k.shutdown() for k in launchers))

        self.run(scenario)
        assert self.leftovers(runtime_dir) == before, (self.leftovers(runtime_dir), before)

    def test_client_dictated_connection(self, finder: KernelFinder, runtime_dir: Path,
                                        tmp_path: Path) -> None:
        """The kernel answers on exactly the ports and key of the caller's connection
        file (as a Jupyter client writes it), and the file is left to its owner."""
        from ..connection import allocate_ports, new_connection_info, write_connection_file
        from ..protocol import KernelConnection
        from ..types import LaunchOptions

        before = self.leftovers(runtime_dir)
        client_dir = tmp_path / "client"
        client_dir.mkdir()
        wanted = new_connection_info(allocate_ports(), kernel_name="dictated")
        path = write_connection_file(wanted, client_dir)

        async def scenario() -> None:
            launcher = await finder.launch(self.kernel_id, LaunchOptions(
                connection_file=str(path), ready_timeout=self.ready_timeout))
            try:
                assert launcher.connection_file == str(path)
                for name in ("shell_port", "iopub_port", "stdin_port", "control_port",
                             "hb_port", "key", "transport"):
                    assert launcher.connection_info[name] == wanted[name], name
                async with KernelConnection(wanted) as client:  # a client of the file only
                    reply = await client.wait_ready(60, lambda: launcher.poll() is None)
                    assert reply["content"]["status"] == "ok"
                    got: list[Message] = []
                    await client.execute("print('dictated')", got.append, 60)
                    assert any(m["content"].get("text") == "dictated\n" for m in got)
            finally:
                await launcher.shutdown()
            assert path.exists(), "the caller's connection file was deleted"

        self.run(scenario)
        assert self.leftovers(runtime_dir) == before, (self.leftovers(runtime_dir), before)

    def test_unusable_dictated_connection_fails_cleanly(
            self, finder: KernelFinder, runtime_dir: Path, tmp_path: Path) -> None:
        """A connection file the provider cannot honour fails with a message naming the
        file, or (ipc for a kernel on this machine) works; nothing is left either way."""
        from ..connection import new_connection_info, write_connection_file
        from ..types import LaunchOptions

        before = self.leftovers(runtime_dir)
        bad = tmp_path / "not-json.json"
        bad.write_text("{not json")
        ipc = write_connection_file(new_connection_info(
            ip=str(tmp_path / "kp-ipc"), transport="ipc"), tmp_path)

        async def scenario() -> None:
            with pytest.raises(LaunchFailed, match="not valid JSON") as caught:
                await finder.launch(self.kernel_id, LaunchOptions(connection_file=str(bad)))
            assert str(bad) in str(caught.value)
            try:
                launcher = await finder.launch(self.kernel_id, LaunchOptions(
                    connection_file=str(ipc), ready_timeout=self.ready_timeout))
            except LaunchFailed as exc:
                assert "ipc" in str(exc) and str(ipc) in str(exc), str(exc)
            else:
                try:
                    assert launcher.connection_info["transport"] == "ipc"
                    out, _, _ = await run_code(launcher, "print('over ipc')")
                    assert out == "over ipc\n"
                finally:
                    await launcher.shutdown()

        self.run(scenario)
        assert self.leftovers(runtime_dir) == before, (self.leftovers(runtime_dir), before)

    def test_failed_launch_raises_with_output(self, finder: KernelFinder,
                                              runtime_dir: Path) -> None:
        if self.failing_kernel_id is None:
            from . import unavailable

            unavailable(f"{type(self).__name__} names no failing_kernel_id (a kernel of the"
                        " provider that exits at once)")
        before = self.leftovers(runtime_dir)

        async def scenario() -> None:
            with pytest.raises(LaunchFailed) as caught:
                await self.launch(finder, self.failing_kernel_id)
            assert self.failing_kernel_output in caught.value.output
            assert self.failing_kernel_output in str(caught.value)

        self.run(scenario)
        assert self.leftovers(runtime_dir) == before, (self.leftovers(runtime_dir), before)

    def test_blocking_facade(self, finder: KernelFinder, runtime_dir: Path) -> None:
        before = self.leftovers(runtime_dir)
        blocking = BlockingKernelFinder(finder)
        assert self.kernel_id in [k.id for k in blocking.find_kernels()]
        with blocking.launch(self.kernel_id) as kernel:
            assert kernel.poll() is None
            got: list[Any] = []
            reply = kernel.execute("print(1 + 1)", got.append)
            assert reply["content"]["status"] == "ok"
            assert any(m["content"].get("text") == "2\n" for m in got)
            kernel.restart()
            assert kernel.execute("1")["content"]["status"] == "ok"
        assert kernel.poll() == 0
        assert self.leftovers(runtime_dir) == before, (self.leftovers(runtime_dir), before)
