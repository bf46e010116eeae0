"""Properties (Hypothesis) of the parsers of untrusted input: kernel.json files, the
configuration file, provider and kernel ids, connection files.

Each parser either returns a valid value or raises its one documented error, naming the
file (and the key); no other exception escapes, whatever the bytes. Every property
compares with an oracle written from the documented rules, so a parser that accepts
too much fails as well as one that crashes.
"""

from __future__ import annotations

import json
import locale
import math
import os
import re
import string
import sys
import tempfile
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernel_providers import ConfigError, ConfigWarning, KernelType, LaunchFailed, LaunchOptions
from kernel_providers.config import Config, build_options, load_config
from kernel_providers.connection import PORT_NAMES, dictated_connection, read_connection_file
from kernel_providers.kernelspecs import (
    KernelSpec,
    parse_kernel_spec,
    read_kernel_spec,
    scan_kernel_dirs,
)
from kernel_providers.text import one_line
from kernel_providers.types import validate_provider_id

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

#: No example database: a failure prints the blob that reproduces it (@reproduce_failure).
PURE = settings(database=None, print_blob=True, deadline=1000)
#: Tests that write files: their timing depends on the disk.
FILES = settings(PURE, deadline=None)

#: What kernel_providers.text.one_line escapes: a problem line holds none of them, and
#: neither may a kernel id.
UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def unsafe(text: str) -> bool:
    return any(unicodedata.category(c) in UNSAFE for c in text)


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per example (function-scoped fixtures are shared by examples)."""
    with tempfile.TemporaryDirectory(prefix="kp-prop-") as folder:
        yield Path(folder)


def same(a: Any, b: Any) -> bool:
    """Equal, NaN included (NaN != NaN)."""
    return repr(a) == repr(b)


# --- generic JSON and text -----------------------------------------------------------------

#: any JSON value, NaN and the infinities too (Python's json writes and reads them)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)

#: text that breaks lines or terminals: controls, bidi overrides, separators, surrogates
nasty_text = st.text(st.sampled_from("a/.;$() \n\r\t\x00\x1b\x7f\x85\u2028\u202e\ud800é"),
                     max_size=8)
any_text = st.text(max_size=20) | nasty_text


def nested(depth: int, kind: str, closed: bool) -> str:
    """JSON nested ``depth`` levels deep: arrays or objects, bare or as the metadata of
    an otherwise valid kernel.json / connection file."""
    if kind == "array":
        return "[" * depth + ("]" * depth if closed else "")
    if kind == "object":
        return '{"a": ' * depth + "1" + ("}" * depth if closed else "")
    inner = "[" * depth + "]" * depth
    return f'{{"argv": ["python"], "key": "k", "metadata": {{"deep": {inner}}}}}'


deep_json = st.builds(nested, st.sampled_from([10, 100, 5_000, 100_000]),
                      st.sampled_from(["array", "object", "metadata"]), st.booleans())


# --- 1. kernel.json ------------------------------------------------------------------------

def kernel_json_dicts() -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of kernel.json's keys, each with a plausible or an arbitrary value."""
    known = st.fixed_dictionaries({}, optional={
        "argv": (st.lists(any_text, max_size=3) | st.lists(json_values, max_size=3)
                 | json_values),
        "display_name": any_text | json_values,
        "language": any_text | json_values,
        "env": (st.dictionaries(any_text, any_text, max_size=3)
                | st.dictionaries(st.text(max_size=5), json_values, max_size=3) | json_values),
        "interrupt_mode": st.sampled_from(["signal", "message", "Signal", ""]) | json_values,
        "metadata": st.dictionaries(st.text(max_size=5), json_values, max_size=3) | json_values,
    })
    extra = st.dictionaries(st.text(max_size=8), json_values, max_size=2)
    return st.builds(lambda a, b: {**b, **a}, known, extra)


def huge_spec(size: int, valid: bool) -> str:
    return json.dumps({"argv": ["x" * size] if valid else "x" * size, "display_name": "huge"})


