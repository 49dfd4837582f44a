"""The gateway's own rules for the values a merchant gives: one place, used by the client and by
the Django settings checks alike.

Each ``check_*`` function returns the value when it is acceptable and raises the error the
caller's layer expects otherwise: :class:`~hsq_refunds.gateway.errors.ConfigurationError` for
settings (merchant number, gateway URL), :class:`~hsq_refunds.gateway.errors.InvalidRequestError`
(also a ``ValueError``) for what a request would carry (order numbers, amounts, texts).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from urllib.parse import urlsplit

from .errors import ConfigurationError, InvalidRequestError

__all__ = [
    "ENVIRONMENTS",
    "MAX_AMOUNT_FEN",
    "MERCHANT_NO_MAX_LENGTH",
    "RETRY_AFTER_CAP",
    "TRANS_NO_MAX_LENGTH",
    "check_base_url",
    "check_merchant_no",
    "check_text",
    "check_trans_no",
    "has_forbidden_characters",
    "query_deadline",
    "resolve_base_url",
]

#: The gateway's base URL per environment name.
ENVIRONMENTS: Mapping[str, str] = {
    "production": "https://api.huishouqian.com/api/acquiring",
    "test": "https://test-api.huishouqian.com/api/acquiring",
    "pre": "https://api-pre.huishouqian.com/api/acquiring",
}

#: HSQ's merchant numbers are at most this long.
MERCHANT_NO_MAX_LENGTH = 16
#: A merchant order number (``transNo``, ``origTransNo``) is 1 to this many characters.
TRANS_NO_MAX_LENGTH = 64
#: The largest amount, in fen, that any answer or request may carry (10^14 yuan): far above any
#: real payment, far below what a 64-bit column holds.
MAX_AMOUNT_FEN = 10**16
#: The longest ``Retry-After`` the client honours between retries, in seconds.
RETRY_AFTER_CAP = 30.0

#: Characters that cannot be part of a value sent to the gateway: control characters, and lone
#: surrogates, which have no UTF-8 form to sign.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs"})


def has_forbidden_characters(text: str) -> bool:
    """Whether ``text`` holds control characters or lone surrogates."""
    return any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in text)


def check_merchant_no(value: object) -> str:
    """A merchant number as HSQ issues them: 1 to 16 printable characters, no spaces around."""
    if not isinstance(value, str) or not 1 <= len(value) <= MERCHANT_NO_MAX_LENGTH:
        raise ConfigurationError(
            f"merchant_no: HSQ's merchantNo is 1 to {MERCHANT_NO_MAX_LENGTH} characters"
        )
    if value != value.strip() or not value.isprintable():
        raise ConfigurationError("merchant_no: contains spaces or unprintable characters")
    return value


def check_base_url(value: object) -> str:
    """An explicit gateway URL: http(s), a host, no credentials, no whitespace anywhere."""
    if not isinstance(value, str):
        raise ConfigurationError("base_url: must be an http(s) URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigurationError("base_url: is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"base_url: {value!r} is not an http(s) URL with a host")
    if parts.username or parts.password or any(char.isspace() for char in value):
        raise ConfigurationError("base_url: must hold no credentials or whitespace")
    return value


def resolve_base_url(base_url: str | None, environment: str) -> str:
    """The URL requests go to: ``base_url`` when given, else the environment's."""
    if environment not in ENVIRONMENTS:
        raise ConfigurationError(
            f"environment: unknown environment {environment!r}; "
            f"use one of {', '.join(sorted(ENVIRONMENTS))}"
        )
    if base_url is None:
        return ENVIRONMENTS[environment]
    return check_base_url(base_url)


def check_trans_no(value: object, name: str = "transNo") -> str:
    """A merchant order number that can be sent: text, 1 to 64 characters, nothing unprintable.

    ``name`` is what the message calls it (``transNo``, ``origTransNo``, ``trans_no``...).
    """
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be text, got {type(value).__name__}")
    if not 1 <= len(value) <= TRANS_NO_MAX_LENGTH:
        raise InvalidRequestError(f"{name} must be 1 to {TRANS_NO_MAX_LENGTH} characters")
    if has_forbidden_characters(value):
        raise InvalidRequestError(f"{name} contains control characters")
    return value


def check_text(value: object, name: str, *, max_length: int) -> str:
    """Free text for a request field: at most ``max_length`` characters, none unprintable."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be text, got {type(value).__name__}")
    if len(value) > max_length:
        raise InvalidRequestError(f"{name} must be at most {max_length} characters")
    if has_forbidden_characters(value):
        raise InvalidRequestError(f"{name} contains control characters")
    return value


def query_deadline(
    connect_timeout: float, read_timeout: float, retries: int, backoff_factor: float
) -> float:
    """The longest one call can take with these settings: every attempt's connect and read
    timeouts, and the waits between attempts (urllib3's backoff, or ``Retry-After`` up to
    :data:`RETRY_AFTER_CAP`, whichever is longer)."""
    attempts = retries + 1
    waits = sum(
        max(min(backoff_factor * 2**step, 120.0), RETRY_AFTER_CAP) for step in range(retries)
    )
    return (connect_timeout + read_timeout) * attempts + waits
