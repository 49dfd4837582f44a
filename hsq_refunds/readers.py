"""Readers of ``HSQ_REFUNDS`` values: each takes a value as given and returns it converted, or
raises :class:`Invalid` saying what is wrong with it (:mod:`hsq_refunds.conf` names the key)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from .check_ids import (
    E003_ENVIRONMENT,
    E007_SIGN_KEY,
    E008_PRIVATE_KEY_PASSWORD,
    E010_VALUE,
    E011_STEPS,
)
from .gateway import ConfigurationError
from .gateway.validation import ENVIRONMENTS, check_base_url

#: A reader takes the value as given and returns it converted, or raises :class:`Invalid`.
Reader = Callable[[Any], Any]


class Invalid(ValueError):
    """A value a reader refuses: what is wrong with it, the check id, a hint."""

    def __init__(self, message: str, check_id: str = E010_VALUE, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.check_id = check_id
        self.hint = hint


def show(value: object) -> str:
    """A value in a message: only numbers and short names, never what could be a secret."""
    if value is None or isinstance(value, bool | int | float | timedelta):
        return repr(value)
    return f"a {type(value).__name__}"


def _as_seconds(value: object) -> float | None:
    """A duration given as a number of seconds or a ``timedelta``; ``None`` if neither."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def reader(what: str, convert: Callable[[Any], Any], *, optional: bool = False) -> Reader:
    """A reader from ``convert`` (the converted value, or ``None`` to refuse it)."""
    expected = f"None or {what}" if optional else what

    def read(value: Any) -> Any:
        if value is None and optional:
            return None
        converted = None if value is None else convert(value)
        if converted is None:
            verb = "must be set to" if value is None else "must be"
            raise Invalid(f"{verb} {expected}, not {show(value)}")
        return converted

    return read


def seconds(*, zero: bool = False, optional: bool = False) -> Reader:
    """Seconds, as a number or a ``timedelta``: positive, or ``>= 0`` with ``zero``."""

    def convert(value: object) -> float | None:
        seconds = _as_seconds(value)
        if seconds is None or seconds < 0 or (seconds == 0 and not zero):
            return None
        return seconds

    what = "a number of seconds >= 0" if zero else "a positive number of seconds"
    return reader(f"{what} or a timedelta", convert, optional=optional)


def integer(minimum: int = 1, *, optional: bool = False, unit: str = "an integer") -> Reader:
    def convert(value: object) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        return None

    return reader(f"{unit} >= {minimum}", convert, optional=optional)


def number(what: str, high: float = math.inf, *, optional: bool = False) -> Reader:
    """A plain number (not a ``timedelta``) above 0 and at most ``high``."""

    def convert(value: object) -> float | None:
        number = None if isinstance(value, timedelta) else _as_seconds(value)
        return number if number is not None and 0 < number <= high else None

    return reader(what, convert, optional=optional)


flag = reader("True or False", lambda value: value if isinstance(value, bool) else None)


def environment(value: object) -> str:
    if isinstance(value, str) and value in ENVIRONMENTS:
        return value
    raise Invalid(
        f"unknown environment {value!r}" if isinstance(value, str) else "must be a string",
        E003_ENVIRONMENT,
        hint=f"Use one of {', '.join(sorted(ENVIRONMENTS))}, or set BASE_URL.",
    )


def url(check_id: str, example: str) -> Reader:
    """``None``, or an http(s) URL by the gateway's own rule
    (:func:`~hsq_refunds.gateway.validation.check_base_url`)."""

    def read(value: object) -> str | None:
        if value is None:
            return None
        try:
            return check_base_url(value)
        except ConfigurationError as exc:
            reason = exc.message.removeprefix("base_url: ")
            if isinstance(value, str):
                reason = reason.replace(repr(value), "it")  # the URL could hold a password
                if value != value.strip():
                    reason += " (this one has spaces or line breaks at its start or end)"
            raise Invalid(reason, check_id, f"For example {example}.") from None

    return read


def intervals(value: object) -> tuple[tuple[float, float], ...]:
    pairs: list[tuple[float, float]] = []
    if isinstance(value, list | tuple) and value:
        for item in value:
            if not (isinstance(item, list | tuple) and len(item) == 2):
                break
            age, interval = _as_seconds(item[0]), _as_seconds(item[1])
            if age is None or interval is None or age <= 0 or interval <= 0:
                break
            if pairs and age <= pairs[-1][0]:
                break
            pairs.append((age, interval))
        else:
            return tuple(pairs)
    raise Invalid(
        "must be a non-empty list of (age, interval) pairs of positive seconds, ages ascending",
        E011_STEPS,
        hint="For example [(600, 60), (3600, 300), (86400, 1800)].",
    )


def backoff(value: object) -> tuple[float, ...]:
    if isinstance(value, list | tuple) and value:
        steps = [_as_seconds(step) for step in value]
        if all(step is not None and step > 0 for step in steps):
            return tuple(steps)  # type: ignore[arg-type]
    raise Invalid(
        "must be a non-empty list of positive seconds",
        E011_STEPS,
        hint="For example [60, 300, 1800, 3600].",
    )


_PREFIX = re.compile(r"[A-Za-z0-9]{1,16}")


def trans_no_prefix(value: object) -> str:
    if isinstance(value, str) and _PREFIX.fullmatch(value):
        return value
    raise Invalid(f"must be 1 to 16 ASCII letters or digits, not {show(value)}")


def cache_alias(value: object) -> str:
    if isinstance(value, str) and value:
        return value
    raise Invalid(f"must be the alias of a cache in CACHES, not {show(value)}")


def mapping(value: object) -> Mapping[str, Any]:
    """A read-only copy of a dict."""
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    raise Invalid(f"must be a dict, not {show(value)}")


def anything(value: object) -> object:
    return value


def sign_key(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string", E007_SIGN_KEY)
    if value != value.strip():
        raise Invalid("has leading or trailing whitespace", E007_SIGN_KEY)
    return value


def password(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Invalid("must be a string", E008_PRIVATE_KEY_PASSWORD)
    return value or None
