"""Showing text that came from the gateway on a terminal or in a log mail."""

from __future__ import annotations

import unicodedata

__all__ = ["cleaned", "printable"]


def printable(text: str) -> str:
    """Escape control characters (``\\x1b``, ``\\r``, ``\\n``...) so that a message from the
    gateway, which an unauthenticated answer can carry, cannot drive the terminal or forge
    lines of output."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def cleaned(text: str, max_length: int | None = None) -> str:
    """``text`` fit to be stored as a field of the app's own: NUL and every other control
    character, and lone surrogates, replaced by U+FFFD, then cut to ``max_length``. For the
    fields a verified message from HSQ fills in (its signed original is kept verbatim apart)."""
    if text.isascii() and text.isprintable():
        out = text
    else:
        out = "".join(
            "\ufffd" if unicodedata.category(char) in ("Cc", "Cs") else char for char in text
        )
    return out if max_length is None else out[:max_length]
