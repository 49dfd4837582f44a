"""The ``HSQ_REFUNDS`` setting: read lazily, filled with defaults, one client per merchant.

Everything the app needs to know lives in one dict in the project's settings::

    HSQ_REFUNDS = {
        "ENVIRONMENT": "production",          # or "test", "pre"; or give "BASE_URL"
        "MERCHANTS": {
            "814000473149": {
                "SIGN_KEY": os.environ["HSQ_SIGN_KEY"],
                "PRIVATE_KEY": "/etc/hsq/814000473149_pri.pfx",   # path, PEM or base64 text
                "PRIVATE_KEY_PASSWORD": os.environ["HSQ_KEY_PASSWORD"],
                "PLATFORM_CERT": "/etc/hsq/MANDAO_814000473149_pub.cer",
            },
        },
        "CONCURRENCY": 8,                     # any other key may be left out
    }

Each key is declared once, as a field of :class:`HsqRefundsSettings` (the keys of
``HSQ_REFUNDS``) or of :class:`MerchantSettings` (the keys of one ``MERCHANTS`` entry), with its
default, the reader that validates and converts it, and its documentation. :data:`DEFAULTS`,
:data:`MERCHANT_KEYS`, the parsed setting and the README's settings reference are all made from
those fields. Print the reference with ``python -m hsq_refunds.conf`` (or
:func:`settings_reference_markdown`).

The setting is read on first use and again after it changes (``override_settings`` works), and
every mistake in it is reported by ``manage.py check``, with the ids of :mod:`hsq_refunds.checks`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from .checks import (
    CHECK_IDS,
    E001_NOT_A_DICT,
    E003_ENVIRONMENT,
    E004_BASE_URL,
    E005_MERCHANTS,
    E006_MERCHANT_KEY_MISSING,
    E007_SIGN_KEY,
    E008_PRIVATE_KEY_PASSWORD,
    E010_VALUE,
    E011_STEPS,
    W001_UNKNOWN_KEY,
    W002_NO_MERCHANTS,
    W005_CLAIM_LEASE,
)
from .gateway import ConfigurationError, HsqClient
from .gateway.validation import (
    ENVIRONMENTS,
    MERCHANT_NO_MAX_LENGTH,
    check_base_url,
    check_merchant_no,
    query_deadline,
)
from .ratelimit import SharedRateLimiter

__all__ = [
    "DEFAULTS",
    "MERCHANT_KEYS",
    "QUERY_SECONDS_ESTIMATE",
    "HsqRefundsSettings",
    "MerchantSettings",
    "Problem",
    "Setting",
    "default_merchant_no",
    "get_client",
    "get_settings",
    "inspect_settings",
    "merchant_numbers",
    "merchant_settings_table",
    "setting_path",
    "settings_reference_markdown",
    "settings_table",
]


def setting_path(*keys: str) -> str:
    """``HSQ_REFUNDS["MERCHANTS"]["814..."]["SIGN_KEY"]``: how messages name a setting."""
    return "HSQ_REFUNDS" + "".join(f'["{key}"]' for key in keys)


@dataclass(frozen=True)
class Problem:
    """One mistake found in ``HSQ_REFUNDS``; the system checks turn these into messages."""

    level: str  # "error" or "warning"
    id: str  # a check id of hsq_refunds.checks, e.g. E003_ENVIRONMENT
    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# --------------------------------------------------------------------------- readers


class _Invalid(ValueError):
    """A value a reader refuses: what is wrong (the caller names the key), the id, a hint."""

    def __init__(self, message: str, check_id: str = E010_VALUE, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.check_id = check_id
        self.hint = hint


#: A reader takes the value as given and returns it converted, or raises ``_Invalid``.
Reader = Callable[[Any], Any]


def _show(value: object) -> str:
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


def _reader(what: str, convert: Callable[[Any], Any], *, optional: bool = False) -> Reader:
    """A reader from ``convert`` (the converted value, or ``None`` to refuse it)."""
    expected = f"None or {what}" if optional else what

    def read(value: Any) -> Any:
        if value is None and optional:
            return None
        converted = convert(value)
        if converted is None:
            raise _Invalid(f"must be {expected}, not {_show(value)}")
        return converted

    return read


def _seconds(*, zero: bool = False, optional: bool = False) -> Reader:
    """Seconds, as a number or a ``timedelta``: positive, or ``>= 0`` with ``zero``."""

    def convert(value: object) -> float | None:
        seconds = _as_seconds(value)
        if seconds is None or seconds < 0 or (seconds == 0 and not zero):
            return None
        return seconds

    what = "a number of seconds >= 0" if zero else "a positive number of seconds"
    return _reader(f"{what} or a timedelta", convert, optional=optional)


def _integer(minimum: int = 1, *, optional: bool = False, unit: str = "an integer") -> Reader:
    def convert(value: object) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        return None

    return _reader(f"{unit} >= {minimum}", convert, optional=optional)


def _rate(value: object) -> float | None:
    number = None if isinstance(value, timedelta) else _as_seconds(value)
    return number if number is not None and number > 0 else None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _environment(value: object) -> str:
    if isinstance(value, str) and value in ENVIRONMENTS:
        return value
    raise _Invalid(
        f"unknown environment {value!r}" if isinstance(value, str) else "must be a string",
        E003_ENVIRONMENT,
        hint=f"Use one of {', '.join(sorted(ENVIRONMENTS))}, or set BASE_URL.",
    )


def _url(value: object, check_id: str, hint: str) -> str:
    """An http(s) URL by the gateway's own rule (:func:`~.gateway.validation.check_base_url`)."""
    try:
        return check_base_url(value)
    except ConfigurationError as exc:
        reason = exc.message.removeprefix("base_url: ")
        if isinstance(value, str):
            reason = reason.replace(repr(value), "it")  # the URL could hold a password
            if value != value.strip():
                reason += " (this one has spaces or line breaks at its start or end)"
        raise _Invalid(reason, check_id, hint) from None


