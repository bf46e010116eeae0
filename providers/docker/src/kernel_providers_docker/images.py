"""Images: the kernel types they offer, and pulling them under their own time budget."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_providers.sdk import KernelSpec, KernelType, LaunchFailed, parse_kernel_spec

from .config import LABEL

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.images import Image

__all__ = ["ensure_image", "image_kernel_type", "label_spec"]


def label_spec(image: Image, reference: str) -> KernelSpec | None:
    """The kernelspec an image describes in its label, or None; ValueError if invalid."""
    text = (image.labels or {}).get(LABEL)
    if text is None:
        return None
    return parse_kernel_spec(text, reference, f"image {reference}: label {LABEL}", Path())


def image_kernel_type(name: str, image_ref: str, display_name: str, language: str,
                      interrupt_mode: str, metadata: dict[str, Any],
                      image_id: str | None) -> KernelType:
    """The kernel type ``docker/<name>`` of an image."""
    return KernelType(
        id=f"docker/{name}", display_name=f"{display_name} (docker: {image_ref})",
        language=language, provider="docker",
        metadata={**metadata, "image": image_ref, "image_id": image_id},
        interrupt_mode=interrupt_mode,  # type: ignore[arg-type]
    )


def _present(client: DockerClient, reference: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(reference)
    except ImageNotFound:
        return False
    return True


def _pull(client: DockerClient, reference: str, cancelled: threading.Event) -> None:
    repository, _, tag = reference.rpartition(":") if ":" in reference.split("/")[-1] \
        else (reference, "", "latest")
    show = sys.stderr.isatty()
    for event in client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
        if cancelled.is_set():
            raise TimeoutError
        if "error" in event:
            raise LaunchFailed(f"pulling {reference} failed: {event['error']}")
        if show and event.get("status"):
            detail = event.get("progress") or ""
            sys.stderr.write(f"\r\x1b[Kpulling {reference}: {event['status']} {detail}")
    if show:
        sys.stderr.write("\r\x1b[K")


async def ensure_image(client: DockerClient, reference: str, policy: str,
                       timeout: float) -> None:
    """Apply the pull policy: ``never`` (fail if absent), ``missing`` or ``always``.
    A pull has its own time budget, separate from the kernel's ready timeout."""
    from docker.errors import APIError

    present = await asyncio.to_thread(_present, client, reference)
    if policy == "never" or (policy == "missing" and present):
        if not present:
            raise LaunchFailed(f"image {reference!r} is not present on the Docker engine"
                               f" (pull policy 'never'): `docker pull {reference}`, or set"
                               " pull = 'missing' in [providers.docker]")
        return
    cancelled = threading.Event()
    try:
        await asyncio.wait_for(asyncio.to_thread(_pull, client, reference, cancelled), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        cancelled.set()
        raise LaunchFailed(f"pulling {reference} took longer than {timeout:g} s; raise"
                           " pull_timeout in [providers.docker] or pull it beforehand") from None
    except APIError as exc:
        if present and policy == "always":
            return  # offline: the local copy will do
        raise LaunchFailed(f"pulling {reference} failed: {exc.explanation or exc}") from None