kernel_texts = st.one_of(
    st.builds(json.dumps, kernel_json_dicts(), ensure_ascii=st.booleans(),
              indent=st.none() | st.just(1)),
    json_values.map(json.dumps),
    any_text,
    deep_json,
    st.builds(huge_spec, st.just(2**20), st.booleans()),
)


def spec_is_valid(data: Any) -> bool:
    """The documented rules of a kernel.json, as an oracle."""
    if not isinstance(data, dict):
        return False
    argv = data.get("argv")
    env = data.get("env", {})
    return (isinstance(argv, list) and bool(argv) and all(isinstance(a, str) for a in argv)
            and isinstance(env, dict) and all(isinstance(v, str) for v in env.values())
            and data.get("interrupt_mode", "signal") in ("signal", "message")
            and all(isinstance(data.get(k, ""), str) for k in ("display_name", "language"))
            and isinstance(data.get("metadata", {}), dict))


def text_is_valid(text: str) -> bool:
    try:
        return spec_is_valid(json.loads(text))
    except (ValueError, RecursionError):
        return False


def bytes_are_valid(data: bytes) -> bool:
    try:
        return text_is_valid(data.decode("utf-8"))
    except UnicodeDecodeError:
        return False


def check_spec(spec: KernelSpec, name: str, folder: Path) -> None:
    assert isinstance(spec.argv, list) and spec.argv
    assert all(isinstance(a, str) for a in spec.argv)
    assert isinstance(spec.display_name, str) and isinstance(spec.language, str)
    assert isinstance(spec.env, dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in spec.env.items())
    assert spec.interrupt_mode in ("signal", "message")
    assert isinstance(spec.metadata, dict)
    assert (spec.name, spec.resource_dir) == (name, folder)


@settings(FILES, max_examples=300)
@given(text=kernel_texts, where=any_text)
@example(text="[" * 100_000, where="deep")
@example(text='{"argv": "python"}', where="argv/str")
@example(text='{"argv": []}', where="x")
@example(text='{"argv": ["python", 3]}', where="x")
@example(text='{"argv": ["python"], "env": []}', where="x")
@example(text='{"argv": ["python"], "interrupt_mode": NaN}', where="x")
def test_parse_kernel_spec(text: str, where: str) -> None:
    """A valid KernelSpec exactly when the rules hold, else ValueError naming ``where``."""
    folder = Path("/nowhere")
    try:
        spec = parse_kernel_spec(text, "k", where, folder)
    except ValueError as exc:
        assert str(exc).startswith(f"{where}: "), str(exc)[:300]
        assert not text_is_valid(text)
    else:
        check_spec(spec, "k", folder)
        assert text_is_valid(text)


def encoded(text: str, encoding: str) -> bytes:
    errors = "surrogatepass" if encoding == "utf-8" else "replace"
    return text.encode(encoding, errors)


kernel_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(encoded, kernel_texts,
              st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"])),
)


@settings(FILES, max_examples=150)
@given(data=kernel_bytes)
@example(data=b'{"argv": ["python"], "display_name": "\xff"}')
@example(data=b"\xef\xbb\xbf" + b'{"argv": ["python"]}')  # a UTF-8 BOM
def test_read_kernel_spec(data: bytes) -> None:
    with scratch() as root:
        folder = root / "k"
        folder.mkdir()
        path = folder / "kernel.json"
        path.write_bytes(data)
        try:
            spec = read_kernel_spec("k", folder)
        except ValueError as exc:
            assert str(exc).startswith(f"{path}: "), str(exc)[:300]
            assert not bytes_are_valid(data)
        else:
            check_spec(spec, "k", folder)
            assert bytes_are_valid(data)


#: what a kernelspec folder holds instead of a kernel.json file
NO_FILE, A_FOLDER, DANGLING, LOOP = "no kernel.json", "a folder", "dangling", "loop"

folder_names = st.one_of(
    st.from_regex(r"[a-zA-Z0-9._-]{1,12}", fullmatch=True),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="/\x00"),
            min_size=1, max_size=20),
    st.text(st.sampled_from("aZ. \n\r\t\x1b\x7f\u2028\u202eé:'\""), min_size=1, max_size=6),
).filter(lambda n: n not in (".", "..") and len(n.encode()) < 200)

