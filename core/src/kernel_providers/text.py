"""Text from the outside world (folder names, kernel.json values, provider messages)
made safe to print on one line."""

from __future__ import annotations

import unicodedata

__all__ = ["one_line"]

#: characters that break or spoof a line of output: controls (newline, escape ...),
#: format characters (right-to-left override ...), line separators, undecodable bytes
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def one_line(text: str) -> str:
    """``text`` with the characters that would break or spoof a line of output escaped
    as Python escapes them (a newline as ``\\n``)."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in _UNSAFE else c for c in text)
