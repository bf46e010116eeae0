"""Issue 18: another client streaming output through a kernel costs the managing process
(and the kernel) nothing, whether the launcher has run code itself or not."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import KernelFinder, KernelLauncher
from kernel_providers.protocol import Message, ProtocolError

CELLS, CELL_BYTES = 300, 1_000_000
MAX_GROWTH_MIB = 20



def stream_text(messages: list[Message]) -> str:
    """What ``stream`` messages carried (a kernel may split one print in several)."""
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")


def rss_mib() -> float:
    """This process's resident set size (psutil may not be installed)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class Streamer:
    """The second client, running in its own process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, info_file: Path, cells: int) -> Streamer:
        """Start it; returns once its client is connected and ready."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kernel_providers.testing.streaming_client", str(info_file),
            str(cells), str(CELL_BYTES),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        # jupyter_client's wait_for_ready reads iopub until it is quiet for 0.2 s: only
        # then may this process keep the kernel busy.
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert line == b"ready\n", line
        return cls(proc)

    async def result(self) -> dict[str, Any]:
        """Wait for its end; its report (the kernel's RSS before and after, in KiB)."""
        out, err = await asyncio.wait_for(self.proc.communicate(), 240)
        assert self.proc.returncode == 0, err.decode()[-2000:]
        result: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
        return result


async def stream_from_second_client(info: dict[str, Any], folder: Path,
                                    cells: int = CELLS) -> tuple[float, float]:
    """Run ``cells`` cells of 1 MB output from a second client while this process's loop
    runs; returns (growth of this process, growth of the kernel) in MiB."""
    info_file = folder / "second-client.json"
    info_file.write_text(json.dumps(info))
    # warm-up: subprocess machinery, the allocator's first big buffers
    await (await Streamer.start(info_file, 5)).result()
    await asyncio.sleep(0.2)
    before = rss_mib()
    kernel = (await (await Streamer.start(info_file, cells)).result())["kernel_rss_kib"]
    await asyncio.sleep(0.2)
    return rss_mib() - before, (kernel[1] - kernel[0]) / 1024


@pytest.mark.parametrize("executed", [False, True], ids=["launched", "after-execute"])
def test_a_streaming_second_client_costs_the_manager_nothing(
        finder: KernelFinder, tmp_path: Path, executed: bool) -> None:
    async def scenario() -> None:
        launcher = await finder.launch("test/python")
        try:
            if executed:  # the launcher then keeps a connection (read in the background)
                assert (await launcher.execute("1"))["content"]["status"] == "ok"
            manager, kernel = await stream_from_second_client(
                dict(launcher.connection_info), tmp_path)
            print(f"manager +{manager:.1f} MiB, kernel +{kernel:.1f} MiB")
            assert manager < MAX_GROWTH_MIB, f"the manager grew by {manager:.0f} MiB"
            assert kernel < MAX_GROWTH_MIB, f"the kernel grew by {kernel:.0f} MiB"
            # Nothing queued for us either: our next execute has nothing stale to read.
            seen: list[Message] = []
            reply = await launcher.execute("print('mine')", seen.append)
            assert reply["content"]["status"] == "ok" and stream_text(seen) == "mine\n"
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def test_execute_gets_only_its_own_output_while_another_client_streams(
        finder: KernelFinder, tmp_path: Path) -> None:
    async def scenario() -> None:
        launcher = await finder.launch("test/python")
        try:
            info_file = tmp_path / "second-client.json"
            info_file.write_text(json.dumps(dict(launcher.connection_info)))
            streamer = await Streamer.start(info_file, 60)
            stream = asyncio.ensure_future(streamer.result())
            runs = 0
            while not stream.done():
                seen: list[Message] = []
                reply = await launcher.execute(f"print('mine', {runs})", seen.append)
                assert reply["content"]["status"] == "ok"
                assert stream_text(seen) == f"mine {runs}\n"
                runs += 1
            await stream
            assert runs > 5
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def test_callback_errors_and_closing_during_an_execute(finder: KernelFinder) -> None:
    async def scenario() -> None:
        launcher = await finder.launch("test/python")
        try:
            calls: list[Message] = []

            def fails(msg: Message) -> None:
                calls.append(msg)
                raise BrokenPipeError("the reader went away")

            # The execution is still waited for (its caller must learn how it ended);
            # the callback gets nothing more.
            code = "import sys\nfor i in range(5): print(i); sys.stdout.flush()"
            assert (await launcher.execute(code, fails))["content"]["status"] == "ok"
            assert len(calls) == 1
            seen: list[Message] = []
            await launcher.execute("print('after')", seen.append)
            assert stream_text(seen) == "after\n"
            # Closing the connection under a running execute ends it (not a hang) ...
            running = asyncio.ensure_future(launcher.execute("import time; time.sleep(5)"))
            await asyncio.sleep(0.5)
            launcher.close_connection()
            with pytest.raises(ProtocolError, match="closed"):
                await asyncio.wait_for(running, 3)
            await launcher.interrupt()
            # ... and the next execute opens a new one.
            assert (await launcher.execute("1"))["content"]["status"] == "ok"
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())


def test_the_ready_check_holds_no_connection(finder: KernelFinder) -> None:
    async def scenario() -> None:
        launcher: KernelLauncher = await finder.launch("test/python")
        try:
            assert launcher.kernel_info is not None
            # What the launcher holds after the ready check: nothing subscribed to iopub.
            assert launcher._connection is None
            await launcher.execute("1")
            assert launcher._connection is not None
            launcher.close_connection()
            assert launcher._connection is None
        finally:
            await launcher.shutdown()

    asyncio.run(scenario())
