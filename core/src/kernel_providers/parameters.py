"""Kernel parameters: the knobs a kernel type declares (``KernelType.parameters``, a JSON
Schema object) and the values a launch gives them (``LaunchOptions.parameters``).

Values are checked with ``jsonschema`` (imported only when a kernel type has
parameters) before anything starts; a bad value is one :class:`ParameterError` naming
the parameter, the value and what is allowed. Defaults are filled in. A kernel started
on this machine gets them as ``KERNEL_PARAMETER_<NAME>`` variables and wherever its argv
says ``{parameter:<name>}``: never through a shell.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import KernelProviderError

if TYPE_CHECKING:
    from .types import KernelType

__all__ = ["PRESET_OF", "ParameterError", "allowed_values", "configured",
           "parameter_variables", "parse_value", "resolve_parameters", "substitute_parameters"]

#: metadata of a preset's kernel type: the kernel type it presets, and its values
PRESET_OF, PRESET_VALUES = "preset_of", "preset_values"

_PLACEHOLDER = re.compile(r"\{parameter:([A-Za-z_][A-Za-z0-9_]*)\}")


class ParameterError(KernelProviderError, ValueError):
    """A parameter value the kernel type does not allow (a usage error: CLI exit 2)."""


def _properties(kernel_type: KernelType) -> dict[str, Any]:
    return dict((kernel_type.parameters or {}).get("properties") or {})


def allowed_values(schema: Mapping[str, Any]) -> str:
    """What a parameter's schema allows, in a few words."""
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(json.dumps(v) for v in schema["enum"]))
    elif "type" in schema:
        kind = schema["type"]
        parts.append(f"{'an' if str(kind)[:1] in 'aeiou' else 'a'} {kind}"
                     if isinstance(kind, str) else "one of the types " + ", ".join(kind))
    for key, words in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">"),
                       ("exclusiveMaximum", "<"), ("minLength", "length >="),
                       ("maxLength", "length <="), ("pattern", "matching")):
        if key in schema:
            parts.append(f"{words} {schema[key]}")
    return " ".join(parts) or "anything the schema allows"


def resolve_parameters(kernel_type: KernelType, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` checked against the kernel type's parameters, with the defaults of
    those not given; :class:`ParameterError` for an unknown parameter or a value the
    schema refuses (each named with what is allowed)."""
    schema = kernel_type.parameters
    where = f"kernel {kernel_type.id!r}"
    if not schema:
        if values:
            raise ParameterError(f"{where} takes no parameters (given: "
                                 f"{', '.join(sorted(values))})")
        return {}
    properties = _properties(kernel_type)
    unknown = sorted(set(values) - set(properties))
    if unknown:
        raise ParameterError(
            f"{where} has no parameter {', '.join(map(repr, unknown))}; its parameters:"
            f" {', '.join(sorted(properties)) or 'none'} (`kernel-providers info"
            f" {kernel_type.id}` describes them)")
    import jsonschema

    resolved = {name: prop["default"] for name, prop in properties.items()
                if isinstance(prop, dict) and "default" in prop}
    resolved.update(values)
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:  # the provider's (or config's) mistake
        raise ParameterError(f"{where} declares parameters that are not a valid JSON"
                             f" Schema ({exc.message}); tell its provider's authors, or"
                             " fix [kernels] parameters in the config") from None
    error = jsonschema.exceptions.best_match(validator_class(schema).iter_errors(resolved))
    if error is not None:
        name = str(error.path[0]) if error.path else None
        if name is None:  # e.g. a required parameter missing
            raise ParameterError(f"{where}: {error.message}")
        raise ParameterError(
            f"{where}: parameter {name!r} = {json.dumps(resolved.get(name))} is not"
            f" allowed ({error.message}); allowed: {allowed_values(properties.get(name, {}))}")
    return resolved


def parse_value(kernel_type: KernelType, name: str, text: str) -> Any:
    """The value of ``--param name=text``, typed by the parameter's schema (integer,
    number, boolean; JSON for arrays and objects; else the text itself)."""
    prop = _properties(kernel_type).get(name)
    kind = prop.get("type") if isinstance(prop, dict) else None
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
        if kind == "boolean":
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
            raise ValueError(text)
        if kind in ("array", "object"):
            return json.loads(text)
    except ValueError:
        raise ParameterError(f"kernel {kernel_type.id!r}: parameter {name!r} = {text!r} is"
                             f" not {allowed_values({'type': kind})}") from None
    return text


def parameter_variables(parameters: Mapping[str, Any]) -> dict[str, str]:
    """``KERNEL_PARAMETER_<NAME>`` variables for the values (strings as they are,
    anything else as JSON)."""
    return {f"KERNEL_PARAMETER_{name.upper()}": value if isinstance(value, str)
            else json.dumps(value) for name, value in parameters.items()}


def substitute_parameters(argv: list[str], parameters: Mapping[str, Any],
                          kernel_id: str) -> list[str]:
    """``argv`` with each ``{parameter:<name>}`` replaced by the value (inside the one
    argv item: no shell ever sees it); ParameterError for a name without a value."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in parameters:
            raise ParameterError(f"kernel {kernel_id!r}: its argv uses {{parameter:{name}}}"
                                 " but no value was given and it has no default")
        given = parameters[name]
        return given if isinstance(given, str) else json.dumps(given)

    return [_PLACEHOLDER.sub(value, item) for item in argv]


def _merged(base: Any, over: Any) -> Any:
    """``over`` merged into ``base`` (tables key by key; anything else replaced)."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merged(base.get(k), v) for k, v in over.items()}}
    return over


def configured(kernel_type: KernelType, table: Mapping[str, Any]) -> list[KernelType]:
    """``kernel_type`` with its ``[kernels."<id>"]`` table applied: ``parameters`` merged
    over its own (to narrow a range, add a parameter of a kernelspec), and one more
    kernel type ``<id>@<preset>`` per preset, whose values become its defaults."""
    from dataclasses import replace

    own = kernel_type
    if table.get("parameters"):
        schema = _merged(kernel_type.parameters or {"type": "object", "properties": {}},
                         table["parameters"])
        own = replace(kernel_type, parameters=schema)
    found = [own]
    for name, values in sorted((table.get("presets") or {}).items()):
        schema = dict(own.parameters or {"type": "object", "properties": {}})
        properties = dict(schema.get("properties") or {})
        for key, value in values.items():  # (unknown names: refused at launch)
            properties[key] = {**(properties.get(key) or {}), "default": value}
        found.append(replace(
            own, id=f"{own.id}@{name}", display_name=f"{own.display_name} ({name})",
            parameters={**schema, "properties": properties},
            metadata={**own.metadata, PRESET_OF: own.id, PRESET_VALUES: dict(values)}))
    return found