def _base_url(value: object) -> str | None:
    if value is None:
        return None
    return _url(value, E004_BASE_URL, 'For example "https://api.huishouqian.com/api/acquiring".')


def _notify_url(value: object) -> str | None:
    if value is None:
        return None
    return _url(value, E010_VALUE, 'For example "https://shop.example.com/hsq/refund-notify/".')


def _intervals(value: object) -> tuple[tuple[float, float], ...]:
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
    raise _Invalid(
        "must be a non-empty list of (age, interval) pairs of positive seconds, ages ascending",
        E011_STEPS,
        hint="For example [(600, 60), (3600, 300), (86400, 1800)].",
    )


def _backoff(value: object) -> tuple[float, ...]:
    if isinstance(value, list | tuple) and value:
        steps = [_as_seconds(step) for step in value]
        if all(step is not None and step > 0 for step in steps):
            return tuple(steps)  # type: ignore[arg-type]
    raise _Invalid(
        "must be a non-empty list of positive seconds",
        E011_STEPS,
        hint="For example [60, 300, 1800, 3600].",
    )


_PREFIX = re.compile(r"[A-Za-z0-9]{1,16}")


def _trans_no_prefix(value: object) -> str:
    if isinstance(value, str) and _PREFIX.fullmatch(value):
        return value
    raise _Invalid(f"must be 1 to 16 ASCII letters or digits, not {_show(value)}")


def _cache_alias(value: object) -> str:
    if isinstance(value, str) and value:
        return value
    raise _Invalid(f"must be the alias of a cache in CACHES, not {_show(value)}")


def _read_only_dict(value: object) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    raise _Invalid(f"must be a dict, not {_show(value)}")


def _any(value: object) -> object:
    return value