folder_contents = st.sampled_from([NO_FILE, A_FOLDER, DANGLING, LOOP]) | kernel_bytes


def make_folder(folder: Path, content: str | bytes) -> None:
    folder.mkdir()
    spec = folder / "kernel.json"
    if isinstance(content, bytes):
        spec.write_bytes(content)
    elif content == A_FOLDER:
        spec.mkdir()
    elif content == DANGLING:
        spec.symlink_to(folder / "nothing")
    elif content == LOOP:
        spec.symlink_to(spec)


@settings(FILES, max_examples=60)
@given(entries=st.lists(st.tuples(folder_names, folder_contents), max_size=6,
                        unique_by=lambda entry: entry[0].lower()))
def test_scan_kernel_dirs(entries: list[tuple[str, str | bytes]]) -> None:
    """Never raises; the valid specs by lowercased name; one problem line per bad
    folder, starting with its path (escaped), with no control characters in it."""
    with scratch() as root:
        kernels = root / "kernels"
        kernels.mkdir()
        (root / "stray-file").write_text("not a folder")
        expected, bad = {}, []
        for raw, content in entries:
            make_folder(kernels / raw, content)
            if content == NO_FILE:
                continue
            ok = isinstance(content, bytes) and bytes_are_valid(content)
            if ok and re.fullmatch(r"[a-z0-9._-]+", raw.lower()):
                expected[raw.lower()] = kernels / raw
            else:
                bad.append(one_line(str(kernels / raw)))
        specs, problems = scan_kernel_dirs([root / "missing", kernels, root / "stray-file"])
    assert set(specs) == set(expected)
    for name, spec in specs.items():
        check_spec(spec, name, expected[name])
    assert len(problems) == len(bad), problems
    for line in problems:
        assert not unsafe(line), line
    for shown in bad:
        assert any(p.startswith((f"{shown}: ", f"{shown}/kernel.json: ")) for p in problems), (
            shown, problems)


# --- 2. the configuration file -------------------------------------------------------------

class Literal(str):
    """A TOML value written as is (dates and times, which Python's json cannot write)."""


def toml_string(text: str) -> str:
    # JSON's escapes are TOML's; TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    if isinstance(value, Literal):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else
                ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(table: dict[str, Any], sections: bool) -> str:
    """``table`` as TOML; with ``sections``, its tables as ``[name]`` sections."""
    lines = [f"{toml_string(k)} = {toml_value(v)}\n" for k, v in table.items()
             if not (sections and isinstance(v, dict))]
    for key, value in table.items():
        if sections and isinstance(value, dict):
            lines.append(f"[{toml_string(key)}]\n{toml_document(value, False)}")
    return "".join(lines)


def huge_text(size: int) -> str:
    """A huge string (built, so that no repr of the strategy holds a megabyte)."""
    return "x" * size


toml_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
numbers = st.one_of(
    st.floats(), st.integers(),
    st.integers(-(10**400), 10**400),  # more than a float holds
    st.floats(0.001, 1000), st.integers(0, 1000), st.sampled_from([0, 0.0, -0.0, -1]),
)
toml_scalars = st.one_of(
    toml_text, numbers, st.booleans(),
    st.sampled_from([Literal("1979-05-27T07:32:00Z"), Literal("1979-05-27"),
                     Literal("07:32:00")]),
    st.builds(huge_text, st.just(2**20)),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(toml_text, inner, max_size=3),
    max_leaves=8,
)

TIMEOUTS = ("discovery_timeout", "ready_timeout")
NUMBERS = (*TIMEOUTS, "cache_ttl")

config_tables = st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries({}, optional={
        **dict.fromkeys(NUMBERS, numbers | toml_values),
        "disable": st.lists(toml_text, max_size=3) | toml_values,
        "providers": (st.dictionaries(toml_text, st.dictionaries(toml_text, toml_values,
                                                                 max_size=2), max_size=2)
                      | toml_values),
    }),
    st.dictionaries(st.sampled_from(["path", "cache_tl", "Disable", ""]) | toml_text,
                    toml_values, max_size=2),
)


