"""The app's system checks, run by ``manage.py check`` and ``migrate``: the ``HSQ_REFUNDS``
setting (tag ``hsq_refunds``) and the django-q2 setup (tag ``hsq_refunds_tasks``).

The setting's own problems are found while it is read (:mod:`hsq_refunds.conf`); here every
merchant's keys are loaded too, so that a wrong path, a wrong password or a mixed-up certificate
shows at deploy time instead of on the first query, and the setting is held against the rest of
the project (URLconf, caches, ``Q_CLUSTER``, the schedule in the database). Each message names
the exact setting and what is wrong with it, and never contains key material; its id is one of
:mod:`hsq_refunds.check_ids`. The app config imports this module, which registers the checks.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError, connections

from .check_ids import (
    E008_PRIVATE_KEY_PASSWORD,
    E009_PRIVATE_KEY,
    E012_PLATFORM_CERT,
    E013_RATE_LIMIT_CACHE,
    W003_GATEWAY_NOT_PRODUCTION,
    W004_SIGN_KEY_FORMAT,
    W006_NOTIFY_URL_NOT_HTTPS,
    W007_NOTIFY_URL_VIEW,
    W008_RATE_LIMIT_CACHE_LOCAL,
    W009_NOTIFY_URL_SSL_REDIRECT,
    W020_SCHEDULE_NOT_RUN,
    W021_Q_TIMEOUT_RETRY,
    W022_Q_BATCH_TIMEOUT,
)
from .conf import HsqRefundsSettings, MerchantSettings, inspect_settings, setting_path
from .gateway import ENVIRONMENTS, ConfigurationError, load_platform_key, load_private_key
from .scheduling import DJANGO_Q_DEFAULT_RETRY, SCHEDULE_FUNC, SCHEDULE_NAME

__all__ = [
    "CHECK_TAG",
    "NOTIFY_VIEW_NAME",
    "check_q_cluster",
    "check_schedule_runner",
    "check_settings",
    "q_cluster_options",
]

logger = logging.getLogger("hsq_refunds.checks")

#: The tag of the django-q2 checks: ``manage.py check --tag hsq_refunds_tasks`` runs them alone.
CHECK_TAG = "hsq_refunds_tasks"
_SCHEDULE_TABLE = "django_q_schedule"

#: The URL name (with its namespace) of the view that receives HSQ's refund notifications.
NOTIFY_VIEW_NAME = "hsq_refunds:refund_notify"

#: Cache backends that each process keeps to itself: a limit counted in them is per process.
_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)

_SIGN_KEY = re.compile(r"^[0-9a-fA-F]{32}$")

#: The middleware that ``SECURE_SSL_REDIRECT`` turns on (Django's own checks look for it so).
_SECURITY_MIDDLEWARE = "django.middleware.security.SecurityMiddleware"


@register("hsq_refunds")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every problem in ``HSQ_REFUNDS``, with each merchant's keys actually loaded."""
    parsed, problems = inspect_settings()
    messages: list[CheckMessage] = [
        (Error if problem.level == "error" else Warning)(
            str(problem), hint=problem.hint or None, id=problem.id
        )
        for problem in problems
    ]
    raw = getattr(settings, "HSQ_REFUNDS", None)
    merchants = raw.get("MERCHANTS") if isinstance(raw, Mapping) else None
    if isinstance(merchants, Mapping):
        for merchant_no, entry in merchants.items():
            if isinstance(merchant_no, str) and isinstance(entry, Mapping):
                messages.extend(_check_keys(merchant_no, entry))
    for merchant in parsed.MERCHANTS.values():
        messages.extend(_check_url(merchant))
    messages.extend(_check_notify_url(parsed))
    messages.extend(_check_rate_limit_cache(parsed))
    return messages


