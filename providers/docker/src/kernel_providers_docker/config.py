"""``[providers.docker]`` options, and the image entries they list."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kernel_providers.sdk import ConfigError

__all__ = ["LABEL", "PULL_POLICIES", "SIZE", "DockerConfig", "ImageEntry", "memory_bytes",
           "parse_images"]

LABEL = "io.jupyter.kernelspec"
PULL_POLICIES = ("never", "missing", "always")
IPYKERNEL_ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]


#: a memory size as Docker writes it ("512m", "2g"): a number and an optional unit
SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([bkmgBKMG]?)")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def memory_bytes(size: str) -> int:
    """``512m`` as bytes; ValueError when it is no size."""
    match = SIZE.fullmatch(size.strip())
    if match is None:
        raise ValueError(size)
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass
class DockerConfig:
    """``[providers.docker]`` options; per-image tables in ``images`` override them."""

    #: images to offer besides the labelled ones: "name:tag" or tables (see ImageEntry)
    images: list[Any] = field(default_factory=list)
    #: offer every local image carrying the io.jupyter.kernelspec label
    labelled_images: bool = True
    #: "never" (default), "missing" or "always"
    pull: str = "never"
    #: seconds an image pull may take (separate from the kernel's ready timeout)
    pull_timeout: float = 900.0
    #: environment variables for every container
    env: dict[str, str] = field(default_factory=dict)
    #: volumes, "host-path:container-path[:ro]"
    mounts: list[str] = field(default_factory=list)
    #: mount the launch's folder (its cwd, else the current directory) at this path
    #: inside the container, and work there
    mount_cwd: str | None = None
    mem_limit: str | None = None
    cpus: float | None = None
    network: str | None = None
    user: str | None = None
    #: the most a launch's ``cpus`` parameter may ask for (default: this machine's CPUs)
    max_cpus: float | None = None
    #: the most a launch's ``memory`` parameter may ask for, e.g. "8g" (default: any)
    max_memory: str | None = None
    #: volumes ("host-path:container-path[:ro]") a launch may add with its ``mounts``
    #: parameter: the only ones it can add
    mount_choices: list[str] = field(default_factory=list)


@dataclass
class ImageEntry:
    """One configured image: the kernel ``docker/<name>`` (``name`` defaults to the image
    reference) with its own argv, env and limits."""

    image: str
    name: str
    argv: list[str] | None = None
    display_name: str | None = None
    language: str = "python"
    interrupt_mode: str = "signal"
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    mem_limit: str | None = None
    cpus: float | None = None
    network: str | None = None
    user: str | None = None
    #: tags of the image a launch may pick with its ``tag`` parameter
    tags: list[str] = field(default_factory=list)
    pull: str | None = None


_ENTRY_KEYS = {f for f in ImageEntry.__dataclass_fields__}


def parse_images(entries: list[Any], where: str) -> list[ImageEntry]:
    """Validate the ``images`` list; errors name the entry."""
    from kernel_providers.sdk import build_options

    parsed = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            parsed.append(ImageEntry(image=entry, name=entry))
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise ConfigError(f"{where}: images[{i}] must be an image reference or a table"
                              " with at least image = \"name:tag\"")
        table = {"name": entry["image"], **entry}
        item: ImageEntry = build_options(ImageEntry, table, f"{where}: images[{i}]")
        if item.pull is not None and item.pull not in PULL_POLICIES:
            raise ConfigError(f"{where}: images[{i}].pull must be one of {PULL_POLICIES}")
        parsed.append(item)
    return parsed