def number_is_valid(value: Any, key: str) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        value = float(value)
    except OverflowError:  # an integer no float holds
        return False
    return math.isfinite(value) and value >= 0 and not (value == 0 and key.endswith("timeout"))


def config_problems(table: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(what an error must name: each invalid key, unknown keys) by the documented rules."""
    bad, unknown = [], []
    providers = table.get("providers", {})
    if not isinstance(providers, dict) or not all(isinstance(v, dict)
                                                  for v in providers.values()):
        return ["[providers]"], []
    for key, value in table.items():
        if key in NUMBERS:
            ok = number_is_valid(value, key)
        elif key == "disable":
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            ok = key == "providers"
            if not ok:
                unknown.append(key)
                continue
        if not ok:
            bad.append(key)
    return bad, unknown


@contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning, recorded (the suite turns warnings into errors)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


@settings(FILES, max_examples=200)
@given(table=config_tables, sections=st.booleans())
@example(table={"cache_ttl": 10**400}, sections=False)
@example(table={"ready_timeout": 0}, sections=False)
@example(table={"discovery_timeout": math.nan, "cache_ttl": -math.inf}, sections=False)
@example(table={"providers": {"spec": {"exclude": ["a*"]}}, "path": "/etc"}, sections=True)
def test_load_config_documents(table: dict[str, Any], sections: bool) -> None:
    """Valid TOML of the known keys: a Config exactly when every value is valid, else
    ConfigError naming the file and a bad key; warnings only for unknown keys."""
    text = toml_document(table, sections)
    parsed_table = tomllib.loads(text)  # the same, but for dates and times (Literal)
    assert same(sorted(parsed_table.items()), sorted(table.items())) or (
        Literal in map(type, _leaves(table)))
    bad, unknown = config_problems(parsed_table)
    with scratch() as root, recorded_warnings() as caught:
        path = root / "kernel_providers.toml"
        path.write_text(text, encoding="utf-8")
        try:
            config = load_config(path)
        except ConfigError as exc:
            message = str(exc)
            assert str(path) in message and bad, message[:300]
            assert any(key in message for key in bad), (bad, message[:300])
        else:
            assert not bad, bad
            assert isinstance(config, Config) and config.path == path
            for key in NUMBERS:
                expected = parsed_table.get(key, getattr(Config(), key))
                assert getattr(config, key) == float(expected)
            assert config.disable == parsed_table.get("disable", [])
            assert same(config.providers, parsed_table.get("providers", {}))
            assert len(caught) == len(unknown)
            assert all(f"unknown key {key!r}" in str(w.message)
                       for key, w in zip(unknown, caught, strict=True))
    assert all(issubclass(w.category, ConfigWarning) for w in caught)


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def deep_toml(depth: int, kind: str) -> str:
    if kind == "array":
        return "cache_ttl = " + "[" * depth + "]" * depth + "\n"
    if kind == "table":
        return "cache_ttl = " + "{a = " * depth + "1" + "}" * depth + "\n"
    return "[" + ".".join(["providers"] + ["a"] * depth) + "]\nx = 1\n"


config_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(encoded, st.text(max_size=100), st.sampled_from(["utf-8", "utf-16", "latin-1"])),
    st.builds(deep_toml, st.sampled_from([10, 900, 5_000]),
              st.sampled_from(["array", "table", "dotted"])).map(str.encode),
    st.builds(lambda n: f"cache_ttl = {n}\n".encode(), st.sampled_from(
        ["1" * 5000, "0x" + "f" * 5000, "1" + "0" * 400, "1e999", "-0", "nan", "1_000"])),
)


@settings(FILES, max_examples=150)
@given(data=config_bytes)
@example(data=b"cache_ttl = " + b"[" * 5000 + b"]" * 5000)
@example(data=b"cache_ttl = " + b"1" * 5000)
@example(data=b"\xff\xfe")
def test_load_config_bytes(data: bytes) -> None:
    """Any bytes: a Config, or ConfigError naming the file; warnings only ConfigWarning."""
    with scratch() as root, recorded_warnings() as caught:
        path = root / "kernel_providers.toml"
        path.write_bytes(data)
        try:
            assert isinstance(load_config(path), Config)
        except ConfigError as exc:
            assert str(path) in str(exc), str(exc)[:300]
    assert all(issubclass(w.category, ConfigWarning) for w in caught)


@dataclass
class Options:
    """A provider's options of every supported type."""

    name: str = "default"
    ready_timeout: float = 5.0
    size: float = 1.0
    count: int = 1
    verbose: bool = False
    include: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    limit: float | None = None
    host: str | None = None


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(i, str) for i in v)