def _sign_key(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid("must be a string", E007_SIGN_KEY)
    if value != value.strip():
        raise _Invalid("has leading or trailing whitespace", E007_SIGN_KEY)
    return value


def _password(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _Invalid("must be a string", E008_PRIVATE_KEY_PASSWORD)
    return value or None


# --------------------------------------------------------------------------- the key table


@dataclass(frozen=True)
class Setting:
    """One key: its default, its reader, its documentation (English, for the reference)."""

    key: str
    default: Any
    read: Reader
    doc: str
    #: How the reference shows the default, when the value itself does not say it well.
    shown_default: str | None = None
    #: For a default of ``None`` that means "computed": the value, from the other keys.
    compute: Callable[[Mapping[str, Any]], Any] | None = None
    #: Merchant keys: whether it must be given.
    required: bool = False
    #: Merchant keys: whether a missing key takes the global key of the same name.
    inherits: bool = False


def _key(default: Any, read: Reader, doc: str, **options: Any) -> Any:
    """A field of :class:`HsqRefundsSettings`: one key of ``HSQ_REFUNDS``."""
    return dataclasses.field(metadata={"setting": (default, read, doc, options)})


def _merchant_key(read: Reader, doc: str, *, secret: bool = False, **options: Any) -> Any:
    """A field of :class:`MerchantSettings`: one key of a ``MERCHANTS`` entry, the field's name
    in capitals."""
    return dataclasses.field(repr=not secret, metadata={"setting": (None, read, doc, options)})


def _settings_of(cls: type) -> Mapping[str, Setting]:
    """The :class:`Setting` of each field of ``cls`` that is a key, by the key's name."""
    table: dict[str, Setting] = {}
    for item in dataclasses.fields(cls):
        if "setting" in item.metadata:
            default, read, doc, options = item.metadata["setting"]
            key = item.name.upper()
            table[key] = Setting(key=key, default=default, read=read, doc=doc, **options)
    return MappingProxyType(table)


def _query_deadline(values: Mapping[str, Any]) -> float:
    return query_deadline(
        values["CONNECT_TIMEOUT"],
        values["READ_TIMEOUT"],
        values["RETRIES"],
        values["BACKOFF_FACTOR"],
    )


#: The time one query is assumed to take when ``CYCLE_LIMIT`` is computed: a quick answer from
#: HSQ, so that the computed limit rather queues too much than holds workers back.
QUERY_SECONDS_ESTIMATE = 0.1


def _cycle_limit(values: Mapping[str, Any]) -> int:
    per_second = values["CONCURRENCY"] / QUERY_SECONDS_ESTIMATE
    if values["RATE_LIMIT"] is not None:
        per_second = min(per_second, values["RATE_LIMIT"])
    return max(values["TASK_BATCH_SIZE"], math.floor(values["SCHEDULE_MINUTES"] * 60 * per_second))


@dataclass(frozen=True, kw_only=True)
class MerchantSettings:
    """One merchant's credentials and gateway address; ``repr`` shows no secret.

    The fields below (all but ``merchant_no``) are the keys of one ``MERCHANTS`` entry.
    """

    merchant_no: str
    sign_key: str = _merchant_key(
        _sign_key,
        "The 32-hex-character sign key HSQ issued with the certificates (签名混淆KEY). It is "
        "appended to what is signed, never sent.",
        required=True,
        secret=True,
    )
    private_key: Any = _merchant_key(  # noqa: RUF009 - a dataclasses.field
        _any,
        "Your private key: a path to `<merchantNo>_pri.pfx` or a PEM file, or the PEM / base64 "
        "DER text itself (e.g. from an environment variable).",
        required=True,
        secret=True,
    )
    private_key_password: str | None = _merchant_key(
        _password,
        "The password of the PKCS#12 file or of an encrypted PEM.",
        secret=True,
    )
    platform_cert: Any = _merchant_key(  # noqa: RUF009 - a dataclasses.field
        _any,
        "HSQ's platform certificate `MANDAO_<merchantNo>_pub.cer` (a path, PEM or base64 text; "
        "a bare public key is accepted too), which verifies every answer.",
        required=True,
        secret=True,
    )
    environment: str = _merchant_key(
        _environment, "Overrides the global `ENVIRONMENT` for this merchant.", inherits=True
    )
    base_url: str | None = _merchant_key(
        _base_url, "Overrides the global `BASE_URL` for this merchant.", inherits=True
    )


@dataclass(frozen=True, kw_only=True)
class HsqRefundsSettings:
    """``HSQ_REFUNDS`` with every key filled in; durations in seconds (floats).

    Each field is one key, in the order of the reference.
    """

    # -- the gateway
    ENVIRONMENT: str = _key(
        "production",
        _environment,
        "`production`, `test` or `pre`: HSQ's three gateways.",
    )
    BASE_URL: str | None = _key(
        None,
        _base_url,
        "An explicit gateway URL (e.g. the local sandbox); it wins over `ENVIRONMENT`.",
    )
    MERCHANTS: Mapping[str, MerchantSettings] = _key(
        MappingProxyType({}),
        _any,
        "HSQ merchant number -> that merchant's keys (below). A refund's merchant number selects "
        "its credentials; with one merchant, it is the default.",
    )
    CONNECT_TIMEOUT: float = _key(
        5.0, _seconds(), "Seconds to connect to the gateway, per HTTP request."
    )
    READ_TIMEOUT: float = _key(
        15.0, _seconds(), "Seconds to wait for each read of the gateway's answer."
    )
    RETRIES: int = _key(
        2,
        _integer(0),
        "Retries of connection errors, timeouts and 5xx answers only (urllib3 `Retry`); business "
        "errors are never retried.",
    )
    BACKOFF_FACTOR: float = _key(
        0.5, _seconds(zero=True), "urllib3's exponential backoff between those retries."
    )
    QUERY_DEADLINE: float = _key(
        None,
        _seconds(optional=True),
        "Seconds one query may take in all (connect, reads, retries). `None`: the longest the "
        "timeouts and retries allow, by `gateway.validation.query_deadline()` (120 with the "
        "defaults).",
        compute=_query_deadline,
    )
    RATE_LIMIT: float | None = _key(
        None,
        _reader("a positive number of queries per second", _rate, optional=True),
        "At most this many queries per second per merchant, across every process (counted in "
        "`RATE_LIMIT_CACHE`). `None`: no limit.",
    )
    RATE_LIMIT_CACHE: str = _key(
        "default",
        _cache_alias,
        "The alias in `CACHES` where processes share the `RATE_LIMIT` count; it must be a cache "
        "every process reaches (not `LocMemCache` or `DummyCache`).",
    )
    # -- the sync
    CONCURRENCY: int = _key(8, _integer(1), "Queries in flight at once during a sync.")
    CHUNK_SIZE: int = _key(100, _integer(1), "Refunds selected per database round trip.")
    CLAIM_LEASE: float = _key(
        300.0,
        _seconds(),
        "Seconds a sync holds the refunds it claimed; a run killed half-way blocks nothing longer. "
        "At least twice `QUERY_DEADLINE`.",
    )
    FIRST_QUERY_DELAY: float = _key(
        60.0,
        _seconds(zero=True),
        "The first query, this long after the refund was applied for (HSQ: about a minute).",
    )
    NOTIFY_FIRST_QUERY_DELAY: float = _key(
        300.0,
        _seconds(zero=True),
        "The first query of a refund applied for with a `returnUrl` (`NOTIFY_URL`): HSQ's "
        "notification is awaited this long first.",
    )
    QUERY_INTERVALS: tuple[tuple[float, float], ...] = _key(
        (
            (600.0, 60.0),
            (3600.0, 300.0),
            (86400.0, 1800.0),
            (345600.0, 3600.0),
            (1209600.0, 10800.0),
        ),
        _intervals,
        "`[(age, interval), …]`: while a refund is younger than `age` it is asked again every "
        "`interval`; past the last age, at the last interval.",
    )
    NOT_FOUND_GRACE: float = _key(
        1800.0,
        _seconds(zero=True),
        '"Order does not exist" (200004/200009) is normal this long after applying; later the '
        "refund is flagged.",
    )
    MAX_AGE: float = _key(
        1209600.0,
        _seconds(),
        "Stop asking about an unfinished refund this long after applying, and flag it.",
        shown_default="`1209600` (14 days)",
    )
    ERROR_BACKOFF: tuple[float, ...] = _key(
        (60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
        _backoff,
        "Waits after 1, 2, 3… consecutive failed queries (the last one repeats), never shorter "
        "than the normal interval; a signed gateway error starts two steps further along.",
    )
    ATTENTION_AFTER_ERRORS: int = _key(
        5,
        _integer(1),
        "After this many consecutive failed queries a refund is flagged for a person.",
    )
    QUERY_LOG_RETENTION_DAYS: int | None = _key(
        90,
        _integer(1, optional=True, unit="a whole number of days"),
        "`manage.py prune_refund_queries` deletes `RefundQuery` rows older than this many days "
        "(`None`: keep them).",
    )
    # -- django-q2
    TASK_BATCH_SIZE: int = _key(
        100, _integer(1), "Refunds per django-q2 task when a sync fans out."
    )
    SCHEDULE_MINUTES: int = _key(1, _integer(1), "Minutes between scheduled django-q2 syncs.")
    CYCLE_LIMIT: int = _key(
        None,
        _integer(1, optional=True),
        "The most refunds one scheduled cycle queues. `None`: what the cycle can work through "
        "before the next, `max(TASK_BATCH_SIZE, SCHEDULE_MINUTES × 60 × min(RATE_LIMIT, "
        "CONCURRENCY / 0.1 s))` (4800 with the defaults).",
        compute=_cycle_limit,
    )
    # -- applying for refunds, and HSQ's notifications
    REFUND_TYPE: int = _key(
        2,
        _integer(0),
        "The `refundType` sent with each application; HSQ does not publish its meaning.",
    )
    TRANS_NO_PREFIX: str = _key(
        "RF",
        _trans_no_prefix,
        "The start of the transNos the app generates for new refunds: 1 to 16 ASCII letters or "
        "digits.",
    )
    NOTIFY_URL: str | None = _key(
        None,
        _notify_url,
        "The http(s) URL HSQ notifies when a refund finishes, sent as `returnUrl`; it must lead "
        "to the view `hsq_refunds:refund_notify`. `None`: no notifications, polling only.",
    )
    TRACK_UNKNOWN_NOTIFICATIONS: bool = _key(
        True,
        _reader("True or False", _flag),
        "Whether a verified notification about a refund the app does not track starts tracking it.",
    )
    # -- the admin, and health
    ADMIN_SYNC_LIMIT: int = _key(
        20, _integer(1), "The admin refreshes at most this many refunds inside a request."
    )
    ALLOW_ADMIN_DELETE: bool = _key(
        False,
        _reader("True or False", _flag),
        "Whether the admin may delete refunds (its audit trail goes with them).",
    )
    HEALTH: Mapping[str, Any] = _key(
        MappingProxyType({}),
        _read_only_dict,
        "Thresholds of the health checks (`manage.py hsq_refunds_health`), checked by "
        "`hsq_refunds.health`.",
    )


#: Every key of ``HSQ_REFUNDS``, in the order of the reference.
_SETTINGS = _settings_of(HsqRefundsSettings)
#: Every key of a ``MERCHANTS`` entry.
_MERCHANT_SETTINGS = _settings_of(MerchantSettings)

#: The defaults of every optional key (every key but ``MERCHANTS``).
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {key: setting.default for key, setting in _SETTINGS.items() if key != "MERCHANTS"}
)
#: The keys of one ``MERCHANTS`` entry.
MERCHANT_KEYS: tuple[str, ...] = tuple(_MERCHANT_SETTINGS)


def settings_table() -> Mapping[str, Setting]:
    """Every key of ``HSQ_REFUNDS``: its default, reader and documentation."""
    return _SETTINGS


def merchant_settings_table() -> Mapping[str, Setting]:
    """Every key of one ``MERCHANTS`` entry."""
    return _MERCHANT_SETTINGS


# --------------------------------------------------------------------------- parsing


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, check_id: str, path: str, message: str, hint: str = "") -> None:
        level = "error" if check_id.startswith("hsq_refunds.E") else "warning"
        self.problems.append(Problem(level, check_id, path, message, hint))

    def read(self, setting: Setting, value: object, *keys: str) -> tuple[bool, Any]:
        """``(True, converted)``, or ``(False, None)`` with the problem recorded."""
        try:
            return True, setting.read(value)
        except _Invalid as exc:
            self.add(exc.check_id, setting_path(*keys), exc.message, exc.hint)
            return False, None


def _merchant(
    out: _Collector, merchant_no: object, value: object, inherited: Mapping[str, Any]
) -> MerchantSettings | None:
    path = setting_path("MERCHANTS", str(merchant_no))
    if not isinstance(merchant_no, str):
        out.add(E005_MERCHANTS, path, "merchant numbers must be strings", hint='Write "8140...".')
        return None
    try:
        check_merchant_no(merchant_no)
    except ConfigurationError:
        out.add(
            E005_MERCHANTS,
            path,
            f"is not a merchant number (1 to {MERCHANT_NO_MAX_LENGTH} printable characters, "
            "no spaces around)",
        )
        return None
    if not isinstance(value, Mapping):
        out.add(E005_MERCHANTS, path, "must be a dict of this merchant's keys")
        return None
    for key in value:
        if key not in _MERCHANT_SETTINGS:
            out.add(
                W001_UNKNOWN_KEY,
                setting_path("MERCHANTS", merchant_no, str(key)),
                "unknown setting name; it is ignored",
                hint=f"Merchant keys are {', '.join(MERCHANT_KEYS)}.",
            )
    fields: dict[str, Any] = {}
    complete = True
    for key, setting in _MERCHANT_SETTINGS.items():
        item = value.get(key)
        if setting.required and (
            item is None or (isinstance(item, str | bytes) and not item.strip())
        ):
            out.add(
                E006_MERCHANT_KEY_MISSING,
                setting_path("MERCHANTS", merchant_no, key),
                "is missing or empty",
            )
            complete = False
            continue
        if key not in value:
            fields[key.lower()] = inherited[key] if setting.inherits else None
            continue
        ok, converted = out.read(setting, item, "MERCHANTS", merchant_no, key)
        complete = complete and ok
        fields[key.lower()] = converted
    if not complete:
        return None
    return MerchantSettings(merchant_no=merchant_no, **fields)


def _parse(raw: object) -> tuple[HsqRefundsSettings, list[Problem]]:
    out = _Collector()
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        out.add(E001_NOT_A_DICT, "HSQ_REFUNDS", "must be a dict")
        raw = {}
    for key in raw:
        if key not in _SETTINGS:
            out.add(
                W001_UNKNOWN_KEY,
                setting_path(str(key)),
                "unknown setting name; it is ignored",
                hint="See the settings reference: python -m hsq_refunds.conf",
            )
    values: dict[str, Any] = {}
    for key, setting in _SETTINGS.items():
        if key == "MERCHANTS":
            continue
        if key not in raw:
            values[key] = setting.default
            continue
        ok, converted = out.read(setting, raw[key], key)
        values[key] = converted if ok else setting.default
    for key, setting in _SETTINGS.items():
        if setting.compute is not None and values[key] is None:
            values[key] = setting.compute(values)

    merchants_raw = raw.get("MERCHANTS", {})
    merchants: dict[str, MerchantSettings] = {}
    if merchants_raw is None:
        merchants_raw = {}
    if not isinstance(merchants_raw, Mapping):
        out.add(
            E005_MERCHANTS, setting_path("MERCHANTS"), "must be a dict of merchant number -> keys"
        )
        merchants_raw = {}
    for merchant_no, entry in merchants_raw.items():
        merchant = _merchant(out, merchant_no, entry, values)
        if merchant is not None:
            merchants[merchant.merchant_no] = merchant
    values["MERCHANTS"] = MappingProxyType(merchants)

    result = HsqRefundsSettings(**values)
    _check_lease(out, result)
    if not raw.get("MERCHANTS"):
        out.add(
            W002_NO_MERCHANTS,
            setting_path("MERCHANTS"),
            "no merchants are configured; refunds cannot be queried",
            hint="Add each merchant's SIGN_KEY, PRIVATE_KEY and PLATFORM_CERT.",
        )
    return result, out.problems


def _check_lease(out: _Collector, current: HsqRefundsSettings) -> None:
    """A claim must outlast a refund's wait in the queue plus its slowest possible query."""
    deadline = current.QUERY_DEADLINE
    if current.CLAIM_LEASE < 2 * deadline:
        out.add(
            W005_CLAIM_LEASE,
            setting_path("CLAIM_LEASE"),
            f"{current.CLAIM_LEASE:g} seconds is shorter than twice the longest query "
            f"({setting_path('QUERY_DEADLINE')}: {deadline:g} seconds with these timeouts and "
            "retries): a slow sync could lose its claims and another run query the same "
            "refunds again",
            hint="Raise CLAIM_LEASE, or lower QUERY_DEADLINE, the timeouts or RETRIES.",
        )


# --------------------------------------------------------------------------- the reference


def _markdown_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return (
            "{"
            + ", ".join(f"{_markdown_value(k)}: {_markdown_value(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, tuple) and value and all(isinstance(item, tuple) for item in value):
        return (
            "["
            + ", ".join("(" + ", ".join(map(_markdown_value, item)) + ")" for item in value)
            + "]"
        )
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(_markdown_value, value)) + "]"
    return repr(value)


def settings_reference_markdown() -> str:
    """The settings reference, as the README's "Settings" section holds it: every key of
    ``HSQ_REFUNDS`` and of a ``MERCHANTS`` entry, and every check id."""
    lines = [
        "Every key of `HSQ_REFUNDS` (durations in seconds, or a `timedelta`):",
        "",
        "| key | default | |",
        "|---|---|---|",
    ]
    for key, setting in _SETTINGS.items():
        default = setting.shown_default or f"`{_markdown_value(setting.default)}`"
        lines.append(f"| `{key}` | {default} | {setting.doc} |")
    lines += [
        "",
        "Every key of one `MERCHANTS` entry:",
        "",
        "| key | | |",
        "|---|---|---|",
    ]
    for key, setting in _MERCHANT_SETTINGS.items():
        given = (
            "required" if setting.required else "the global one" if setting.inherits else "`None`"
        )
        lines.append(f"| `{key}` | {given} | {setting.doc} |")
    lines += ["", "The ids of `manage.py check`:", "", "| id | |", "|---|---|"]
    lines += [f"| `{check_id}` | {meaning} |" for check_id, meaning in CHECK_IDS.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- cached state


class _State:
    """The parsed setting and the clients built from it, dropped when the setting changes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.parsed: tuple[HsqRefundsSettings, list[Problem]] | None = None
        self.clients: dict[str, HsqClient] = {}

    def reset(self) -> None:
        with self.lock:
            clients, self.clients, self.parsed = self.clients, {}, None
        for client in clients.values():
            client.close()


_state = _State()


@receiver(setting_changed, dispatch_uid="hsq_refunds.conf.reset")
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "HSQ_REFUNDS":
        _state.reset()


def inspect_settings() -> tuple[HsqRefundsSettings, list[Problem]]:
    """The parsed setting and every problem found in it, keys not yet loaded."""
    with _state.lock:
        if _state.parsed is None:
            _state.parsed = _parse(getattr(django_settings, "HSQ_REFUNDS", None))
        return _state.parsed


def get_settings() -> HsqRefundsSettings:
    """``HSQ_REFUNDS`` with defaults filled in.

    Raises :class:`~hsq_refunds.gateway.ConfigurationError` naming the first wrong key; run
    ``manage.py check`` to see them all.
    """
    parsed, problems = inspect_settings()
    for problem in problems:
        if problem.level == "error":
            raise ConfigurationError(str(problem))
    return parsed


def merchant_numbers() -> list[str]:
    """The configured merchant numbers, in the order the setting lists them."""
    return list(get_settings().MERCHANTS)


def default_merchant_no() -> str | None:
    """The merchant used when none is given: the only one configured, else ``None``."""
    merchants = merchant_numbers()
    return merchants[0] if len(merchants) == 1 else None


def get_client(merchant_no: str | None = None) -> HsqClient:
    """The client of ``merchant_no`` (default: the only merchant), built once and cached.

    Its keys are parsed once and it holds one connection pool; it is safe to share between
    threads. Raises :class:`~hsq_refunds.gateway.ConfigurationError` for a merchant that is
    not configured or whose keys cannot be loaded, naming the setting.
    """
    current = get_settings()
    if merchant_no is None:
        merchant_no = default_merchant_no()
        if merchant_no is None:
            raise ConfigurationError(
                f"{setting_path('MERCHANTS')}: no merchants are configured"
                if not current.MERCHANTS
                else "several merchants are configured; say which merchant number to use"
            )
    with _state.lock:
        client = _state.clients.get(merchant_no)
        if client is not None:
            return client
        merchant = current.MERCHANTS.get(merchant_no)
        if merchant is None:
            raise ConfigurationError(
                f"merchant {merchant_no!r} is not configured in {setting_path('MERCHANTS')}"
            )
        client = _build_client(current, merchant)
        _state.clients[merchant_no] = client
        return client


def _rate_limiter(current: HsqRefundsSettings, merchant_no: str) -> SharedRateLimiter | None:
    """``RATE_LIMIT`` for one merchant, shared by every process through ``RATE_LIMIT_CACHE``.

    A query may wait for its turn as long as its claim (``CLAIM_LEASE``) still leaves it the
    whole ``QUERY_DEADLINE`` afterwards.
    """
    if current.RATE_LIMIT is None:
        return None
    return SharedRateLimiter(
        current.RATE_LIMIT,
        merchant_no=merchant_no,
        cache_alias=current.RATE_LIMIT_CACHE,
        max_wait=max(1.0, current.CLAIM_LEASE - current.QUERY_DEADLINE),
    )


def _build_client(current: HsqRefundsSettings, merchant: MerchantSettings) -> HsqClient:
    try:
        return HsqClient(
            merchant_no=merchant.merchant_no,
            sign_key=merchant.sign_key,
            private_key=merchant.private_key,
            private_key_password=merchant.private_key_password,
            platform_key=merchant.platform_cert,
            base_url=merchant.base_url,
            environment=merchant.environment,
            connect_timeout=current.CONNECT_TIMEOUT,
            read_timeout=current.READ_TIMEOUT,
            retries=current.RETRIES,
            backoff_factor=current.BACKOFF_FACTOR,
            deadline=current.QUERY_DEADLINE,
            rate_limit=_rate_limiter(current, merchant.merchant_no),
            pool_maxsize=max(32, current.CONCURRENCY),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{setting_path('MERCHANTS', merchant.merchant_no)}: {exc.message}"
        ) from None


if __name__ == "__main__":
    print(settings_reference_markdown(), end="")
