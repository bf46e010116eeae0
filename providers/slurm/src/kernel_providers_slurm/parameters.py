"""The parameters a Slurm profile's kernel type declares, and the profile they make:
``partition`` (among the profile's ``partitions``), ``time`` (at most ``max_time``),
``cpus`` (at most ``max_cpus``), ``mem`` (at most ``max_mem``), ``gres`` (among
``gres_choices``). Each becomes one sbatch argv item (quoted on a login host): a value
is never read by a shell, and a parameter never asks beyond what the profile allows."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from kernel_providers.sdk import ParameterError

from .config import SlurmProfile

__all__ = ["apply_parameters", "declared_parameters", "minutes"]

#: Slurm's time formats: "minutes", "minutes:seconds", "hours:minutes:seconds",
#: "days-hours", "days-hours:minutes", "days-hours:minutes:seconds"
_TIME = r"^([0-9]+-)?[0-9]+(:[0-9]{1,2}){0,2}$"
_MEM = r"^[0-9]+[KMGTkmgt]?$"
_MEM_UNITS = {"": 1, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}  # in MB


def minutes(time: str) -> float:
    """A Slurm time limit in minutes."""
    days, _, rest = time.rpartition("-") if "-" in time else ("", "", time)
    parts = [int(p) for p in rest.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        hours, mins, secs = [*parts, 0, 0][:3]
        return int(days) * 1440 + hours * 60 + mins + secs / 60
    if len(parts) == 1:
        return float(parts[0])
    if len(parts) == 2:  # minutes:seconds
        return parts[0] + parts[1] / 60
    return parts[0] * 60 + parts[1] + parts[2] / 60


def _megabytes(mem: str) -> float:
    match = re.fullmatch(r"([0-9]+)([KMGTkmgt]?)", mem)
    if match is None:
        raise ValueError(mem)
    return int(match.group(1)) * _MEM_UNITS[match.group(2).lower()]


def declared_parameters(profile: SlurmProfile) -> dict[str, Any]:
    """The JSON Schema of a profile's kernel parameters."""
    def with_default(schema: dict[str, Any], value: Any) -> dict[str, Any]:
        return {**schema, "default": value} if value is not None else schema

    properties: dict[str, Any] = {
        "time": with_default({
            "type": "string", "pattern": _TIME, "title": "Wall time",
            "description": "the job's time limit, in Slurm's format (30, 2:00:00, 1-00:00)"
                           + (f"; at most {profile.max_time}" if profile.max_time else "")},
            profile.time),
        "cpus": with_default({
            "type": "integer", "minimum": 1, "title": "CPUs",
            "description": "CPUs for the kernel (sbatch --cpus-per-task)",
            **({"maximum": profile.max_cpus} if profile.max_cpus else {})}, profile.cpus),
        "mem": with_default({
            "type": "string", "pattern": _MEM, "title": "Memory",
            "description": "memory for the job (sbatch --mem), e.g. 4G"
                           + (f"; at most {profile.max_mem}" if profile.max_mem else "")},
            profile.mem),
    }
    if profile.partitions:
        properties["partition"] = with_default({
            "enum": list(profile.partitions), "title": "Partition",
            "description": "the partition (queue) the job runs in"},
            profile.partition if profile.partition in profile.partitions else None)
    if profile.gres_choices:
        properties["gres"] = with_default({
            "enum": list(profile.gres_choices), "title": "Generic resources",
            "description": "GPUs and other resources (sbatch --gres)"},
            profile.gres if profile.gres in profile.gres_choices else None)
    return {"type": "object", "properties": properties, "additionalProperties": False}


def apply_parameters(kernel_id: str, profile: SlurmProfile,
                     values: dict[str, Any]) -> SlurmProfile:
    """The profile with the (schema-checked) values in force; ParameterError for a time
    or memory beyond the profile's maximum."""
    def refuse(name: str, value: Any, limit: str) -> ParameterError:
        return ParameterError(f"kernel {kernel_id!r}: parameter {name!r} = {value!r} is not"
                              f" allowed (more than {limit} in the profile)")

    time, mem = values.get("time"), values.get("mem")
    if time is not None and profile.max_time and minutes(time) > minutes(profile.max_time):
        raise refuse("time", time, f"max_time = {profile.max_time}")
    if mem is not None and profile.max_mem and _megabytes(mem) > _megabytes(profile.max_mem):
        raise refuse("mem", mem, f"max_mem = {profile.max_mem}")
    changes = {name: values[name] for name in ("partition", "time", "cpus", "mem", "gres")
               if values.get(name) is not None}
    return dataclasses.replace(profile, **changes) if changes else profile
