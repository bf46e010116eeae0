"""docs/write-a-provider.md shows the example provider's code exactly."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = HERE.parents[1] / "write-a-provider.md"
MODULE = HERE.parent / "src" / "kernel_providers_example" / "__init__.py"


def test_page_shows_the_package_code() -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)
    assert blocks[0] == MODULE.read_text()


def test_provider_is_about_fifty_lines() -> None:
    code = [line for line in MODULE.read_text().splitlines()
            if line.strip() and not line.strip().startswith(("#", '"""'))]
    assert len(code) <= 60