def _is_str_dict(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(i, str) for i in v.values())


OPTION_RULES: dict[str, Callable[[Any], bool]] = {
    "name": lambda v: isinstance(v, str),
    "ready_timeout": lambda v: number_is_valid(v, "ready_timeout"),
    "size": lambda v: number_is_valid(v, "size"),
    "count": lambda v: isinstance(v, int) and number_is_valid(v, "count"),
    "verbose": lambda v: isinstance(v, bool),
    "include": _is_str_list,
    "labels": _is_str_dict,
    "limit": lambda v: v is None or number_is_valid(v, "limit"),
    "host": lambda v: v is None or isinstance(v, str),
}

option_values = st.one_of(
    toml_values, st.none(), numbers, st.lists(toml_text, max_size=3),
    st.dictionaries(toml_text, toml_text, max_size=3),
)
option_tables = st.dictionaries(st.sampled_from([*OPTION_RULES, "nmae", "Name"]),
                                option_values, max_size=5)


@settings(PURE, max_examples=300)
@given(table=option_tables)
@example(table={"count": -1})
@example(table={"size": 10**400})
@example(table={"limit": math.inf})
@example(table={"verbose": 1, "count": True})
def test_build_options(table: dict[str, Any]) -> None:
    """An Options exactly when every known value is valid (floats as floats), else
    ConfigError naming the place and the key; unknown keys warn."""
    where = "kp.toml [providers.x]"
    bad = [k for k, v in table.items() if k in OPTION_RULES and not OPTION_RULES[k](v)]
    unknown = [k for k in table if k not in OPTION_RULES]
    with recorded_warnings() as caught:
        try:
            options = build_options(Options, table, where)
        except ConfigError as exc:
            assert bad, str(exc)[:300]
            assert any(str(exc).startswith(f"{where}: {key}") for key in bad), str(exc)[:300]
        else:
            assert not bad, bad
            assert isinstance(options, Options)
            for key, value in table.items():
                if key in ("size", "ready_timeout", "limit") and value is not None:
                    assert getattr(options, key) == float(value)
                    assert type(getattr(options, key)) is float
                elif key in OPTION_RULES:
                    assert same(getattr(options, key), value)
            assert len(caught) == len(unknown)
    assert all(issubclass(w.category, ConfigWarning) for w in caught)


# --- 3. provider ids and kernel ids --------------------------------------------------------

ID_CHARS = string.ascii_lowercase + string.digits + "-_"
DANGEROUS = ["..", "/", ";", "$()", "`x`", " ", "\n", "\r", "\t", "\x00", "é", "\u202e",
             "A", "\u0430", "\uff41", "\u0661"]


def is_provider_id(text: str) -> bool:
    """The documented grammar: lowercase ASCII letters, digits, '-', '_'; a letter first."""
    return (bool(text) and text[0] in string.ascii_lowercase
            and all(c in ID_CHARS for c in text))


def spoil(valid: str, bad: str, at: int) -> str:
    at = min(at, len(valid))
    return valid[:at] + bad + valid[at:]


valid_provider_ids = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
provider_ids = st.one_of(
    valid_provider_ids,
    st.builds(spoil, valid_provider_ids, st.sampled_from(DANGEROUS), st.integers(0, 12)),
    st.text(max_size=12),
    st.text(st.sampled_from(ID_CHARS + "/.;$()` \nAé"), max_size=10),
)


