"""The configuration file: one TOML file, ``[providers.<id>]`` tables per provider.

Found at ``$KERNEL_PROVIDERS_CONFIG`` if set, else ``kernel_providers.toml`` in
Jupyter's config dir. Unknown keys warn; invalid values fail naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Config", "ConfigWarning", "build_options", "config_path", "load_config"]


class ConfigWarning(UserWarning):
    """An unknown key in the configuration file (probably a typo)."""


def config_path() -> Path:
    """Where the configuration file is read from (it need not exist)."""
    if os.environ.get("KERNEL_PROVIDERS_CONFIG"):
        return Path(os.environ["KERNEL_PROVIDERS_CONFIG"])
    try:
        from jupyter_core.paths import jupyter_config_dir

        directory = Path(jupyter_config_dir())
    except ImportError:  # the core does not depend on jupyter_core; same rule
        directory = Path(os.environ.get("JUPYTER_CONFIG_DIR") or Path.home() / ".jupyter")
    return directory / "kernel_providers.toml"


@dataclass
class Config:
    """Settings of the core (top-level keys) and the raw ``[providers.<id>]`` tables."""

    discovery_timeout: float = 10.0
    cache_ttl: float = 60.0
    ready_timeout: float = 60.0
    disable: list[str] = field(default_factory=list)
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the raw ``[pool]`` table (see kernel_providers.pool.PoolSettings)
    pool: dict[str, Any] = field(default_factory=dict)
    #: ``[kernels."<id>"]`` tables: ``parameters`` (a JSON Schema fragment merged over
    #: the kernel type's own) and ``presets`` (name -> values: kernel types ``<id>@<name>``)
    kernels: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    def provider_table(self, provider_id: str) -> dict[str, Any]:
        """The ``[providers.<provider_id>]`` table (empty if absent)."""
        return self.providers.get(provider_id, {})


def load_config(path: Path | str | None = None) -> Config:
    """Read and validate the configuration file; a missing file means defaults."""
    path = Path(path) if path is not None else config_path()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return Config(path=path)
    except UnicodeDecodeError as exc:  # before ValueError: it is one
        raise ConfigError(f"configuration file {path} is not UTF-8 text (byte"
                          f" {exc.object[exc.start]:#04x} at offset {exc.start}): write it"
                          " as TOML in UTF-8, or point KERNEL_PROVIDERS_CONFIG elsewhere"
                          ) from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {path} is a folder; point"
                          " KERNEL_PROVIDERS_CONFIG at a TOML file (or a path where none is"
                          " yet)") from None
    except (OSError, ValueError) as exc:  # TOMLDecodeError; an integer of 4300+ digits
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise ConfigError(f"cannot read configuration file {path}: its arrays or inline"
                          " tables are nested too deeply; fix it") from None
    providers = data.pop("providers", {})
    if not isinstance(providers, dict) or not all(
            isinstance(v, dict) for v in providers.values()):
        raise ConfigError(f"{path}: [providers] must hold one table per provider,"
                          " e.g. [providers.spec]")
    pool = data.pop("pool", {})
    if not isinstance(pool, dict):
        raise ConfigError(f'{path}: [pool] must be a table, e.g. [pool."venv/myproj"]')
    kernels = data.pop("kernels", {})
    if not isinstance(kernels, dict) or not all(isinstance(v, dict) for v in kernels.values()):
        raise ConfigError(f'{path}: [kernels] must hold one table per kernel id, e.g.'
                          ' [kernels."docker/pytorch:2.4"]')
    for kernel_id, table in kernels.items():
        unknown = sorted(set(table) - {"parameters", "presets"})
        if unknown:
            raise ConfigError(f'{path}: [kernels."{kernel_id}"]: unknown key {unknown[0]!r}'
                              " (known: parameters, presets)")
        if not isinstance(table.get("parameters", {}), dict) or not isinstance(
                table.get("presets", {}), dict) or not all(
                isinstance(v, dict) for v in table.get("presets", {}).values()):
            raise ConfigError(f'{path}: [kernels."{kernel_id}"]: parameters must be a table'
                              " (a JSON Schema fragment) and presets a table of tables of"
                              " values")
    config: Config = build_options(Config, data, str(path),
                                   skip={"providers", "pool", "kernels", "path"})
    config.providers, config.pool, config.kernels, config.path = \
        providers, pool, kernels, path
    return config


def build_options(cls: type[Any], table: dict[str, Any], where: str,
                  skip: set[str] | None = None) -> Any:
    """An instance of dataclass ``cls`` from ``table``, checking each value's type.

    Unknown keys warn (:class:`ConfigWarning`); a value of the wrong type raises
    :class:`~kernel_providers.ConfigError` naming ``where`` and the key.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - (skip or set())
    values = {}
    for key, value in table.items():
        if key not in names:
            warnings.warn(f"{where}: unknown key {key!r} (known: {', '.join(sorted(names))})",
                          ConfigWarning, stacklevel=2)
            continue
        values[key] = _check(value, hints[key], f"{where}: {key}")
    return cls(**values)


def _check(value: Any, expected: Any, where: str) -> Any:
    """``value`` as a ``expected`` (a type hint of a config dataclass), or ConfigError
    naming ``where``."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return _check_union(value, expected, where)
    if origin in (list, dict):
        return _check_container(value, expected, origin, where)
    if expected is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected nothing, got {_shown(value)}")
    if expected is Any:
        return value
    if not isinstance(value, bool) and (
            (expected is float and isinstance(value, (int, float)))
            or (expected is int and isinstance(value, int))):
        return _amount(value, expected, where)
    if isinstance(value, str) and "\0" in value and expected in (str, Any):
        raise ConfigError(f"{where}: {_shown(value)} holds a NUL character, which no path"
                          " or name can; remove it")
    if isinstance(expected, type) and isinstance(value, expected) and not (
            expected is not bool and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {_name(expected)}, got {_shown(value)}")


def _amount(value: float, expected: type, where: str) -> float:
    # Every number in the configuration is a duration, a size or a count: a negative
    # or non-finite one (nan, inf) is a mistake, and a timeout of 0 would never wait.
    try:
        number = float(value)
    except OverflowError:  # an integer no float holds (TOML integers have no limit here)
        raise ConfigError(f"{where}: expected a finite number >= 0, got {_shown(value)}"
                          ) from None
    amount = value if expected is int else number
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{where}: expected a finite number >= 0, got {amount!r}")
    if number == 0 and where.endswith("timeout"):
        raise ConfigError(f"{where}: a timeout must be more than 0 seconds")
    return amount


def _shown(value: Any) -> str:
    """``repr(value)`` for a message, shortened (a value may be megabytes long)."""
    try:
        text = repr(value)
    except ValueError:  # an integer of more digits than Python converts to text
        return "an integer of thousands of digits"
    return text if len(text) <= 100 else f"{text[:80]}... ({len(text)} characters)"


def _check_union(value: Any, expected: Any, where: str) -> Any:
    errors = []
    for option in typing.get_args(expected):
        try:
            return _check(value, option, where)
        except ConfigError as exc:
            if option is not type(None):
                errors.append(exc)
    if len(errors) == 1:  # an optional value: what is wrong with it says more
        raise errors[0]
    raise ConfigError(f"{where}: {_shown(value)} is not a valid {_name(expected)}")


def _check_container(value: Any, expected: Any, origin: Any, where: str) -> Any:
    if origin is list:
        (item,) = typing.get_args(expected) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_shown(value)}")
        return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    _, item = typing.get_args(expected) or (str, Any)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {_shown(value)}")
    return {k: _check(v, item, f"{where}.{k}") for k, v in value.items()}


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
