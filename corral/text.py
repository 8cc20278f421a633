"""Making untrusted text safe to print on a terminal.

Anything that came over the broker (an image name, a reason, labels, node
ids, a routing key) was written by whoever could publish there. Printed raw, a
newline forges table rows and an ESC sequence drives the terminal (moves the
cursor, rewrites the screen, sets the window title). `visible` shows every such
character as a Python-style escape instead, so it is both harmless and seen.
"""

from __future__ import annotations

import unicodedata

# Control (Cc), format (Cf: bidi overrides, zero-width marks), line and paragraph
# separators (Zl, Zp), and lone surrogates (Cs), which cannot even be encoded to UTF-8.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def is_unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def visible(text: str, *, keep: str = "") -> str:
    """`text` with each unsafe character (see the module docstring) shown as an escape.

    `\\n`, `\\r`, `\\t`, `\\x1b`, `\\u202e`, `\\ud800`: what Python's repr would show.
    Characters in `keep` pass through (e.g. "\\n" for a multi-line error).
    Safe text comes back unchanged (the same object).
    """
    if text.isprintable() and text.isascii():
        return text  # the common case, decided at C speed
    if not any(is_unsafe(char) and char not in keep for char in text):
        return text
    return "".join(_escape(char) if is_unsafe(char) and char not in keep else char for char in text)
