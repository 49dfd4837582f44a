"""What must never leak, in every form it could leak in, and where to look for it.

:class:`Secrets` holds fragments of the secrets (each line of the private key's PEM forms,
chunks of its DER and of its numbers in hex and decimal, chunks of the PKCS#12 file, the
password, the sign key) and finds them in any text, with and without whitespace (so that a key
re-wrapped at another width is still found): any run of key text longer than two fragments
is caught. Failures name the secret, never show it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from picklefield.fields import dbsafe_decode

__all__ = ["Secrets", "database_text", "load_merchant_key"]

_CHUNK = 32
_MIN_FRAGMENT = 16
_WHITESPACE = re.compile(r"\s+")
#: How a pickle (protocol 2 and later) starts once base64-encoded, as django-q2 stores them.
_PICKLE_BASE64 = "gA"


def load_merchant_key(path: str, password: str) -> rsa.RSAPrivateKey:
    key, _cert, _more = pkcs12.load_key_and_certificates(
        Path(path).read_bytes(), password.encode("utf-8")
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _chunks(text: str, size: int = _CHUNK) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)]


def _hex_chunks(text: str) -> list[str]:
    """Chunks of hex in lower and upper case."""
    return [variant for chunk in _chunks(text) for variant in (chunk, chunk.upper())]


class Secrets:
    """Fragments of secrets, each with a label saying which secret it belongs to."""

    def __init__(self) -> None:
        self._fragments: dict[str, str] = {}

    def add(self, label: str, *values: str) -> Secrets:
        """Whole secrets (a password, a sign key), found in any letter case."""
        for value in values:
            for variant in (value, value.lower(), value.upper()):
                self._fragments.setdefault(variant, label)
        return self

    def add_private_key(self, label: str, key: rsa.RSAPrivateKey) -> Secrets:
        """Every form the key could be written in: PEM (PKCS#8, PKCS#1), DER in base64 and hex,
        and its private numbers in hex and decimal."""
        for private_format in (
            serialization.PrivateFormat.PKCS8,
            serialization.PrivateFormat.TraditionalOpenSSL,
        ):
            pem = key.private_bytes(
                serialization.Encoding.PEM, private_format, serialization.NoEncryption()
            ).decode("ascii")
            lines = [line for line in pem.splitlines() if not line.startswith("-----")]
            self._add_exact(f"{label} (PEM)", lines)
            der = key.private_bytes(
                serialization.Encoding.DER, private_format, serialization.NoEncryption()
            )
            self._add_exact(f"{label} (base64 DER)", _chunks(base64.b64encode(der).decode()))
            self._add_exact(f"{label} (hex DER)", _hex_chunks(der.hex()))
        numbers = key.private_numbers()
        for name in ("d", "p", "q", "dmp1", "dmq1", "iqmp"):
            value = getattr(numbers, name)
            self._add_exact(f"{label} ({name} in hex)", _hex_chunks(f"{value:x}"))
            self._add_exact(f"{label} ({name} in decimal)", _chunks(str(value)))
        return self

    def add_file(self, label: str, path: str) -> Secrets:
        """A key file as it is on disk, in base64 and in hex."""
        data = Path(path).read_bytes()
        self._add_exact(f"{label} (base64)", _chunks(base64.b64encode(data).decode()))
        self._add_exact(f"{label} (hex)", _hex_chunks(data.hex()))
        return self

    def _add_exact(self, label: str, values: Iterable[str]) -> None:
        """Fragments long enough never to turn up by chance (the short tail of a key is not)."""
        for value in values:
            if len(value) >= _MIN_FRAGMENT:
                self._fragments.setdefault(value, label)

    def found_in(self, text: str) -> list[str]:
        """The labels of the secrets ``text`` holds (sorted, each once)."""
        compact = _WHITESPACE.sub("", text)
        return sorted(
            {label for fragment, label in self._fragments.items() if fragment in text}
            | {label for fragment, label in self._fragments.items() if fragment in compact}
        )

    def leaks(self, sources: dict[str, str]) -> dict[str, list[str]]:
        """``{source: [secret labels]}`` for every source that holds a secret."""
        found = {name: self.found_in(text) for name, text in sources.items()}
        return {name: labels for name, labels in found.items() if labels}


def _text(value: Any, table: str) -> str:
    """A column value as text; encoded values (django-q2's pickled task arguments and results,
    session data) decoded as well, so that nothing hides in an encoding."""
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return value.hex() + " " + value.decode("latin-1")
    text = str(value)
    if isinstance(value, str) and value.startswith(_PICKLE_BASE64):
        try:
            text += f" {dbsafe_decode(value)!r}"
        except Exception:  # base64 text that is not a pickle after all
            pass
    if isinstance(value, str) and table == "django_session" and ":" in value:
        text += f" {SessionStore().decode(value)!r}"
    return text


def database_text() -> dict[str, str]:
    """Every row of every table of the test database, as text, by table."""
    tables: dict[str, str] = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            tables[table] = "\n".join(
                " | ".join(_text(value, table) for value in row) for row in cursor.fetchall()
            )
    return tables
