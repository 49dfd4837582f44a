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
        "CONCURRENCY": 8,                     # any key below may be left out
    }

A refund's merchant number selects its credentials. With a single merchant configured, it is
the default wherever a merchant number may be left out. ``ENVIRONMENT`` and ``BASE_URL`` may
also be given per merchant, overriding the global ones.

The setting is read on first use and again after it changes (``override_settings`` works), and
every mistake in it is reported by ``manage.py check`` (see :mod:`hsq_refunds.checks`).

Merchant keys
-------------
======================== ========================================================================
``SIGN_KEY``             required: the 32-hex-character sign key HSQ issued (签名混淆KEY)
``PRIVATE_KEY``          required: the merchant private key: a path to ``<merchantNo>_pri.pfx``,
                         a PEM file, or the PEM / base64 DER text itself
``PRIVATE_KEY_PASSWORD`` the password of the PKCS#12 file or encrypted PEM (default: none)
``PLATFORM_CERT``        required: HSQ's platform certificate ``MANDAO_<merchantNo>_pub.cer``
                         (path, PEM or base64 text; a bare public key is accepted too)
``ENVIRONMENT``          overrides the global ``ENVIRONMENT`` for this merchant
``BASE_URL``             overrides the global ``BASE_URL`` for this merchant
======================== ========================================================================

Optional keys and their defaults
--------------------------------
Durations are seconds (a number or a ``datetime.timedelta``).

============================ ================ ====================================================
``ENVIRONMENT``              ``"production"`` ``"production"``, ``"test"`` or ``"pre"``
``BASE_URL``                 ``None``         an explicit gateway URL (the local sandbox);
                                              wins over ``ENVIRONMENT``
``CONNECT_TIMEOUT``          ``5``            seconds to connect to the gateway
``READ_TIMEOUT``             ``15``           seconds to wait for its answer
``RETRIES``                  ``2``            retries of connection failures, timeouts and 5xx
``BACKOFF_FACTOR``           ``0.5``          exponential backoff between those retries
``RATE_LIMIT``               ``None``         at most this many queries per second per merchant
                                              and process (``None``: no limit)
``CONCURRENCY``              ``8``            queries in flight at once during a sync
``CHUNK_SIZE``               ``100``          refunds selected per database round trip
``CLAIM_LEASE``              ``300``          seconds a sync holds the refunds it claimed; a run
                                              killed half-way blocks nothing longer than this
``FIRST_QUERY_DELAY``        ``60``           first query this long after the refund was applied
``QUERY_INTERVALS``          see below        ``[(age, interval), ...]``: while a refund is
                                              younger than ``age`` it is asked again every
                                              ``interval``; past the last age, the last interval
``NOT_FOUND_GRACE``          ``1800``         "order does not exist" (200004/200009) is normal
                                              this long after applying; later it is flagged
``MAX_AGE``                  ``1209600``      (14 days) stop asking about an unfinished refund
                                              this long after applying, and flag it
``ERROR_BACKOFF``            see below        waits after 1, 2, 3... consecutive failed queries
                                              (the last one repeats); never shorter than the
                                              normal interval
``QUERY_LOG_RETENTION_DAYS`` ``90``           ``RefundQuery`` rows older than this are deleted by
                                              ``manage.py prune_refund_queries`` (``None``: keep)
``ADMIN_SYNC_LIMIT``         ``20``           the admin refreshes at most this many refunds inline
``TASK_BATCH_SIZE``          ``100``          refunds per django-q2 task when a sync fans out
``SCHEDULE_MINUTES``         ``1``            minutes between scheduled django-q2 syncs
============================ ================ ====================================================

The default ``QUERY_INTERVALS`` follow the gateway's guidance (query about a minute after
applying; balance refunds land within 5 minutes; bank cards within 1 to 3 working days)::

    [(600, 60),          # first 10 minutes: every minute
     (3600, 300),        # first hour: every 5 minutes
     (86400, 1800),      # first day: every 30 minutes
     (345600, 3600),     # first 4 days (a weekend and a working day or two): every hour
     (1209600, 10800)]   # then every 3 hours until MAX_AGE

