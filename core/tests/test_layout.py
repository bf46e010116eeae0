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


REPO = Path(__file__).resolve().parents[2]
PROVIDER_SOURCES = [*sorted((REPO / "providers").glob("*/src")),
                    REPO / "docs" / "example-provider" / "src"]


def _core_imports(path: Path) -> list[str]:
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        found += [m for m in modules if m.split(".")[0] == "kernel_providers"]
    return found


def test_providers_import_only_the_declared_toolkit() -> None:
    from kernel_providers import sdk

    offenders = []
    assert len(PROVIDER_SOURCES) >= 5, PROVIDER_SOURCES
    for source in PROVIDER_SOURCES:
        files = sorted(source.rglob("*.py"))
        assert files, f"no sources under {source}"
        for path in files:
            for module in _core_imports(path):
                # test helpers shipped for a provider's users may build on the core's
                helper = path.name == "testing.py" and module.startswith("kernel_providers.testing")
                if module == "kernel_providers.sdk" or helper:
                    continue
                offenders.append(f"{path.relative_to(REPO)}: {module}")
    assert offenders == [], "providers must import the core only through kernel_providers.sdk"
    for name in sdk.__all__:  # every name resolves, and is documented where it is code
        obj = getattr(sdk, name)
        if (isinstance(obj, type) or callable(obj)) and name != "InterruptMode":  # a Literal
            assert (obj.__doc__ or "").strip(), f"kernel_providers.sdk.{name} has no docstring"
