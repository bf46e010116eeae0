"""The parameters a Docker kernel type declares, and what they change in its container:
``cpus`` and ``memory`` (limits, never above the configured ``max_cpus`` /
``max_memory``), ``tag`` (one of the image entry's configured ``tags``), ``mounts``
(chosen among the configured ``mount_choices``: never a folder config does not list).
Docker's own options are never built from text: a parameter cannot widen what the
configuration allows (no new mounts, no privileges, no other image)."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from kernel_providers.sdk import ParameterError

from .config import SIZE, DockerConfig, ImageEntry, memory_bytes
from .launcher import LaunchTarget

__all__ = ["apply_parameters", "declared_parameters"]

def declared_parameters(config: DockerConfig, target: LaunchTarget,
                        entry: ImageEntry | None) -> dict[str, Any]:
    """The JSON Schema of a Docker kernel type's parameters."""
    most_cpus = config.max_cpus or float(os.cpu_count() or 1)
    cpus: dict[str, Any] = {
        "type": "number", "exclusiveMinimum": 0, "maximum": most_cpus, "title": "CPUs",
        "description": f"CPU limit of the container (at most {most_cpus:g})"}
    if target.cpus:
        cpus["default"] = min(target.cpus, most_cpus)
    memory: dict[str, Any] = {
        "type": "string", "pattern": f"^{SIZE.pattern}$", "title": "Memory",
        "description": "memory limit of the container, e.g. 512m or 2g"
                       + (f" (at most {config.max_memory})" if config.max_memory else "")}
    if target.mem_limit and SIZE.fullmatch(target.mem_limit):  # (else the launch says
        memory["default"] = target.mem_limit                      # what is wrong with it)
    properties: dict[str, Any] = {"cpus": cpus, "memory": memory}
    if config.mount_choices:
        properties["mounts"] = {
            "type": "array", "uniqueItems": True, "default": [], "title": "Mounts",
            "items": {"enum": list(config.mount_choices)},
            "description": "folders to mount, among those the configuration offers"}
    if entry is not None and entry.tags:
        current = entry.image.rpartition(":")[2] if ":" in entry.image.split("/")[-1] \
            else "latest"
        properties["tag"] = {"enum": list(entry.tags), "title": "Image tag",
                             "default": current if current in entry.tags else entry.tags[0],
                             "description": "which tag of the image to run"}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def apply_parameters(kernel_id: str, config: DockerConfig, target: LaunchTarget,
                     values: dict[str, Any]) -> LaunchTarget:
    """``target`` with the (schema-checked) parameter values in force; ParameterError
    for a memory size above ``max_memory``."""
    changes: dict[str, Any] = {}
    if values.get("cpus") is not None:
        changes["cpus"] = float(values["cpus"])
    if values.get("memory") is not None:
        memory = str(values["memory"])
        if config.max_memory and memory_bytes(memory) > memory_bytes(config.max_memory):
            raise ParameterError(f"kernel {kernel_id!r}: parameter 'memory' = {memory!r} is"
                                 f" not allowed (more than max_memory = {config.max_memory}"
                                 " in [providers.docker])")
        changes["mem_limit"] = memory
    if values.get("mounts"):
        changes["mounts"] = [*target.mounts, *values["mounts"]]
    if values.get("tag"):
        repository = target.image.rpartition(":")[0] \
            if ":" in target.image.split("/")[-1] else target.image
        changes["image"] = f"{repository}:{values['tag']}"
    return replace(target, **changes) if changes else target
