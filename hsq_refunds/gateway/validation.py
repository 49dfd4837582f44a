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
from datetime import datetime
from urllib.parse import urlsplit

from .errors import ConfigurationError, InvalidRequestError

__all__ = [
    "BACKOFF_MAX",
    "ENVIRONMENTS",
    "EXTEND_MAX_LENGTH",
    "MAX_AMOUNT_FEN",
    "MERCHANT_NO_MAX_LENGTH",
    "REFUND_REASON_MAX_LENGTH",
    "REFUND_TYPE_MAX",
    "RETRY_AFTER_CAP",
    "RETURN_URL_MAX_LENGTH",
    "TRANS_NO_MAX_LENGTH",
    "check_amount",
    "check_aware_datetime",
    "check_base_url",
    "check_merchant_no",
    "check_refund_type",
    "check_return_url",
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
#: urllib3's own cap on one backoff wait (``Retry.DEFAULT_BACKOFF_MAX``), in seconds.
BACKOFF_MAX = 120.0
#: ``refundReason`` of an application: free text of at most this many characters. The gateway's
#: limit is not public; public clients send a few words.
REFUND_REASON_MAX_LENGTH = 128
#: ``extend`` (the merchant's passthrough field, returned as given) is at most this long.
EXTEND_MAX_LENGTH = 256
#: ``returnUrl`` (where HSQ notifies the refund's outcome) is at most this long.
RETURN_URL_MAX_LENGTH = 256
#: ``refundType`` is a whole number 0 to this (a Java ``int`` on the gateway's side). Its meaning
#: is not public: public clients send 1 or 2.
REFUND_TYPE_MAX = 2**31 - 1

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


def _url_problem(value: str) -> str:
    """What is wrong with ``value`` as an http(s) URL to send requests or notifications to, or
    ``""``: it needs a scheme and a host, and may hold no credentials and no whitespace."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{value!r} is not an http(s) URL with a host"
    if parts.username or parts.password or any(char.isspace() for char in value):
        return "must hold no credentials or whitespace"
    return ""


def check_base_url(value: object) -> str:
    """An explicit gateway URL: http(s), a host, no credentials, no whitespace anywhere."""
    if not isinstance(value, str):
        raise ConfigurationError("base_url: must be an http(s) URL")
    problem = _url_problem(value)
    if problem:
        raise ConfigurationError(f"base_url: {problem}")
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


def check_amount(value: object, name: str) -> int:
    """An amount to send: a whole number of fen (an ``int``, not a ``bool``), 1 to
    :data:`MAX_AMOUNT_FEN`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be a whole number of fen (an int)")
    if not 1 <= value <= MAX_AMOUNT_FEN:
        raise InvalidRequestError(f"{name} must be 1 to {MAX_AMOUNT_FEN} fen, got {value}")
    return value


def check_refund_type(value: object, name: str = "refund_type") -> int:
    """``refundType``: an ``int`` (not a ``bool``) from 0 to :data:`REFUND_TYPE_MAX`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be an int")
    if not 0 <= value <= REFUND_TYPE_MAX:
        raise InvalidRequestError(f"{name} must be 0 to {REFUND_TYPE_MAX}, got {value}")
    return value


def check_return_url(value: object, name: str = "return_url") -> str:
    """Where HSQ is to notify: an http(s) URL with a host, no credentials or whitespace, at most
    :data:`RETURN_URL_MAX_LENGTH` characters."""
    url = check_text(value, name, max_length=RETURN_URL_MAX_LENGTH)
    problem = _url_problem(url)
    if problem:
        raise InvalidRequestError(f"{name} {problem}")
    return url


def check_aware_datetime(value: object, name: str) -> datetime:
    """A timezone-aware ``datetime`` (a naive one could be any time of day in Beijing)."""
    if not isinstance(value, datetime):
        raise InvalidRequestError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRequestError(f"{name} must be timezone-aware")
    return value


def _backoff(backoff_factor: float, retry: int) -> float:
    """urllib3's wait before retry number ``retry`` (1, 2, ...) after consecutive errors: none
    before the first retry, then ``backoff_factor * 2 ** (retry - 1)``, at most
    :data:`BACKOFF_MAX`."""
    if retry <= 1 or backoff_factor <= 0:
        return 0.0
    if retry - 1 >= 64:  # far past the cap; avoids an overflow for absurd retry counts
        return BACKOFF_MAX
    return min(backoff_factor * 2 ** (retry - 1), BACKOFF_MAX)


def query_deadline(
    connect_timeout: float, read_timeout: float, retries: int, backoff_factor: float
) -> float:
    """The longest one call to the gateway can take with these settings, when every socket
    read ends within its timeout; the client's default deadline for a whole call.

    Every attempt may use its whole connect and read timeouts, and before each retry there is
    urllib3's backoff or a ``Retry-After`` of up to :data:`RETRY_AFTER_CAP` (a 429, 503 or 413
    answer may carry one before any retry), whichever is longer. A gateway that answers a few
    bytes at a time could keep a call open far longer, one read timeout per byte: the
    deadline is what stops it.
    """
    attempts = retries + 1
    waits = sum(
        max(_backoff(backoff_factor, retry), RETRY_AFTER_CAP) for retry in range(1, retries + 1)
    )
    return (connect_timeout + read_timeout) * attempts + waits