@settings(PURE, max_examples=500)
@given(text=provider_ids)
@example(text="..")
@example(text="spec/")
@example(text="/spec")
@example(text="spec\n")
@example(text="a;rm -rf")
@example(text="$(id)")
@example(text="my provider")
@example(text="spéc")
@example(text="spec\u0301")
def test_provider_ids(text: str) -> None:
    """Accepted (and returned as is) exactly when the documented grammar matches."""
    try:
        assert validate_provider_id(text) == text
    except ValueError as exc:
        assert repr(text) in str(exc)
        assert not is_provider_id(text)
    else:
        assert is_provider_id(text)


kernel_names = st.one_of(
    st.text(max_size=15),
    st.text(st.sampled_from("ab/.:_- é\n\x00\u202e"), max_size=8),
    st.sampled_from(["python3", "img:1.2", "base/ir", "ghcr.io/org/img:tag", "My Project",
                     "café", "../../etc", "x/", ""]),
)


@settings(PURE, max_examples=500)
@given(provider=provider_ids, name=kernel_names, other_id=st.none() | st.text(max_size=12),
       mode=st.sampled_from(["signal", "message"]) | st.text(max_size=8))
@example(provider="spec", name="python3", other_id=None, mode="signal")
@example(provider="venv", name="My Project", other_id=None, mode="signal")
@example(provider="spec", name="a\nb", other_id=None, mode="signal")
@example(provider="docker", name="img\x00", other_id=None, mode="signal")
@example(provider="ssh", name="host/\u202eevil", other_id=None, mode="signal")
@example(provider="..", name="x", other_id=None, mode="signal")
@example(provider="", name="x", other_id=None, mode="signal")
@example(provider="Spec", name="x", other_id=None, mode="signal")
def test_kernel_types(provider: str, name: str, other_id: str | None, mode: str) -> None:
    """A KernelType exactly when its id is ``<provider>/<name>`` with a valid provider id,
    a name that is not empty and holds no control (or other line-breaking, spoofing)
    character, and a valid interrupt mode; else ValueError naming the id. The name is
    otherwise free text (image references, folder names with spaces, '/')."""
    kernel_id = f"{provider}/{name}" if other_id is None else other_id
    prefix, sep, rest = kernel_id.partition("/")
    valid = (is_provider_id(provider) and sep == "/" and prefix == provider and rest != ""
             and not unsafe(kernel_id) and mode in ("signal", "message"))
    try:
        kernel = KernelType(id=kernel_id, display_name="d", language="l", provider=provider,
                            interrupt_mode=mode)  # type: ignore[arg-type]
    except ValueError as exc:
        assert repr(kernel_id) in str(exc), str(exc)
        assert not valid
    else:
        assert valid
        assert kernel.name == rest and kernel.to_dict()["id"] == kernel_id


# --- 4. connection files -------------------------------------------------------------------

LOOPBACK = ("127.0.0.1", "localhost")

connection_dicts = st.fixed_dictionaries({}, optional={
    "key": st.text(max_size=10) | json_values,
    "transport": st.sampled_from(["tcp", "ipc", "udp"]) | json_values,
    "ip": st.sampled_from([*LOOPBACK, "0.0.0.0", "10.1.2.3"]) | json_values,
    "signature_scheme": st.just("hmac-sha256") | json_values,
    "kernel_name": st.text(max_size=5) | json_values,
    **dict.fromkeys(PORT_NAMES, st.integers(0, 65535) | st.integers(1, 65535)
                    | st.integers() | json_values),
})

connection_bytes = st.one_of(
    connection_dicts.map(json.dumps).map(str.encode),
    json_values.map(json.dumps).map(str.encode),
    st.binary(max_size=200),
    deep_json.map(str.encode),
    st.builds(encoded, any_text, st.sampled_from(["utf-8", "latin-1"])),
)