The default ``ERROR_BACKOFF`` is ``[60, 120, 300, 600, 1800, 3600]``. A *signed* gateway error
(the gateway itself refused the query) starts two steps further along it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from .gateway import ENVIRONMENTS, ConfigurationError, HsqClient

__all__ = [
    "DEFAULTS",
    "MERCHANT_KEYS",
    "HsqRefundsSettings",
    "MerchantSettings",
    "Problem",
    "default_merchant_no",
    "get_client",
    "get_settings",
    "inspect_settings",
    "merchant_numbers",
    "setting_path",
]

#: The defaults of every optional key (see the module docstring).
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "ENVIRONMENT": "production",
        "BASE_URL": None,
        "CONNECT_TIMEOUT": 5.0,
        "READ_TIMEOUT": 15.0,
        "RETRIES": 2,
        "BACKOFF_FACTOR": 0.5,
        "RATE_LIMIT": None,
        "CONCURRENCY": 8,
        "CHUNK_SIZE": 100,
        "CLAIM_LEASE": 300.0,
        "FIRST_QUERY_DELAY": 60.0,
        "QUERY_INTERVALS": (
            (600.0, 60.0),
            (3600.0, 300.0),
            (86400.0, 1800.0),
            (345600.0, 3600.0),
            (1209600.0, 10800.0),
        ),
        "NOT_FOUND_GRACE": 1800.0,
        "MAX_AGE": 1209600.0,
        "ERROR_BACKOFF": (60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
        "QUERY_LOG_RETENTION_DAYS": 90,
        "ADMIN_SYNC_LIMIT": 20,
        "TASK_BATCH_SIZE": 100,
        "SCHEDULE_MINUTES": 1,
    }
)

#: The keys of one ``MERCHANTS`` entry.
MERCHANT_KEYS = (
    "SIGN_KEY",
    "PRIVATE_KEY",
    "PRIVATE_KEY_PASSWORD",
    "PLATFORM_CERT",
    "ENVIRONMENT",
    "BASE_URL",
)
_REQUIRED_MERCHANT_KEYS = ("SIGN_KEY", "PRIVATE_KEY", "PLATFORM_CERT")
_TOP_KEYS = frozenset(DEFAULTS) | {"MERCHANTS"}
_MAX_MERCHANT_NO = 16


def setting_path(*keys: str) -> str:
    """``HSQ_REFUNDS["MERCHANTS"]["814..."]["SIGN_KEY"]``: how messages name a setting."""
    return "HSQ_REFUNDS" + "".join(f'["{key}"]' for key in keys)


@dataclass(frozen=True)
class Problem:
    """One mistake found in ``HSQ_REFUNDS``; the system checks turn these into messages."""

    level: str  # "error" or "warning"
    id: str  # "hsq_refunds.E003"
    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class MerchantSettings:
    """One merchant's credentials and gateway address; ``repr`` shows no secret."""

    merchant_no: str
    sign_key: str = field(repr=False)
    private_key: Any = field(repr=False)
    private_key_password: str | None = field(repr=False)
    platform_cert: Any = field(repr=False)
    environment: str
    base_url: str | None


@dataclass(frozen=True)
class HsqRefundsSettings:
    """``HSQ_REFUNDS`` with every key filled in; durations in seconds (floats)."""

    ENVIRONMENT: str
    BASE_URL: str | None
    MERCHANTS: Mapping[str, MerchantSettings]
    CONNECT_TIMEOUT: float
    READ_TIMEOUT: float
    RETRIES: int
    BACKOFF_FACTOR: float
    RATE_LIMIT: float | None
    CONCURRENCY: int
    CHUNK_SIZE: int
    CLAIM_LEASE: float
    FIRST_QUERY_DELAY: float
    QUERY_INTERVALS: tuple[tuple[float, float], ...]
    NOT_FOUND_GRACE: float
    MAX_AGE: float
    ERROR_BACKOFF: tuple[float, ...]
    QUERY_LOG_RETENTION_DAYS: int | None
    ADMIN_SYNC_LIMIT: int
    TASK_BATCH_SIZE: int
    SCHEDULE_MINUTES: int