def _check_keys(merchant_no: str, entry: Mapping[str, Any]) -> list[CheckMessage]:
    """Load the keys of one merchant entry (even an incomplete one: report all at once)."""
    messages: list[CheckMessage] = []
    path = ("MERCHANTS", merchant_no)
    sign_key = entry.get("SIGN_KEY")
    if isinstance(sign_key, str) and sign_key.strip() == sign_key and sign_key:
        if not _SIGN_KEY.match(sign_key):
            messages.append(
                Warning(
                    f"{setting_path(*path, 'SIGN_KEY')}: does not look like HSQ's sign key "
                    "(32 hexadecimal characters)",
                    hint="Copy the 签名混淆KEY exactly as HSQ issued it.",
                    id=W004_SIGN_KEY_FORMAT,
                )
            )
    password = entry.get("PRIVATE_KEY_PASSWORD")
    private_key = entry.get("PRIVATE_KEY")
    if (
        private_key is not None
        and _present(private_key)
        and (password is None or isinstance(password, str))
    ):
        try:
            load_private_key(private_key, password or None)
        except ConfigurationError as exc:
            about_password = "password" in exc.message.lower()
            key = "PRIVATE_KEY_PASSWORD" if about_password else "PRIVATE_KEY"
            messages.append(
                Error(
                    f"{setting_path(*path, key)}: {_strip_prefix(exc.message)}",
                    hint=(
                        "Give the password HSQ sent with the .pfx file."
                        if about_password
                        else "Give the path to <merchantNo>_pri.pfx, or the PEM/base64 key text."
                    ),
                    id=E008_PRIVATE_KEY_PASSWORD if about_password else E009_PRIVATE_KEY,
                )
            )
    platform_cert = entry.get("PLATFORM_CERT")
    if platform_cert is not None and _present(platform_cert):
        try:
            load_platform_key(platform_cert)
        except ConfigurationError as exc:
            messages.append(
                Error(
                    f"{setting_path(*path, 'PLATFORM_CERT')}: {_strip_prefix(exc.message)}",
                    hint="Give the path to HSQ's MANDAO_<merchantNo>_pub.cer, or its PEM text.",
                    id=E012_PLATFORM_CERT,
                )
            )
    return messages


def _present(value: object) -> bool:
    """Missing or empty keys are reported by the setting's own checks (E006)."""
    return value is not None and not (isinstance(value, str | bytes) and not value.strip())


