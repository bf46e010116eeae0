"""The one exception hierarchy of kernel-providers.

Every message says what failed, where, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "KernelDied",
    "KernelProviderError",
    "LaunchFailed",
    "NoSuchKernel",
    "ProviderUnavailable",
    "ReadyTimeout",
]


class KernelProviderError(Exception):
    """Base class of every error raised by kernel-providers and its providers."""


class ConfigError(KernelProviderError):
    """The configuration file is unreadable or holds an invalid value (the key is named)."""


class NoSuchKernel(KernelProviderError, LookupError):
    """No provider offers a kernel with this id."""

    def __init__(self, kernel_id: str, close_matches: list[str] | None = None,
                 detail: str = "") -> None:
        self.kernel_id = kernel_id
        self.close_matches = list(close_matches or [])
        message = f"no kernel with id {kernel_id!r}"
        if detail:
            message += f" ({detail})"
        if self.close_matches:
            message += "; did you mean " + ", ".join(repr(m) for m in self.close_matches) + "?"
        else:
            message += "; run `kernel-providers list` to see the available kernels"
        super().__init__(message)


class ProviderUnavailable(KernelProviderError):
    """A provider cannot work here (its engine or host is unreachable, a library is missing)."""


class LaunchFailed(KernelProviderError):
    """A kernel could not be started. ``output`` holds what it printed, if anything."""

    def __init__(self, message: str, output: str = "") -> None:
        self.output = output
        if output.strip():
            message = f"{message}\n--- kernel output (last lines) ---\n{_tail(output)}"
        super().__init__(message)


class KernelDied(LaunchFailed):
    """The kernel process ended while it was starting. ``status`` is its exit status."""

    def __init__(self, message: str, output: str = "", status: int | None = None) -> None:
        self.status = status
        super().__init__(message, output)


class ReadyTimeout(LaunchFailed):
    """The kernel did not answer ``kernel_info_request`` (and iopub) in time."""


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
