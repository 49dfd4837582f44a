"""The ``HSQ_REFUNDS`` setting: read lazily, filled with defaults, every mistake reported.

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
        "HEALTH": {"OVERDUE_WARNING": 600},   # and so may any threshold
    }

Each key is declared once, as a field of :class:`HsqRefundsSettings` (the keys of
``HSQ_REFUNDS``), :class:`MerchantSettings` (the keys of one ``MERCHANTS`` entry) or
:class:`HealthSettings` (the keys of ``HEALTH``), with its default, the reader
(:mod:`hsq_refunds.readers`) that validates and converts it, and its documentation. The parsed
setting, :data:`DEFAULTS` and the settings reference of the README and the docs are all made
from those fields.

The setting is read on first use and again after it changes (``override_settings`` works).
Each mistake found is a :class:`Problem` with one of the ids of :mod:`hsq_refunds.check_ids`;
``manage.py check`` reports them all (:mod:`hsq_refunds.checks`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from . import readers
from .check_ids import (
    E001_NOT_A_DICT,
    E004_BASE_URL,
    E005_MERCHANTS,
    E006_MERCHANT_KEY_MISSING,
    E010_VALUE,
    W001_UNKNOWN_KEY,
    W002_NO_MERCHANTS,
    W005_CLAIM_LEASE,
)
from .gateway import ConfigurationError
from .gateway.validation import MERCHANT_NO_MAX_LENGTH, check_merchant_no, query_deadline

__all__ = [
    "DEFAULTS",
    "MERCHANT_KEYS",
    "QUERY_SECONDS_ESTIMATE",
    "HealthSettings",
    "HsqRefundsSettings",
    "MerchantSettings",
    "Problem",
    "Setting",
    "default_merchant_no",
    "get_settings",
    "health_settings_table",
    "inspect_settings",
    "merchant_numbers",
    "merchant_settings_table",
    "setting_path",
    "settings_table",
]


def setting_path(*keys: str) -> str:
    """``HSQ_REFUNDS["MERCHANTS"]["814..."]["SIGN_KEY"]``: how messages name a setting."""
    return "HSQ_REFUNDS" + "".join(f'["{key}"]' for key in keys)


@dataclass(frozen=True)
class Problem:
    """One mistake found in ``HSQ_REFUNDS``; the system checks turn these into messages."""

    id: str  # a check id of hsq_refunds.check_ids, e.g. E003_ENVIRONMENT
    path: str
    message: str
    hint: str = ""

    @property
    def level(self) -> str:
        """``error`` or ``warning``."""
        return "error" if self.id.startswith("hsq_refunds.E") else "warning"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# --------------------------------------------------------------------------- the key table


@dataclass(frozen=True)
class Setting:
    """One key: its default, its reader, its documentation (English, for the reference)."""

    key: str
    default: Any
    read: readers.Reader
    doc: str
    #: How the reference shows the default, when the value itself does not say it well.
    shown_default: str | None = None
    #: For a default of ``None`` that means "computed": the value, from the other keys.
    compute: Callable[[Mapping[str, Any]], Any] | None = None
    #: Merchant keys: whether it must be given.
    required: bool = False
    #: Merchant keys: whether a missing key takes the global key of the same name.
    inherits: bool = False


def _key(
    default: Any, read: readers.Reader, doc: str, *, secret: bool = False, **options: Any
) -> Any:
    """A field of a settings class: one key, the field's name in capitals (``repr`` hides a
    ``secret`` one)."""
    return dataclasses.field(repr=not secret, metadata={"setting": (default, read, doc, options)})


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


_gateway_url = readers.url(E004_BASE_URL, '"https://api.huishouqian.com/api/acquiring"')
_threshold = readers.seconds(optional=True)
_count = readers.integer(1, optional=True, unit="a whole number")
_share = readers.number("a share between 0 and 1 (0.2 is 20%)", 1, optional=True)


@dataclass(frozen=True, kw_only=True)
class MerchantSettings:
    """One merchant's credentials and gateway address; ``repr`` shows no secret.

    The fields below (all but ``merchant_no``) are the keys of one ``MERCHANTS`` entry.
    """

    merchant_no: str
    sign_key: str = _key(
        None,
        readers.sign_key,
        "The 32-hex-character sign key HSQ issued with the certificates (签名混淆KEY). It is "
        "appended to what is signed, never sent.",
        required=True,
        secret=True,
    )
    private_key: Any = _key(  # noqa: RUF009 - a dataclasses.field
        None,
        readers.anything,
        "Your private key: a path to `<merchantNo>_pri.pfx` or a PEM file, or the PEM / base64 "
        "DER text itself (e.g. from an environment variable).",
        required=True,
        secret=True,
    )
    private_key_password: str | None = _key(
        None,
        readers.password,
        "The password of the PKCS#12 file or of an encrypted PEM.",
        secret=True,
    )
    platform_cert: Any = _key(  # noqa: RUF009 - a dataclasses.field
        None,
        readers.anything,
        "HSQ's platform certificate `MANDAO_<merchantNo>_pub.cer` (a path, PEM or base64 text; "
        "a bare public key is accepted too), which verifies every answer.",
        required=True,
        secret=True,
    )
    environment: str = _key(
        None,
        readers.environment,
        "Overrides the global `ENVIRONMENT` for this merchant.",
        inherits=True,
    )
    base_url: str | None = _key(
        None,
        _gateway_url,
        "Overrides the global `BASE_URL` for this merchant.",
        inherits=True,
    )


@dataclass(frozen=True, kw_only=True)
class HealthSettings:
    """``HSQ_REFUNDS["HEALTH"]`` with every key filled in: the thresholds of
    :mod:`hsq_refunds.health`; durations in seconds, ``None`` switches a threshold off."""

    WINDOW: float = _key(
        3600.0,
        readers.seconds(),
        "The recent past that the `failed_queries` and `signature` checks look at.",
    )
    ATTENTION_WARNING: int | None = _key(
        1, _count, "A warning from this many refunds needing attention on."
    )
    ATTENTION_CRITICAL: int | None = _key(
        None, _count, "Critical from this many refunds needing attention on."
    )
    UNFINISHED_WARNING: float | None = _key(
        432000.0,
        _threshold,
        "A warning once the oldest unfinished refund is this old (5 days; bank cards take 1–3 "
        "working days).",
    )
    UNFINISHED_CRITICAL: float | None = _key(
        None, _threshold, "Critical once the oldest unfinished refund is this old."
    )
    OVERDUE_WARNING: float | None = _key(
        900.0,
        _threshold,
        "A warning once a refund's next query is this long past: the scheduler or cron is not "
        "running.",
    )
    OVERDUE_CRITICAL: float | None = _key(
        3600.0, _threshold, "Critical once a refund's next query is this long past."
    )
    LAST_SYNC_WARNING: float | None = _key(
        900.0,
        _threshold,
        "A warning once the last sync run finished this long ago, or the django-q2 schedule is "
        "this late.",
    )
    LAST_SYNC_CRITICAL: float | None = _key(
        3600.0,
        _threshold,
        "Critical once the last sync run finished this long ago, or the django-q2 schedule is "
        "this late.",
    )
    FAILED_SHARE_WARNING: float | None = _key(
        0.2, _share, "A warning from this share of failed queries in `WINDOW` on (0.2 is 20%)."
    )
    FAILED_SHARE_CRITICAL: float | None = _key(
        0.5, _share, "Critical from this share of failed queries in `WINDOW` on."
    )
    FAILED_MIN_QUERIES: int = _key(
        10,
        readers.integer(0, unit="a whole number"),
        "With fewer queries than this in `WINDOW`, their failed share is at most a warning.",
    )
    RUN_RETENTION_DAYS: int | None = _key(
        30,
        _count,
        "The record of each sync run (`SyncRun`) is kept this many days (`None`: for ever).",
    )


@dataclass(frozen=True, kw_only=True)
class HsqRefundsSettings:
    """``HSQ_REFUNDS`` with every key filled in; durations in seconds (floats).

    Each field is one key, in the order of the reference.
    """

    # -- the gateway
    ENVIRONMENT: str = _key(
        "production",
        readers.environment,
        "`production`, `test` or `pre`: HSQ's three gateways.",
    )
    BASE_URL: str | None = _key(
        None,
        _gateway_url,
        "An explicit gateway URL (e.g. the local sandbox); it wins over `ENVIRONMENT`.",
    )
    MERCHANTS: Mapping[str, MerchantSettings] = _key(
        MappingProxyType({}),
        readers.anything,
        "HSQ merchant number -> that merchant's keys (below). A refund's merchant number selects "
        "its credentials; with one merchant, it is the default.",
    )
    CONNECT_TIMEOUT: float = _key(
        5.0, readers.seconds(), "Seconds to connect to the gateway, per HTTP request."
    )
    READ_TIMEOUT: float = _key(
        15.0, readers.seconds(), "Seconds to wait for each read of the gateway's answer."
    )
    RETRIES: int = _key(
        2,
        readers.integer(0),
        "Retries of connection errors, timeouts and 5xx answers only (urllib3 `Retry`); business "
        "errors are never retried.",
    )
    BACKOFF_FACTOR: float = _key(
        0.5, readers.seconds(zero=True), "urllib3's exponential backoff between those retries."
    )
    QUERY_DEADLINE: float = _key(
        None,
        readers.seconds(optional=True),
        "Seconds one query may take in all (connect, reads, retries). `None`: the longest the "
        "timeouts and retries allow, by `gateway.validation.query_deadline()` (120 with the "
        "defaults).",
        compute=_query_deadline,
    )
    RATE_LIMIT: float | None = _key(
        None,
        readers.number("a positive number of queries per second", optional=True),
        "At most this many queries per second per merchant, across every process (counted in "
        "`RATE_LIMIT_CACHE`). `None`: no limit.",
    )
    RATE_LIMIT_CACHE: str = _key(
        "default",
        readers.cache_alias,
        "The alias in `CACHES` where processes share the `RATE_LIMIT` count; it must be a cache "
        "every process reaches (not `LocMemCache` or `DummyCache`).",
    )
    # -- the sync
    CONCURRENCY: int = _key(8, readers.integer(1), "Queries in flight at once during a sync.")
    CHUNK_SIZE: int = _key(100, readers.integer(1), "Refunds selected per database round trip.")
    CLAIM_LEASE: float = _key(
        300.0,
        readers.seconds(),
        "Seconds a sync holds the refunds it claimed; a run killed half-way blocks nothing longer. "
        "At least twice `QUERY_DEADLINE`.",
    )
    FIRST_QUERY_DELAY: float = _key(
        60.0,
        readers.seconds(zero=True),
        "The first query, this long after the refund was applied for (HSQ: about a minute).",
    )
    NOTIFY_FIRST_QUERY_DELAY: float = _key(
        300.0,
        readers.seconds(zero=True),
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
        readers.intervals,
        "`[(age, interval), …]`: while a refund is younger than `age` it is asked again every "
        "`interval`; past the last age, at the last interval.",
    )
    NOT_FOUND_GRACE: float = _key(
        1800.0,
        readers.seconds(zero=True),
        '"Order does not exist" (200004/200009) is normal this long after applying; later the '
        "refund is flagged.",
    )
    MAX_AGE: float = _key(
        1209600.0,
        readers.seconds(),
        "Stop asking about an unfinished refund this long after applying, and flag it.",
        shown_default="`1209600` (14 days)",
    )
    ERROR_BACKOFF: tuple[float, ...] = _key(
        (60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
        readers.backoff,
        "Waits after 1, 2, 3… consecutive failed queries (the last one repeats), never shorter "
        "than the normal interval; a signed gateway error starts two steps further along.",
    )
    ATTENTION_AFTER_ERRORS: int = _key(
        5,
        readers.integer(1),
        "After this many consecutive failed queries a refund is flagged for a person.",
    )
    QUERY_LOG_RETENTION_DAYS: int | None = _key(
        90,
        readers.integer(1, optional=True, unit="a whole number of days"),
        "`manage.py prune_refund_queries` deletes `RefundQuery` rows older than this many days "
        "(`None`: keep them).",
    )
    # -- django-q2
    TASK_BATCH_SIZE: int = _key(
        100, readers.integer(1), "Refunds per django-q2 task when a sync fans out."
    )
    SCHEDULE_MINUTES: int = _key(
        1, readers.integer(1), "Minutes between scheduled django-q2 syncs."
    )
    CYCLE_LIMIT: int = _key(
        None,
        readers.integer(1, optional=True),
        "The most refunds one scheduled cycle queues. `None`: what the cycle can work through "
        "before the next, `max(TASK_BATCH_SIZE, SCHEDULE_MINUTES × 60 × min(RATE_LIMIT, "
        "CONCURRENCY / 0.1 s))` (4800 with the defaults).",
        compute=_cycle_limit,
    )
    # -- applying for refunds, and HSQ's notifications
    REFUND_TYPE: int = _key(
        2,
        readers.integer(0),
        "The `refundType` sent with each application; HSQ does not publish its meaning.",
    )
    TRANS_NO_PREFIX: str = _key(
        "RF",
        readers.trans_no_prefix,
        "The start of the transNos the app generates for new refunds: 1 to 16 ASCII letters or "
        "digits.",
    )
    NOTIFY_URL: str | None = _key(
        None,
        readers.url(E010_VALUE, '"https://shop.example.com/hsq/refund-notify/"'),
        "The http(s) URL HSQ notifies when a refund finishes, sent as `returnUrl`; it must lead "
        "to the view `hsq_refunds:refund_notify`. `None`: no notifications, polling only.",
    )
    TRACK_UNKNOWN_NOTIFICATIONS: bool = _key(
        True,
        readers.flag,
        "Whether a verified notification about a refund the app does not track starts tracking it.",
    )
    # -- the admin, and health
    ADMIN_SYNC_LIMIT: int = _key(
        20, readers.integer(1), "The admin refreshes at most this many refunds inside a request."
    )
    ALLOW_ADMIN_DELETE: bool = _key(
        False,
        readers.flag,
        "Whether the admin may delete refunds (its audit trail goes with them).",
    )
    HEALTH: HealthSettings = _key(  # noqa: RUF009 - a dataclasses.field
        MappingProxyType({}),
        readers.mapping,
        "The thresholds of the health checks (`manage.py hsq_refunds_health`): a dict of the "
        "`HEALTH` keys below.",
    )


#: Every key of ``HSQ_REFUNDS``, in the order of the reference.
_SETTINGS = _settings_of(HsqRefundsSettings)
#: Every key of a ``MERCHANTS`` entry.
_MERCHANT_SETTINGS = _settings_of(MerchantSettings)
#: Every key of ``HEALTH``.
_HEALTH_SETTINGS = _settings_of(HealthSettings)

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


def health_settings_table() -> Mapping[str, Setting]:
    """Every key of ``HEALTH``."""
    return _HEALTH_SETTINGS


# --------------------------------------------------------------------------- parsing


class _Problems(list[Problem]):
    def add(self, check_id: str, path: str, message: str, hint: str = "") -> None:
        self.append(Problem(check_id, path, message, hint))


def _read_keys(
    out: _Problems, table: Mapping[str, Setting], raw: Mapping[Any, Any], *path: str
) -> tuple[dict[str, Any], bool]:
    """The keys of ``table`` that ``raw`` gives, converted, and whether every one of them was.

    An unknown key and a value its reader refuses are reported and left out.
    """
    for key in raw:
        if key not in table:
            near = difflib.get_close_matches(str(key), table, n=1)
            out.add(
                W001_UNKNOWN_KEY,
                setting_path(*path, str(key)),
                f"unknown key; it is ignored (did you mean {near[0]!r}?)"
                if near
                else "unknown key; it is ignored",
                hint=f"The keys are {', '.join(table)}.",
            )
    given: dict[str, Any] = {}
    for key, setting in table.items():
        if key in raw:
            try:
                given[key] = setting.read(raw[key])
            except readers.Invalid as exc:
                out.add(exc.check_id, setting_path(*path, key), exc.message, exc.hint)
    return given, all(key in given for key in raw if key in table)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str | bytes) and not value.strip())


def _merchant(
    out: _Problems, merchant_no: object, value: object, inherited: Mapping[str, Any]
) -> MerchantSettings | None:
    path = setting_path("MERCHANTS", str(merchant_no))
    if not isinstance(merchant_no, str):
        out.add(E005_MERCHANTS, path, "merchant numbers must be strings", 'Write "8140...".')
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
    missing = [
        key for key in MERCHANT_KEYS if _MERCHANT_SETTINGS[key].required and _blank(value.get(key))
    ]
    for key in missing:
        out.add(
            E006_MERCHANT_KEY_MISSING,
            setting_path("MERCHANTS", merchant_no, key),
            "is missing or empty",
        )
    present = {key: item for key, item in value.items() if key not in missing}
    given, complete = _read_keys(out, _MERCHANT_SETTINGS, present, "MERCHANTS", merchant_no)
    if missing or not complete:
        return None
    fields: dict[str, Any] = {
        key.lower(): given.get(key, inherited[key] if setting.inherits else None)
        for key, setting in _MERCHANT_SETTINGS.items()
    }
    return MerchantSettings(merchant_no=merchant_no, **fields)


def _health(out: _Problems, raw: Mapping[Any, Any]) -> HealthSettings:
    given, _ = _read_keys(out, _HEALTH_SETTINGS, raw, "HEALTH")
    values = {key: given.get(key, setting.default) for key, setting in _HEALTH_SETTINGS.items()}
    for low in [key for key in values if key.endswith("_WARNING")]:
        high = low.removesuffix("_WARNING") + "_CRITICAL"
        if None not in (values[low], values[high]) and values[high] < values[low]:
            out.add(
                E010_VALUE,
                setting_path("HEALTH", high),
                f"must not be below {setting_path('HEALTH', low)} "
                f"({values[high]:g} < {values[low]:g})",
            )
    return HealthSettings(**values)


def _parse(raw: object) -> tuple[HsqRefundsSettings, list[Problem]]:
    out = _Problems()
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        out.add(E001_NOT_A_DICT, "HSQ_REFUNDS", "must be a dict")
        raw = {}
    given, _ = _read_keys(out, _SETTINGS, raw)
    values = {key: given.get(key, setting.default) for key, setting in _SETTINGS.items()}
    for key, setting in _SETTINGS.items():
        if setting.compute is not None and values[key] is None:
            values[key] = setting.compute(values)
    values["HEALTH"] = _health(out, values["HEALTH"])
    merchants_raw = {} if values["MERCHANTS"] is None else values["MERCHANTS"]
    if not isinstance(merchants_raw, Mapping):
        out.add(
            E005_MERCHANTS, setting_path("MERCHANTS"), "must be a dict of merchant number -> keys"
        )
        merchants_raw = {}
    merchants: dict[str, MerchantSettings] = {}
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
    return result, out


def _check_lease(out: _Problems, current: HsqRefundsSettings) -> None:
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


# --------------------------------------------------------------------------- cached state

_lock = threading.Lock()
_parsed: list[tuple[HsqRefundsSettings, list[Problem]]] = []  # the setting, once read


@receiver(setting_changed, dispatch_uid="hsq_refunds.conf.reset")
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "HSQ_REFUNDS":
        with _lock:
            _parsed.clear()


def inspect_settings() -> tuple[HsqRefundsSettings, list[Problem]]:
    """The parsed setting and every problem found in it, keys not yet loaded."""
    with _lock:
        if not _parsed:
            _parsed.append(_parse(getattr(django_settings, "HSQ_REFUNDS", None)))
        return _parsed[0]


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
