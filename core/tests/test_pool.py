"""The warm pool with real ipykernels: what a pooled kernel looks like when handed out,
refill, the cap, invalidation, idle timeout, and nothing left when its holder dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, ConfigError, KernelFinder, LaunchOptions
from kernel_providers.testing import process_alive, run_code, write_kernelspec

IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]

STATE = ("import os; print(os.getcwd()); print(os.environ.get('KP_POOL_MARK'));"
         " print(sorted(k for k in globals() if not k.startswith('_'))); print(In[1:])")


@pytest.fixture
def pooled_finder(make_finder: Any) -> Any:
    """``pooled_finder(**pool)``: the test provider's finder with ``[pool]`` = pool."""
    return lambda **pool: make_finder(config=Config(pool=pool))


async def state_of(launcher: Any) -> tuple[list[str], int]:
    """What a user sees first in the kernel: cwd, a variable, the names defined, the
    history; and the first execution's count."""
    out, _, reply = await run_code(launcher, STATE)
    return out.splitlines(), int(reply["content"]["execution_count"])


def test_a_pooled_kernel_looks_fresh(kp_isolated: Path, tmp_path: Path, pooled_finder: Any) -> None:
    """Handed out with the requested cwd and env, it shows the same state as a kernel
    started for the request: no trace of the set-up, execution count 1."""
    finder = pooled_finder(**{"test/python": {"size": 1}})
    options = LaunchOptions(cwd=str(tmp_path), env={"KP_POOL_MARK": "asked"})

    async def scenario() -> None:
        await finder.pool.filled()  # type: ignore[union-attr]
        pooled = await finder.launch("test/python", options)
        fresh = await finder.start_unpooled(await finder.get_kernel_type("test/python"),
                                            options)
        try:
            assert finder.pool.status()["types"]["test/python"]["hits"] == 1  # type: ignore[union-attr]
            seen, count = await state_of(pooled)
            assert (seen, count) == await state_of(fresh)
            assert seen[:2] == [str(tmp_path), "asked"] and count == 1, seen
            # A restart starts it the way it was asked for.
            restarted = await pooled.restart()
            seen, _ = await state_of(restarted)
            assert seen[:2] == [str(tmp_path), "asked"]
            await restarted.shutdown()
        finally:
            await fresh.shutdown()
            await pooled.shutdown()
            await finder.pool.close()  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_refill_cap_and_misses(kp_isolated: Path, pooled_finder: Any) -> None:
    finder = pooled_finder(cap=2, **{"test/python": {"size": 2},
                                     "test/python-message": {"size": 2}})

    async def scenario() -> None:
        pool = finder.pool
        assert pool is not None
        try:
            await pool.filled()
            assert pool.held() == 2  # the cap, across kernel types
            first = await finder.launch("test/python")
            await pool.filled()
            assert pool.held() == 2  # refilled, still within the cap
            status = pool.status()
            ready = sum(t["ready"] for t in status["types"].values())
            assert ready == 2 and status["types"]["test/python"]["hits"] == 1
            # What a running kernel cannot take on: a miss, started as asked.
            other = await finder.launch("test/python",
                                        LaunchOptions(env={"PYTHONHASHSEED": "7"}))
            out, _, _ = await run_code(other, "import os; print(os.environ['PYTHONHASHSEED'])")
            assert out == "7\n"
            assert pool.status()["types"]["test/python"]["misses"] == 1
            pids = [p for t in pool.status()["types"].values() for p in t["pids"]]
            await first.shutdown()
            await other.shutdown()
        finally:
            await pool.close()
        assert not any(process_alive(pid) for pid in pids if pid)

    asyncio.run(scenario())