def _strip_prefix(message: str) -> str:
    """Key loaders start their messages with what they loaded; the path says that already."""
    for prefix in ("merchant private key: ", "platform key: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _check_url(merchant: MerchantSettings) -> list[CheckMessage]:
    if settings.DEBUG:
        return []
    url = merchant.base_url or ENVIRONMENTS.get(merchant.environment, "")
    parts = urlsplit(url)
    if parts.scheme == "https" and not _is_loopback(parts.hostname or ""):
        return []
    return [
        Warning(
            f"{setting_path('MERCHANTS', merchant.merchant_no)}: the gateway URL {url!r} is "
            "a local sandbox or plain http, and DEBUG is off",
            hint='In production leave BASE_URL out and set ENVIRONMENT to "production".',
            id=W003_GATEWAY_NOT_PRODUCTION,
        )
    ]


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_notify_url(parsed: HsqRefundsSettings) -> list[CheckMessage]:
    """``NOTIFY_URL``: https in production, not redirected, and routed to this app's
    notification view as it is: a redirect loses HSQ's POST (a client follows it with a GET, or
    not at all), so a path that only leads there after one is as wrong as one that never does."""
    url = parsed.NOTIFY_URL
    if url is None:
        return []
    messages: list[CheckMessage] = []
    parts = urlsplit(url)
    if parts.scheme != "https" and not settings.DEBUG:
        messages.append(
            Warning(
                f"{setting_path('NOTIFY_URL')}: is plain {parts.scheme} and DEBUG is off: HSQ's "
                "notifications would reach the site unencrypted",
                hint="Give the https URL at which the site receives HSQ's notifications.",
                id=W006_NOTIFY_URL_NOT_HTTPS,
            )
        )
    messages.extend(_check_notify_ssl_redirect(url))
    script, path = _split_script_prefix(parts.path or "/")
    view_name = _view_name(path)
    if view_name == NOTIFY_VIEW_NAME:
        return messages
    redirected = _redirected_path(path) if view_name is None else None
    if redirected is not None:
        there, because, fix = redirected
        fixed = urlunsplit(parts._replace(path=script + there))
        messages.append(
            Warning(
                f"{setting_path('NOTIFY_URL')}: its path {path!r} leads to no view, only "
                f"{there!r} leads to {NOTIFY_VIEW_NAME!r}: {because}; HSQ's notifications "
                "would not reach the app",
                hint=f"{fix} set {setting_path('NOTIFY_URL')} to {fixed!r}.",
                id=W007_NOTIFY_URL_VIEW,
            )
        )
        return messages
    found = f"the view {view_name!r}" if view_name else "no view"
    messages.append(
        Warning(
            f"{setting_path('NOTIFY_URL')}: its path {path!r} leads to {found} in this "
            f"project's URLconf, not to {NOTIFY_VIEW_NAME!r}: HSQ's notifications would "
            "not reach the app",
            hint=(
                f"Route a path to the app's notification view (URL name {NOTIFY_VIEW_NAME!r})"
                " in ROOT_URLCONF and give that path's full public URL."
            ),
            id=W007_NOTIFY_URL_VIEW,
        )
    )
    return messages


def _check_notify_ssl_redirect(url: str) -> list[CheckMessage]:
    """An ``http://`` ``NOTIFY_URL`` that ``SecurityMiddleware`` answers with a redirect."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not settings.SECURE_SSL_REDIRECT:
        return []
    if _SECURITY_MIDDLEWARE not in settings.MIDDLEWARE:
        return []
    # SecurityMiddleware matches the exemptions against request.path (with the script prefix),
    # without its leading slash.
    request_path = (parts.path or "/").lstrip("/")
    for pattern in settings.SECURE_REDIRECT_EXEMPT:
        try:
            if re.search(pattern, request_path):
                return []
        except (re.error, TypeError):
            continue
    https = urlunsplit(parts._replace(scheme="https"))
    return [
        Warning(
            f"{setting_path('NOTIFY_URL')}: is plain http and SECURE_SSL_REDIRECT is on: "
            f"SecurityMiddleware would answer HSQ's POST to {parts.path or '/'!r} with a "
            "redirect to https; HSQ's notifications would not reach the app",
            hint=(
                f"Set {setting_path('NOTIFY_URL')} to {https!r} (behind a proxy that terminates "
                "TLS, also set SECURE_PROXY_SSL_HEADER so that Django sees the request as https), "
                "or exempt its path in SECURE_REDIRECT_EXEMPT."
            ),
            id=W009_NOTIFY_URL_SSL_REDIRECT,
        )
    ]


def _view_name(path: str) -> str | None:
    """The URL name of the view a request to ``path`` reaches without a redirect, or ``None``.

    Resolved as ``LocaleMiddleware`` would: in the language of the path's prefix, else in
    ``LANGUAGE_CODE`` (what it activates for a path without one, and what is active without it).
    """
    from django.urls import Resolver404, resolve
    from django.utils import translation

    language = translation.get_language_from_path(path) or settings.LANGUAGE_CODE
    with translation.override(language):
        try:
            return resolve(path).view_name
        except Resolver404:
            return None


def _redirected_path(path: str) -> tuple[str, str, str] | None:
    """Where ``path`` (leading to no view) would lead to the notification view after a redirect
    of ``CommonMiddleware`` (``APPEND_SLASH``) or ``LocaleMiddleware`` (a language prefix of
    ``i18n_patterns``): that path, why the POST is lost, and what to change."""
    from django.utils import translation

    slash = "" if path.endswith("/") else "/"
    if slash and _view_name(path + slash) == NOTIFY_VIEW_NAME:
        return (
            path + slash,
            "CommonMiddleware redirects a POST without the trailing slash (APPEND_SLASH; an "
            "error when DEBUG is on), or it is not found",
            "Add the trailing slash:",
        )
    if not settings.USE_I18N or translation.get_language_from_path(path):
        return None
    try:  # the language LocaleMiddleware redirects a request without a preference to first
        default = translation.get_supported_language_variant(settings.LANGUAGE_CODE)
    except LookupError:
        default = settings.LANGUAGE_CODE
    for language in dict.fromkeys([default, *(code for code, _name in settings.LANGUAGES)]):
        for there in (f"/{language}{path}", f"/{language}{path}{slash}"):
            if _view_name(there) == NOTIFY_VIEW_NAME:
                return (
                    there,
                    "the app's URLs are inside i18n_patterns(), so the path resolves only "
                    "under a language prefix and LocaleMiddleware would redirect HSQ's POST",
                    "Include hsq_refunds.urls outside i18n_patterns() in ROOT_URLCONF, or",
                )
    return None


def _split_script_prefix(path: str) -> tuple[str, str]:
    """The script prefix (``FORCE_SCRIPT_NAME``: a site under a prefix) and the path as the
    URLconf sees it, without it."""
    script = (getattr(settings, "FORCE_SCRIPT_NAME", None) or "").rstrip("/")
    if script and (path == script or path.startswith(script + "/")):
        return script, path[len(script) :] or "/"
    return "", path


def _check_rate_limit_cache(parsed: HsqRefundsSettings) -> list[CheckMessage]:
    """``RATE_LIMIT`` holds across processes only through a cache that they share."""
    if parsed.RATE_LIMIT is None:
        return []
    alias = parsed.RATE_LIMIT_CACHE
    caches = getattr(settings, "CACHES", None) or {}
    if alias not in caches:
        return [
            Error(
                f"{setting_path('RATE_LIMIT_CACHE')}: {alias!r} is not an alias in CACHES, so "
                f"{setting_path('RATE_LIMIT')} cannot be counted",
                hint=f"Use one of {', '.join(map(repr, caches)) or 'the CACHES aliases'}.",
                id=E013_RATE_LIMIT_CACHE,
            )
        ]
    backend = caches[alias].get("BACKEND", "") if isinstance(caches[alias], Mapping) else ""
    if backend not in _LOCAL_CACHES:
        return []
    return [
        Warning(
            f"{setting_path('RATE_LIMIT_CACHE')}: the cache {alias!r} is {backend.rsplit('.')[-1]}"
            f", which processes do not share: {setting_path('RATE_LIMIT')} then holds per "
            "process, and several processes together query HSQ faster than it",
            hint=(
                "Point RATE_LIMIT_CACHE at a cache every process shares (Redis, Memcached or "
                "the database cache)."
            ),
            id=W008_RATE_LIMIT_CACHE_LOCAL,
        )
    ]


# --------------------------------------------------------------------------- django-q2


def q_cluster_options() -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``Q_CLUSTER`` and each of its ``ALT_CLUSTERS``, as django-q2 merges them.

    Yields ``(path, options)`` where ``path`` is how a message names the dict, e.g.
    ``Q_CLUSTER`` or ``Q_CLUSTER["ALT_CLUSTERS"]["long"]``.
    """
    conf = getattr(settings, "Q_CLUSTER", None)
    if not isinstance(conf, Mapping):
        return
    yield "Q_CLUSTER", conf
    alt = conf.get("ALT_CLUSTERS")
    if isinstance(alt, Mapping):
        for name, options in alt.items():
            if isinstance(options, Mapping):
                yield f'Q_CLUSTER["ALT_CLUSTERS"]["{name}"]', {**conf, **options}


def _seconds(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@register(CHECK_TAG)
def check_q_cluster(app_configs: Iterable[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """``Q_CLUSTER`` timings that would run a sync task twice, or cut batches short."""
    if not apps.is_installed("django_q"):
        return []
    messages: list[CheckMessage] = []
    for path, options in q_cluster_options():
        messages.extend(_check_timeout_retry(path, options))
        messages.extend(_check_batch_time(path, options))
    return messages


def _check_timeout_retry(path: str, options: Mapping[str, Any]) -> list[CheckMessage]:
    timeout = _seconds(options.get("timeout"))
    retry = _seconds(options.get("retry", DJANGO_Q_DEFAULT_RETRY))
    if timeout is not None and retry is not None and timeout < retry:
        return []
    if timeout is None:
        problem = f'{path}["timeout"] is not set: a stuck sync task is never stopped'
    else:
        shown_retry = options.get("retry", f"{DJANGO_Q_DEFAULT_RETRY} (the default)")
        problem = (
            f'{path}["timeout"] ({options.get("timeout")}) is not below {path}["retry"] '
            f"({shown_retry}): the broker hands a task that is still running to another "
            "worker, which then syncs the same refunds again"
        )
    return [
        Warning(
            problem,
            hint=(
                f'Set {path}["timeout"] to the longest a sync task may run (e.g. 240) and '
                f'{path}["retry"] above it (e.g. 300).'
            ),
            id=W021_Q_TIMEOUT_RETRY,
        )
    ]


def _check_batch_time(path: str, options: Mapping[str, Any]) -> list[CheckMessage]:
    """A batch task must be able to finish when every query in it runs to its deadline.

    A batch of ``TASK_BATCH_SIZE`` refunds is queried ``CONCURRENCY`` at a time, so in
    ``ceil(TASK_BATCH_SIZE / CONCURRENCY)`` rounds; a round lasts as long as its slowest query,
    at most ``QUERY_DEADLINE`` (by default every attempt's connect and read timeouts and the
    waits between retries).
    """
    timeout = _seconds(options.get("timeout"))
    if timeout is None:
        return []
    policy = inspect_settings()[0]
    rounds = math.ceil(policy.TASK_BATCH_SIZE / policy.CONCURRENCY)
    needed = rounds * policy.QUERY_DEADLINE
    if timeout >= needed:
        return []
    return [
        Warning(
            f'{path}["timeout"] ({options["timeout"]}) is shorter than a sync batch may need: '
            f"{setting_path('TASK_BATCH_SIZE')} ({policy.TASK_BATCH_SIZE}) refunds, "
            f"{setting_path('CONCURRENCY')} ({policy.CONCURRENCY}) at a time, take up to "
            f"{needed:g} s when every query runs to {setting_path('QUERY_DEADLINE')} "
            f"({policy.QUERY_DEADLINE:g} s: connect timeouts, reads and retries, "
            f"{setting_path('CONNECT_TIMEOUT')} {policy.CONNECT_TIMEOUT:g} s, "
            f"{setting_path('READ_TIMEOUT')} {policy.READ_TIMEOUT:g} s, "
            f"{setting_path('RETRIES')} {policy.RETRIES}); the rest of a batch that is cut off "
            "waits for a later cycle",
            hint=(
                f'Raise {path}["timeout"] to {needed:g} or more (and "retry" above it), or lower '
                'HSQ_REFUNDS["TASK_BATCH_SIZE"], HSQ_REFUNDS["QUERY_DEADLINE"] or the timeouts '
                "and retries it is computed from."
            ),
            id=W022_Q_BATCH_TIMEOUT,
        )
    ]


@register(Tags.database, CHECK_TAG)
def check_schedule_runner(
    app_configs: Iterable[Any] | None = None,
    databases: Iterable[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """The schedule is installed but ``django_q`` is not: nothing will ever run it.

    A database check (``migrate``, or ``check --database default``). Without ``django_q`` in
    ``INSTALLED_APPS`` its models cannot be used, so the table is looked up and read directly,
    and a database that cannot answer is skipped rather than reported.
    """
    if databases is None or apps.is_installed("django_q"):
        return []
    messages: list[CheckMessage] = []
    for alias in databases:
        if _schedule_row_exists(alias):
            messages.append(
                Warning(
                    f"the django-q2 schedule {SCHEDULE_NAME!r} is in database {alias!r}, but "
                    "'django_q' is not in INSTALLED_APPS: no scheduled sync will run",
                    hint=(
                        "Add 'django_q' to INSTALLED_APPS and run 'manage.py qcluster'; or, "
                        "to stop scheduled syncs, run 'manage.py hsq_refunds_schedule --remove' "
                        "while django_q is still installed, or delete that row from "
                        f"{_SCHEDULE_TABLE}. Use cron with 'manage.py sync_refunds' instead."
                    ),
                    id=W020_SCHEDULE_NOT_RUN,
                )
            )
    return messages


def _schedule_row_exists(alias: str) -> bool:
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            if _SCHEDULE_TABLE not in connection.introspection.table_names(cursor):
                return False
            table = connection.ops.quote_name(_SCHEDULE_TABLE)
            cursor.execute(
                f"SELECT 1 FROM {table} WHERE name = %s OR func = %s",  # noqa: S608
                [SCHEDULE_NAME, SCHEDULE_FUNC],
            )
            return cursor.fetchone() is not None
    except DatabaseError:
        logger.debug("could not look for the schedule in database %r", alias, exc_info=True)
        return False
