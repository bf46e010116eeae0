"""The core stays minimal: it imports no provider, and its public API is typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kernel_providers


def test_core_imports_no_provider_or_provider_library() -> None:
    code = (
        "import sys, kernel_providers, kernel_providers.cli, kernel_providers.testing\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in"
        " {'docker', 'asyncssh', 'jupyter_client', 'ipykernel'}"
        " or m.startswith('kernel_providers_'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_public_api_is_documented_and_typed() -> None:
    package = Path(kernel_providers.__file__).parent
    assert (package / "py.typed").exists()
    for name in kernel_providers.__all__:
        obj = getattr(kernel_providers, name)
        if isinstance(obj, type) or callable(obj):
            assert (obj.__doc__ or "").strip(), f"kernel_providers.{name} has no docstring"