def test_a_changed_kernelspec_is_not_served_stale(kp_isolated: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel.json changes after its kernel was pooled: the pooled kernel is
    dropped and the new spec starts."""
    from kernel_providers_kernelspec import plugin

    data = tmp_path / "jupyter"
    monkeypatch.setenv("JUPYTER_PATH", str(data))
    spec = {"argv": IPYKERNEL, "display_name": "Pooled", "language": "python",
            "env": {"KP_POOL_MARK": "before"}}
    path = write_kernelspec(data / "kernels", "kp-pooled", spec)
    finder = KernelFinder(Config(pool={"spec/kp-pooled": {"size": 1}}), autoload=False,
                          plugins=[plugin])

    async def scenario() -> None:
        pool = finder.pool
        assert pool is not None
        try:
            await pool.filled()
            (stale_pid,) = pool.status()["types"]["spec/kp-pooled"]["pids"]
            time.sleep(0.01)
            path.write_text(json.dumps({**spec, "env": {"KP_POOL_MARK": "after"}}))
            launcher = await finder.launch("spec/kp-pooled")
            out, _, _ = await run_code(launcher, "import os; print(os.environ['KP_POOL_MARK'])")
            assert out == "after\n"
            assert pool.status()["types"]["spec/kp-pooled"]["misses"] == 1
            await launcher.shutdown()
            for _ in range(100):
                if not process_alive(stale_pid):
                    break
                await asyncio.sleep(0.1)
            assert not process_alive(stale_pid), "the stale pooled kernel still runs"
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_idle_kernels_are_stopped(kp_isolated: Path, pooled_finder: Any) -> None:
    finder = pooled_finder(**{"test/python": {"size": 1, "idle_timeout": 1}})

    async def scenario() -> None:
        pool = finder.pool
        assert pool is not None
        try:
            await pool.filled()
            (pid,) = pool.status()["types"]["test/python"]["pids"]
            await asyncio.sleep(2.5)
            assert pool.status()["types"]["test/python"]["ready"] == 0
            assert not process_alive(pid)
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_pool_config_errors(pooled_finder: Any) -> None:
    with pytest.raises(ConfigError, match="not a kernel id"):
        pooled_finder(python3={"size": 1})
    with pytest.raises(ConfigError, match=r'\[pool."test/python"\]: size: expected .* >= 0'):
        pooled_finder(**{"test/python": {"size": -1}})
    with pytest.raises(ConfigError, match="size"):
        pooled_finder(**{"test/python": {"size": "two"}})


def test_pooled_kernels_die_with_their_holder(kp_isolated: Path, tmp_path: Path) -> None:
    """The holding process SIGKILLed: its pooled kernels are gone within 5 s, and
    `cleanup` leaves no file of theirs."""
    data = tmp_path / "jupyter"
    write_kernelspec(data / "kernels", "kp-held", {"argv": IPYKERNEL, "language": "python",
                                                   "display_name": "Held"})
    script = textwrap.dedent("""
        import asyncio, json
        from kernel_providers import Config, KernelFinder
        from kernel_providers_kernelspec import plugin
        async def main():
            finder = KernelFinder(Config(pool={"spec/kp-held": {"size": 2}}),
                                  autoload=False, plugins=[plugin])
            await finder.pool.filled()
            print(json.dumps(finder.pool.status()["types"]["spec/kp-held"]["pids"]),
                  flush=True)
            await asyncio.sleep(3600)
        asyncio.run(main())
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "JUPYTER_PATH": str(data)})
    try:
        assert holder.stdout is not None
        pids = json.loads(holder.stdout.readline())
        assert len(pids) == 2 and all(process_alive(p) for p in pids)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 5
        while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(process_alive(p) for p in pids), "pooled kernels outlived their holder"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    from kernel_providers.cli import main

    assert main(["cleanup"]) == 0
    assert list(kp_isolated.glob("kernel-*.json")) == []


def test_recent_kernel_types_are_pooled(kp_isolated: Path, pooled_finder: Any) -> None:
    """recent = N: the kernel types of the last N starts are kept ready, unconfigured."""
    finder = pooled_finder(recent=2)

    async def scenario() -> None:
        pool = finder.pool
        assert pool is not None
        try:
            first = await finder.launch("test/python")  # a miss: started cold
            await pool.filled()
            assert pool.wanted() == {"test/python": 1}
            second = await finder.launch("test/python")
            kind = pool.status()["types"]["test/python"]
            assert (kind["misses"], kind["hits"]) == (1, 1)
            await first.shutdown()
            await second.shutdown()
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_a_kernel_type_its_provider_keeps_out_of_pools(kp_isolated: Path,
                                                       make_finder: Any) -> None:
    """metadata "poolable": false (a Slurm profile without pool = true): never started
    ahead; the status says why; launches start cold."""
    from kernel_providers import KernelProvider, KernelType, hookimpl

    class NoPool(KernelProvider):  # type: ignore[type-arg]
        id = "nopool"

        async def find_kernels(self) -> list[KernelType]:
            return [KernelType(id="nopool/k", provider=self.id, display_name="k",
                               language="python", metadata={"poolable": False})]

        async def launch(self, kernel_type: KernelType, options: LaunchOptions) -> Any:
            raise AssertionError("a pool must not start it")

    class Plugin:
        @hookimpl
        def register_kernel_providers(self) -> Any:
            yield NoPool()

    finder = make_finder(Plugin(), config=Config(pool={"nopool/k": {"size": 1}}))

    async def scenario() -> None:
        pool = finder.pool
        assert pool is not None
        await pool.filled()
        kind = pool.status()["types"]["nopool/k"]
        assert kind["ready"] == 0 and "not to be held idle" in kind["last_error"]
        await pool.close()

    asyncio.run(scenario())
