"""KernelFinder: isolation of failing providers, concurrency, caching, routing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kernel_providers import (
    Config,
    KernelFinder,
    KernelProvider,
    KernelType,
    LaunchFailed,
    NoSuchKernel,
    ProviderUnavailable,
    hookimpl,
    report_problem,
)


def kt(provider: str, name: str) -> KernelType:
    return KernelType(id=f"{provider}/{name}", display_name=name, language="python",
                      provider=provider)


class Listing(KernelProvider):  # type: ignore[type-arg]
    """A provider whose kernels are only listed in these tests, never launched."""

    async def launch(self, kernel_type: KernelType, options: Any) -> Any:
        raise LaunchFailed(f"{kernel_type.id}: this test provider only lists")


class ListProvider(Listing):
    """Lists a fixed set of names; counts how often it was asked."""

    def __init__(self, pid: str, names: list[str]) -> None:
        self.id, self.names, self.calls = pid, names, 0  # type: ignore[misc]

    async def find_kernels(self) -> list[KernelType]:
        self.calls += 1
        return [kt(self.id, n) for n in self.names]


class Plugin:
    def __init__(self, *providers: KernelProvider) -> None:
        self.providers = providers

    @hookimpl
    def register_kernel_providers(self) -> Any:
        return self.providers


def finder_with(*providers: KernelProvider, **config: Any) -> KernelFinder:
    return KernelFinder(Config(**config), autoload=False, plugins=[Plugin(*providers)])


def test_failing_and_hanging_providers_never_break_the_list() -> None:
    class Raising(Listing):
        id = "raising"

        async def find_kernels(self) -> list[KernelType]:
            raise ProviderUnavailable("engine not reachable at /nowhere: is it running?")

    class Crashing(Listing):
        id = "crashing"

        async def find_kernels(self) -> list[KernelType]:
            return {}["missing"]  # type: ignore[no-any-return]

    class Hanging(Listing):
        id = "hanging"

        async def find_kernels(self) -> list[KernelType]:
            await asyncio.sleep(3600)
            return []

    class Junk(Listing):
        id = "junk"

        async def find_kernels(self) -> list[KernelType]:
            return [kt("junk", "ok"), "not a kernel", kt("other", "x"),  # type: ignore[list-item]
                    kt("junk", "ok")]

    good = ListProvider("good", ["b", "a"])
    finder = finder_with(Raising(), Crashing(), Hanging(), Junk(), good,
                         discovery_timeout=0.5)
    kernels = asyncio.run(finder.find_kernels())
    assert [k.id for k in kernels] == ["good/a", "good/b", "junk/ok"]
    reports = {r.id: r for r in finder.reports}
    assert reports["raising"].status == "error"
    assert "engine not reachable" in reports["raising"].message
    assert reports["crashing"].message == "KeyError: 'missing'"
    assert "no answer within 0.5 s" in reports["hanging"].message
    assert "KERNEL_PROVIDERS_DISABLE=hanging" in reports["hanging"].message
    assert reports["junk"].status == "ok" and reports["junk"].kernel_count == 1
    assert len(reports["junk"].problems) == 3
    assert reports["good"].status == "ok" and reports["good"].kernel_count == 2


def test_providers_are_asked_concurrently() -> None:
    # Each provider waits until the other has started: only concurrent discovery ends.
    events: dict[str, asyncio.Event] = {}

    class Waiting(Listing):
        def __init__(self, me: str, other: str) -> None:
            self.id, self.other = me, other  # type: ignore[misc]

        async def find_kernels(self) -> list[KernelType]:
            events.setdefault(self.id, asyncio.Event()).set()
            await events.setdefault(self.other, asyncio.Event()).wait()
            return [kt(self.id, "k")]

    finder = finder_with(Waiting("a", "b"), Waiting("b", "a"), discovery_timeout=30)
    kernels = asyncio.run(finder.find_kernels())
    assert [k.id for k in kernels] == ["a/k", "b/k"]


def test_cache_ttl_and_refresh() -> None:
    provider = ListProvider("p", ["one"])
    finder = finder_with(provider, cache_ttl=3600)

    async def scenario() -> None:
        await finder.find_kernels()
        await finder.find_kernels()
        assert provider.calls == 1
        provider.names = ["one", "two"]
        assert len(await finder.find_kernels()) == 1  # cached
        assert len(await finder.find_kernels(refresh=True)) == 2
        assert provider.calls == 2

    asyncio.run(scenario())
    expiring = ListProvider("p", ["one"])
    finder = finder_with(expiring, cache_ttl=0)
    asyncio.run(finder.find_kernels())
    asyncio.run(finder.find_kernels())
    assert expiring.calls == 2


def test_a_kernel_added_after_caching_is_found_by_id() -> None:
    provider = ListProvider("p", ["one"])
    finder = finder_with(provider, cache_ttl=3600)

    async def scenario() -> None:
        await finder.find_kernels()
        await asyncio.sleep(0.6)
        provider.names.append("new")
        assert (await finder.get_kernel_type("p/new")).id == "p/new"

    asyncio.run(scenario())


def test_unknown_ids_name_close_matches() -> None:
    finder = finder_with(ListProvider("spec", ["python3", "ir"]))
    with pytest.raises(NoSuchKernel, match=r"did you mean 'spec/python3'") as caught:
        asyncio.run(finder.get_kernel_type("spec/pyhton3"))
    assert caught.value.close_matches == ["spec/python3"]
    with pytest.raises(NoSuchKernel, match=r"no provider 'sepc' is installed.*'spec/\.\.\.'"):
        asyncio.run(finder.get_kernel_type("sepc/python3"))
    with pytest.raises(NoSuchKernel, match="kernel-providers list"):
        asyncio.run(finder.get_kernel_type("spec/zzzzzzzz"))


def test_provider_filter_and_disable_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = ListProvider("a", ["x"]), ListProvider("b", ["y"])
    finder = finder_with(a, b)
    assert [k.id for k in asyncio.run(finder.find_kernels(provider="b"))] == ["b/y"]
    assert a.calls == 0
    assert list(finder_with(a, b, disable=["a"]).providers) == ["b"]
    monkeypatch.setenv("KERNEL_PROVIDERS_DISABLE", "b, a")
    assert list(finder_with(a, b).providers) == []


def test_problems_reported_during_discovery_are_kept_per_provider() -> None:
    class Noisy(Listing):
        id = "noisy"

        async def find_kernels(self) -> list[KernelType]:
            report_problem("/x/kernel.json: invalid JSON")
            return [kt("noisy", "fine")]

    report_problem("outside any discovery: ignored")
    finder = finder_with(Noisy(), ListProvider("quiet", ["q"]))
    asyncio.run(finder.find_kernels())
    problems = {r.id: r.problems for r in finder.reports}
    assert problems == {"noisy": ["/x/kernel.json: invalid JSON"], "quiet": []}


def test_a_provider_can_ask_to_be_asked_every_time() -> None:
    class SelfCaching(ListProvider):
        cache_ttl = 0  # validates its own cache (e.g. by mtimes)

    provider = SelfCaching("p", ["one"])
    finder = finder_with(provider, cache_ttl=3600)

    async def scenario() -> None:
        await finder.find_kernels()
        provider.names.append("two")
        assert [k.id for k in await finder.find_kernels()] == ["p/one", "p/two"]

    asyncio.run(scenario())