def connection_is_valid(data: Any, remote: bool) -> bool:
    """The documented checks of a dictated connection file, as an oracle."""
    if not isinstance(data, dict):
        return False
    if not all(isinstance(data.get(k, ""), str) for k in ("key", "ip", "signature_scheme")):
        return False
    ports = [data.get(p, 0) for p in PORT_NAMES]
    if not all(type(p) is int and 0 <= p < 65536 for p in ports):
        return False
    transport = data.get("transport", "tcp")
    if remote:
        return transport == "tcp" and data.get("ip", "127.0.0.1") in LOOPBACK and all(ports)
    return transport in ("tcp", "ipc")


def parsed(data: bytes) -> Any:
    """The JSON in ``data`` as connection.py reads it (text in the locale's encoding)."""
    try:
        return json.loads(data.decode(locale.getpreferredencoding(False)))
    except (ValueError, RecursionError):
        return None


@settings(FILES, max_examples=150)
@given(data=connection_bytes)
@example(data=b"[" * 100_000)
def test_read_connection_file(data: bytes) -> None:
    """The dict in the file, or None (missing, half written, not an object)."""
    with scratch() as root:
        path = root / "kernel-1.json"
        assert read_connection_file(path) is None  # not written yet
        path.write_bytes(data)
        info = read_connection_file(path)
        assert read_connection_file(root) is None  # a folder
    expected = parsed(data)
    if isinstance(expected, dict):
        assert same(info, expected)
    else:
        assert info is None


@settings(FILES, max_examples=300)
@given(data=connection_bytes, kernel_id=st.text(max_size=10), remote=st.booleans())
@example(data=b'{"shell_port": true}', kernel_id="p/k", remote=False)
@example(data=b'{"ip": 5}', kernel_id="p/k", remote=False)
@example(data=b'{"signature_scheme": ["x"]}', kernel_id="p/k", remote=False)
@example(data=b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", kernel_id="p/k",
         remote=False)
def test_dictated_connection(data: bytes, kernel_id: str, remote: bool) -> None:
    """The checked connection, or LaunchFailed naming the kernel and the file."""
    with scratch() as root:
        path = root / "client connection.json"
        path.write_bytes(data)
        options = LaunchOptions(connection_file=str(path))
        try:
            info = dictated_connection(options, kernel_id, remote=remote)
        except LaunchFailed as exc:
            assert f"kernel {kernel_id!r}: connection file {path}" in str(exc), str(exc)[:300]
            assert not connection_is_valid(parsed(data), remote)
            return
    assert info is not None and connection_is_valid(parsed(data), remote)
    assert info["transport"] in ("tcp", "ipc") and isinstance(info["ip"], str)
    assert all(type(info[p]) is int and 0 <= info[p] < 65536  # type: ignore[literal-required]
               for p in PORT_NAMES)
    assert isinstance(info.get("key", ""), str) and isinstance(info["signature_scheme"], str)


@settings(PURE, max_examples=100)
@given(transport=st.sampled_from(["tcp", "ipc"]) | st.text(max_size=5), remote=st.booleans())
def test_no_dictated_connection(transport: str, remote: bool) -> None:
    """No file: None, unless a remote kernel is asked for a transport other than tcp."""
    options = LaunchOptions(connection_info={"transport": transport})
    try:
        assert dictated_connection(options, "p/k", remote=remote) is None
    except LaunchFailed as exc:
        assert remote and transport != "tcp" and "'p/k'" in str(exc)
    else:
        assert not remote or transport == "tcp"
    assert dictated_connection(LaunchOptions(), "p/k", remote=remote) is None


def test_unreadable_connection_file() -> None:
    """A file that is a folder, or missing: LaunchFailed naming it."""
    if os.name != "posix":  # pragma: no cover
        return
    with scratch() as root:
        for path in (root, root / "missing.json"):
            options = LaunchOptions(connection_file=str(path))
            try:
                dictated_connection(options, "p/k")
            except LaunchFailed as exc:
                assert str(path) in str(exc)
            else:  # pragma: no cover
                raise AssertionError(f"{path} was accepted")