# --------------------------------------------------------------------------- validation


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, code: int, path: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem("error", f"hsq_refunds.E{code:03d}", path, message, hint))

    def warning(self, code: int, path: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem("warning", f"hsq_refunds.W{code:03d}", path, message, hint))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _seconds(value: object) -> float | None:
    """A duration given as a number of seconds or a ``timedelta``; ``None`` if neither."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if _is_number(value):
        return float(value)  # type: ignore[arg-type]
    return None


def _positive_seconds(out: _Collector, key: str, value: object) -> float:
    seconds = _seconds(value)
    if seconds is None or seconds <= 0:
        out.error(
            10,
            setting_path(key),
            f"must be a positive number of seconds or a timedelta, not {_show(value)}",
        )
        return float(DEFAULTS[key])
    return seconds


def _positive_int(out: _Collector, key: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        out.error(10, setting_path(key), f"must be an integer >= {minimum}, not {_show(value)}")
        return int(DEFAULTS[key])
    return value


def _show(value: object) -> str:
    """A value in a message: only numbers and short names, never what could be a secret."""
    if value is None or isinstance(value, bool | int | float | timedelta):
        return repr(value)
    return f"a {type(value).__name__}"


def _intervals(out: _Collector, value: object) -> tuple[tuple[float, float], ...]:
    path = setting_path("QUERY_INTERVALS")
    pairs: list[tuple[float, float]] = []
    if isinstance(value, list | tuple) and value:
        for item in value:
            if not (isinstance(item, list | tuple) and len(item) == 2):
                break
            age, interval = _seconds(item[0]), _seconds(item[1])
            if age is None or interval is None or age <= 0 or interval <= 0:
                break
            if pairs and age <= pairs[-1][0]:
                break
            pairs.append((age, interval))
        else:
            return tuple(pairs)
    out.error(
        11,
        path,
        "must be a non-empty list of (age, interval) pairs of positive seconds, ages ascending",
        hint="For example [(600, 60), (3600, 300), (86400, 1800)].",
    )
    return DEFAULTS["QUERY_INTERVALS"]


def _backoff(out: _Collector, value: object) -> tuple[float, ...]:
    if isinstance(value, list | tuple) and value:
        steps = [_seconds(step) for step in value]
        if all(step is not None and step > 0 for step in steps):
            return tuple(steps)  # type: ignore[arg-type]
    out.error(
        11,
        setting_path("ERROR_BACKOFF"),
        "must be a non-empty list of positive seconds",
        hint="For example [60, 300, 1800, 3600].",
    )
    return DEFAULTS["ERROR_BACKOFF"]


def _environment(out: _Collector, path: str, value: object) -> str:
    if isinstance(value, str) and value in ENVIRONMENTS:
        return value
    out.error(
        3,
        path,
        f"unknown environment {value!r}" if isinstance(value, str) else "must be a string",
        hint=f"Use one of {', '.join(sorted(ENVIRONMENTS))}, or set BASE_URL.",
    )
    return "production"


def _base_url(out: _Collector, path: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            parts = None
        if parts and parts.scheme in ("http", "https") and parts.hostname:
            if not parts.username and not parts.password:
                return value
    out.error(
        4,
        path,
        "must be an http(s) URL with a host and no credentials",
        hint='For example "https://api.huishouqian.com/api/acquiring".',
    )
    return None


def _merchant(
    out: _Collector, merchant_no: object, value: object, environment: str, base_url: str | None
) -> MerchantSettings | None:
    path = setting_path("MERCHANTS", str(merchant_no))
    if not isinstance(merchant_no, str) or not merchant_no.strip():
        out.error(5, path, "merchant numbers must be non-empty strings", hint='Write "8140...".')
        return None
    if len(merchant_no) > _MAX_MERCHANT_NO or merchant_no != merchant_no.strip():
        out.error(5, path, f"is not a merchant number (1 to {_MAX_MERCHANT_NO} characters)")
        return None
    if not isinstance(value, Mapping):
        out.error(5, path, "must be a dict of this merchant's keys")
        return None
    for key in value:
        if key not in MERCHANT_KEYS:
            out.warning(
                1,
                setting_path("MERCHANTS", merchant_no, str(key)),
                "unknown setting name; it is ignored",
                hint=f"Merchant keys are {', '.join(MERCHANT_KEYS)}.",
            )
    complete = True
    for key in _REQUIRED_MERCHANT_KEYS:
        item = value.get(key)
        if item is None or (isinstance(item, str | bytes) and not item.strip()):
            out.error(6, setting_path("MERCHANTS", merchant_no, key), "is missing or empty")
            complete = False
    sign_key = value.get("SIGN_KEY")
    if sign_key is not None and not isinstance(sign_key, str):
        out.error(7, setting_path("MERCHANTS", merchant_no, "SIGN_KEY"), "must be a string")
        complete = False
    elif isinstance(sign_key, str) and sign_key and sign_key != sign_key.strip():
        out.error(
            7,
            setting_path("MERCHANTS", merchant_no, "SIGN_KEY"),
            "has leading or trailing whitespace",
        )
        complete = False
    password = value.get("PRIVATE_KEY_PASSWORD")
    if password is not None and not isinstance(password, str):
        out.error(
            8,
            setting_path("MERCHANTS", merchant_no, "PRIVATE_KEY_PASSWORD"),
            "must be a string",
        )
        complete = False
    if "ENVIRONMENT" in value:
        environment = _environment(
            out, setting_path("MERCHANTS", merchant_no, "ENVIRONMENT"), value["ENVIRONMENT"]
        )
    if "BASE_URL" in value:
        base_url = _base_url(
            out, setting_path("MERCHANTS", merchant_no, "BASE_URL"), value["BASE_URL"]
        )
    if not complete:
        return None
    return MerchantSettings(
        merchant_no=merchant_no,
        sign_key=sign_key,  # type: ignore[arg-type]
        private_key=value["PRIVATE_KEY"],
        private_key_password=password or None,
        platform_cert=value["PLATFORM_CERT"],
        environment=environment,
        base_url=base_url,
    )


def _parse(raw: object) -> tuple[HsqRefundsSettings, list[Problem]]:
    out = _Collector()
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        out.error(1, "HSQ_REFUNDS", "must be a dict")
        raw = {}
    for key in raw:
        if key not in _TOP_KEYS:
            out.warning(
                1,
                setting_path(str(key)),
                "unknown setting name; it is ignored",
                hint="See the table in hsq_refunds/conf.py for the setting names.",
            )
    values = {**DEFAULTS, **{k: v for k, v in raw.items() if k in DEFAULTS}}
    environment = _environment(out, setting_path("ENVIRONMENT"), values["ENVIRONMENT"])
    base_url = _base_url(out, setting_path("BASE_URL"), values["BASE_URL"])

    merchants_raw = raw.get("MERCHANTS", {})
    merchants: dict[str, MerchantSettings] = {}
    if merchants_raw is None:
        merchants_raw = {}
    if not isinstance(merchants_raw, Mapping):
        out.error(5, setting_path("MERCHANTS"), "must be a dict of merchant number -> keys")
        merchants_raw = {}
    for merchant_no, entry in merchants_raw.items():
        merchant = _merchant(out, merchant_no, entry, environment, base_url)
        if merchant is not None:
            merchants[merchant.merchant_no] = merchant

    rate_limit = values["RATE_LIMIT"]
    if rate_limit is not None and (not _is_number(rate_limit) or rate_limit <= 0):
        out.error(
            10,
            setting_path("RATE_LIMIT"),
            f"must be None or a positive number of queries per second, not {_show(rate_limit)}",
        )
        rate_limit = None
    retention = values["QUERY_LOG_RETENTION_DAYS"]
    if retention is not None and (
        not isinstance(retention, int) or isinstance(retention, bool) or retention < 1
    ):
        out.error(
            10,
            setting_path("QUERY_LOG_RETENTION_DAYS"),
            f"must be None or a whole number of days >= 1, not {_show(retention)}",
        )
        retention = DEFAULTS["QUERY_LOG_RETENTION_DAYS"]

    result = HsqRefundsSettings(
        ENVIRONMENT=environment,
        BASE_URL=base_url,
        MERCHANTS=MappingProxyType(merchants),
        CONNECT_TIMEOUT=_positive_seconds(out, "CONNECT_TIMEOUT", values["CONNECT_TIMEOUT"]),
        READ_TIMEOUT=_positive_seconds(out, "READ_TIMEOUT", values["READ_TIMEOUT"]),
        RETRIES=_positive_int(out, "RETRIES", values["RETRIES"], minimum=0),
        BACKOFF_FACTOR=_non_negative(out, "BACKOFF_FACTOR", values["BACKOFF_FACTOR"]),
        RATE_LIMIT=None if rate_limit is None else float(rate_limit),
        CONCURRENCY=_positive_int(out, "CONCURRENCY", values["CONCURRENCY"]),
        CHUNK_SIZE=_positive_int(out, "CHUNK_SIZE", values["CHUNK_SIZE"]),
        CLAIM_LEASE=_positive_seconds(out, "CLAIM_LEASE", values["CLAIM_LEASE"]),
        FIRST_QUERY_DELAY=_non_negative(out, "FIRST_QUERY_DELAY", values["FIRST_QUERY_DELAY"]),
        QUERY_INTERVALS=_intervals(out, values["QUERY_INTERVALS"]),
        NOT_FOUND_GRACE=_non_negative(out, "NOT_FOUND_GRACE", values["NOT_FOUND_GRACE"]),
        MAX_AGE=_positive_seconds(out, "MAX_AGE", values["MAX_AGE"]),
        ERROR_BACKOFF=_backoff(out, values["ERROR_BACKOFF"]),
        QUERY_LOG_RETENTION_DAYS=retention,
        ADMIN_SYNC_LIMIT=_positive_int(out, "ADMIN_SYNC_LIMIT", values["ADMIN_SYNC_LIMIT"]),
        TASK_BATCH_SIZE=_positive_int(out, "TASK_BATCH_SIZE", values["TASK_BATCH_SIZE"]),
        SCHEDULE_MINUTES=_positive_int(out, "SCHEDULE_MINUTES", values["SCHEDULE_MINUTES"]),
    )
    _check_lease(out, result)
    if not raw.get("MERCHANTS"):
        out.warning(
            2,
            setting_path("MERCHANTS"),
            "no merchants are configured; refunds cannot be queried",
            hint="Add each merchant's SIGN_KEY, PRIVATE_KEY and PLATFORM_CERT.",
        )
    return result, out.problems


#: The longest ``Retry-After`` the client honours between retries.
_RETRY_AFTER_CAP = 30.0


def _check_lease(out: _Collector, current: HsqRefundsSettings) -> None:
    """A claim must outlast a refund's wait in the queue plus its slowest possible query."""
    attempts = current.RETRIES + 1
    slowest = (current.CONNECT_TIMEOUT + current.READ_TIMEOUT) * attempts
    slowest += _RETRY_AFTER_CAP * current.RETRIES
    if current.CLAIM_LEASE < 2 * slowest:
        out.warning(
            5,
            setting_path("CLAIM_LEASE"),
            f"{current.CLAIM_LEASE:g} seconds is shorter than twice the slowest query "
            f"({slowest:g} seconds with these timeouts and retries): a slow sync could lose "
            "its claims and another run query the same refunds again",
            hint="Raise CLAIM_LEASE, or lower the timeouts or RETRIES.",
        )


def _non_negative(out: _Collector, key: str, value: object) -> float:
    seconds = _seconds(value)
    if seconds is None or seconds < 0:
        out.error(10, setting_path(key), f"must be a number >= 0, not {_show(value)}")
        return float(DEFAULTS[key])
    return seconds


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
            rate_limit=current.RATE_LIMIT,
            pool_maxsize=max(32, current.CONCURRENCY),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{setting_path('MERCHANTS', merchant.merchant_no)}: {exc.message}"
        ) from None
