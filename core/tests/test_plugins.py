"""Entry-point loading through fake installed distributions (dist-info folders)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import Config, KernelFinder


def test_broken_plugin_is_reported_and_others_load(fake_dists: Path) -> None:
    finder = KernelFinder(Config())
    errors = {e.plugin: e for e in finder.plugin_errors}
    broken = errors["fakebroken"]
    assert broken.distribution == "kp-fake-broken"
    assert "ModuleNotFoundError" in broken.message
    assert "KERNEL_PROVIDERS_DISABLE=fakebroken" in str(broken)
    providers = finder.providers
    assert "fakegood" in providers
    # The duplicate id is reported naming both distributions; the first one is kept.
    dup = next(e for e in finder.plugin_errors if "already taken" in e.message)
    assert {dup.distribution, providers["fakegood"].distribution} == {
        "kp-fake-good", "kp-fake-dup"}
    # Built-in providers load the same way as anyone's: the kernelspec one is here too
    # when installed, stamped with its distribution.
    spec = providers.get("spec")
    if spec is not None:
        assert spec.distribution == "kernel-providers-kernelspec"


def test_provider_is_stamped_with_its_distribution(fake_dists: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_PROVIDERS_DISABLE", "fakedup")
    finder = KernelFinder(Config())
    provider = finder.providers["fakegood"]
    assert (provider.plugin_name, provider.distribution, provider.version) == (
        "fakegood", "kp-fake-good", "1.0")
    kernels = asyncio.run(finder.find_kernels(provider="fakegood"))
    assert [k.id for k in kernels] == ["fakegood/one"]
    report = next(r for r in finder.reports if r.id == "fakegood")
    assert report.to_dict()["distribution"] == "kp-fake-good"


def test_disabled_plugin_is_never_imported(fake_dists: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_PROVIDERS_DISABLE", "fakebroken,fakedup")
    finder = KernelFinder(Config())
    assert finder.plugin_errors == []
    assert "kp_fake_broken" not in sys.modules


def test_no_autoload_switch(fake_dists: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_PROVIDERS_NO_AUTOLOAD", "1")
    finder = KernelFinder(Config())
    assert finder.providers == {} and finder.plugin_errors == []


def test_trace_switch_writes_hook_calls(fake_dists: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str],
                                        make_finder: Any) -> None:
    monkeypatch.setenv("KERNEL_PROVIDERS_TRACE", "1")
    finder = make_finder()
    finder.hook.kernel_stopped(launcher=None, status=0)
    assert "kernel_stopped" in capsys.readouterr().err


def test_a_plugin_whose_registration_raises_is_reported(make_finder: Any) -> None:
    from kernel_providers import hookimpl

    class Exploding:
        @hookimpl
        def register_kernel_providers(self) -> Any:
            raise RuntimeError("boom")

    class NotAProvider:
        @hookimpl
        def register_kernel_providers(self) -> Any:
            yield object()

    finder = make_finder(Exploding(), NotAProvider())
    assert "test" in finder.providers
    messages = [e.message for e in finder.plugin_errors]
    assert any("RuntimeError: boom" in m for m in messages)
    assert any("not a KernelProvider" in m for m in messages)


@pytest.mark.parametrize("group", ["kernel_providers", "console_scripts", "pytest11"])
def test_entry_points_match_importlib_metadata(fake_dists: Path, group: str) -> None:
    # Our fast reader must find what importlib.metadata finds, with its precedence.
    import importlib.metadata

    from kernel_providers.entry_points import entry_points

    ours = sorted((e.name, e.value, e.distribution, e.version)
                  for e in entry_points(group, sys.path))
    reference = sorted((e.name, e.value.split("[")[0].strip(), e.dist.name if e.dist else None,
                        e.dist.version if e.dist else None)
                       for e in importlib.metadata.entry_points(group=group))
    assert ours == reference
    assert ours, f"no entry point of {group!r} found: the comparison proves nothing"
