"""Showing text that came from the gateway on a terminal or in a log mail."""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    """Escape control characters (``\\x1b``, ``\\r``, ``\\n``...) so that a message from the
    gateway, which an unauthenticated answer can carry, cannot drive the terminal or forge
    lines of output."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)
