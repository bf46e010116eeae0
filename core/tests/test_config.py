"""The configuration file: defaults, unknown keys, invalid values, provider tables."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kernel_providers import (
    ConfigError,
    ConfigWarning,
    KernelProvider,
    KernelType,
    LaunchFailed,
    load_config,
)
from kernel_providers.config import config_path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kp.toml"
    path.write_text(text)
    return path


def test_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KERNEL_PROVIDERS_CONFIG", raising=False)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    assert config_path() == tmp_path / "kernel_providers.toml"
    monkeypatch.setenv("KERNEL_PROVIDERS_CONFIG", str(tmp_path / "x.toml"))
    assert config_path() == tmp_path / "x.toml"
    assert load_config().cache_ttl == 60.0  # a missing file means defaults


def test_values_are_read_and_checked(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'cache_ttl = 5\ndisable = ["x"]\n'
                                         '[providers.spec]\nexclude = ["a*"]\n'))
    assert config.cache_ttl == 5.0 and config.disable == ["x"]
    assert config.provider_table("spec") == {"exclude": ["a*"]}


def test_unknown_key_warns(tmp_path: Path) -> None:
    with pytest.warns(ConfigWarning, match=r"unknown key 'cache_tl'.*cache_ttl"):
        load_config(write(tmp_path, "cache_tl = 5\n"))


@pytest.mark.parametrize("text, key", [
    ('cache_ttl = "soon"\n', "cache_ttl"),
    ("disable = [1]\n", r"disable\[0\]"),
    ("ready_timeout = true\n", "ready_timeout"),
    ("providers = 3\n", r"\[providers\]"),
])
def test_invalid_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(write(tmp_path, text))


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "cache_ttl = = 3\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


@dataclass
class Options:
    names: list[str] = field(default_factory=lambda: ["a"])
    limit: int = 3


class Configurable(KernelProvider):
    id = "conf"
    config_class = Options

    async def find_kernels(self) -> list[KernelType]:
        return [KernelType(id=f"conf/{n}", display_name=n, language="x", provider="conf")
                for n in self.config.names[: self.config.limit]]

    async def launch(self, kernel_type: KernelType, options: Any) -> Any:
        raise LaunchFailed(f"{kernel_type.id}: this test provider only lists")


class Plugin:
    from kernel_providers import hookimpl

    @hookimpl
    def register_kernel_providers(self) -> Any:
        yield Configurable()


def test_provider_tables_configure_providers(tmp_path: Path, make_finder: Any) -> None:
    config = load_config(write(tmp_path, '[providers.conf]\nnames = ["x", "y"]\n'))
    finder = make_finder(Plugin(), config=config)
    kernels = asyncio.run(finder.find_kernels(provider="conf"))
    assert [k.id for k in kernels] == ["conf/x", "conf/y"]


def test_invalid_provider_table_fails_that_provider_only(tmp_path: Path,
                                                         make_finder: Any) -> None:
    config = load_config(write(tmp_path, '[providers.conf]\nlimit = "many"\n'))
    finder = make_finder(Plugin(), config=config)
    kernels = asyncio.run(finder.find_kernels())
    assert {k.provider for k in kernels} == {"test"}
    report = next(r for r in finder.reports if r.id == "conf")
    assert report.status == "error"
    assert "[providers.conf]: limit: expected int, got 'many'" in report.message
    with pytest.raises(ConfigError, match="limit"):
        asyncio.run(finder._launch(KernelType(id="conf/a", display_name="a", language="x",
                                              provider="conf"), None, True))


@pytest.mark.reliability("bad input")
@pytest.mark.parametrize(("text", "message"), [
    ("ready_timeout = -5", "ready_timeout: expected a finite number >= 0, got -5.0"),
    ("ready_timeout = nan", "ready_timeout: expected a finite number >= 0, got nan"),
    ("discovery_timeout = inf", "discovery_timeout: expected a finite number >= 0, got inf"),
    ("ready_timeout = 0", "ready_timeout: a timeout must be more than 0 seconds"),
    ("cache_ttl = -1", "cache_ttl: expected a finite number >= 0, got -1.0"),
], ids=["negative", "nan", "inf", "zero-timeout", "negative-ttl"])
def test_impossible_numbers_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: {message}"


def test_cache_ttl_zero_is_allowed(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "cache_ttl = 0\n")).cache_ttl == 0.0


@pytest.mark.reliability("bad input")
def test_a_binary_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "kp.toml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=r"kp\.toml is not UTF-8 text \(byte 0xff at"
                                          r" offset 0\).*KERNEL_PROVIDERS_CONFIG"):
        load_config(path)
