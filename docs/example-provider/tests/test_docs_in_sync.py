"""The code shown in docs/write-a-provider.md is the provider module, character for
character (MkDocs without plugins cannot include files, so the page holds a copy)."""

from __future__ import annotations

import re
from pathlib import Path

import kernel_providers_example.provider as module

PAGE = Path(__file__).resolve().parents[2] / "write-a-provider.md"
START = "<!-- provider.py: start -->"
END = "<!-- provider.py: end -->"


def test_page_shows_the_provider_module() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert START in text and END in text, f"{PAGE} lacks the {START} ... {END} markers"
    between = text.split(START, 1)[1].split(END, 1)[0]
    block = re.fullmatch(r"\s*```python\n(.*?)```\s*", between, re.DOTALL)
    assert block, f"{PAGE}: expected one ```python block between the markers"
    source = Path(module.__file__ or "").read_text(encoding="utf-8")
    assert block.group(1) == source, (
        f"{PAGE} shows another version of {module.__file__}; copy the module into the page")


def test_provider_is_about_fifty_lines() -> None:
    """The docs promise a provider in about 50 lines of code."""
    lines = Path(module.__file__ or "").read_text(encoding="utf-8").splitlines()
    code = [line for line in lines
            if line.strip() and not line.strip().startswith(("#", '"""'))]
    assert len(code) <= 60, f"the example provider grew to {len(code)} lines of code"
