"""System checks of the ``HSQ_REFUNDS`` setting, run by ``manage.py check`` and ``migrate``, and
the one list of the app's check ids.

Every key is loaded here, so a wrong path, a wrong password or a mixed-up certificate shows at
deploy time instead of on the first query. Each message names the exact setting and what is
wrong with it, and never contains key material.

Every check id is a constant below (``E004_BASE_URL = "hsq_refunds.E004"``), used wherever the
check is raised, so that ``grep E004`` finds both; :data:`CHECK_IDS` says what each means (the
README's settings reference lists them: ``python -m hsq_refunds.conf``). Most are raised while
the setting is read (:mod:`hsq_refunds.conf`); the django-q2 ones (``W020`` to ``W022``) by
:mod:`hsq_refunds.scheduling`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .gateway import ENVIRONMENTS, ConfigurationError, load_platform_key, load_private_key

if TYPE_CHECKING:
    from .conf import HsqRefundsSettings, MerchantSettings

__all__ = [
    "CHECK_IDS",
    "E001_NOT_A_DICT",
    "E003_ENVIRONMENT",
    "E004_BASE_URL",
    "E005_MERCHANTS",
    "E006_MERCHANT_KEY_MISSING",
    "E007_SIGN_KEY",
    "E008_PRIVATE_KEY_PASSWORD",
    "E009_PRIVATE_KEY",
    "E010_VALUE",
    "E011_STEPS",
    "E012_PLATFORM_CERT",
    "E013_RATE_LIMIT_CACHE",
    "NOTIFY_VIEW_NAME",
    "W001_UNKNOWN_KEY",
    "W002_NO_MERCHANTS",
    "W003_GATEWAY_NOT_PRODUCTION",
    "W004_SIGN_KEY_FORMAT",
    "W005_CLAIM_LEASE",
    "W006_NOTIFY_URL_NOT_HTTPS",
    "W007_NOTIFY_URL_VIEW",
    "W008_RATE_LIMIT_CACHE_LOCAL",
    "W009_NOTIFY_URL_SSL_REDIRECT",
    "W020_SCHEDULE_NOT_RUN",
    "W021_Q_TIMEOUT_RETRY",
    "W022_Q_BATCH_TIMEOUT",
    "check_settings",
]

E001_NOT_A_DICT = "hsq_refunds.E001"
E003_ENVIRONMENT = "hsq_refunds.E003"
E004_BASE_URL = "hsq_refunds.E004"
E005_MERCHANTS = "hsq_refunds.E005"
E006_MERCHANT_KEY_MISSING = "hsq_refunds.E006"
E007_SIGN_KEY = "hsq_refunds.E007"
E008_PRIVATE_KEY_PASSWORD = "hsq_refunds.E008"  # noqa: S105 - a check id, not a password
E009_PRIVATE_KEY = "hsq_refunds.E009"
E010_VALUE = "hsq_refunds.E010"
E011_STEPS = "hsq_refunds.E011"
E012_PLATFORM_CERT = "hsq_refunds.E012"
E013_RATE_LIMIT_CACHE = "hsq_refunds.E013"
W001_UNKNOWN_KEY = "hsq_refunds.W001"
W002_NO_MERCHANTS = "hsq_refunds.W002"
W003_GATEWAY_NOT_PRODUCTION = "hsq_refunds.W003"
W004_SIGN_KEY_FORMAT = "hsq_refunds.W004"
W005_CLAIM_LEASE = "hsq_refunds.W005"
W006_NOTIFY_URL_NOT_HTTPS = "hsq_refunds.W006"
W007_NOTIFY_URL_VIEW = "hsq_refunds.W007"
W008_RATE_LIMIT_CACHE_LOCAL = "hsq_refunds.W008"
W009_NOTIFY_URL_SSL_REDIRECT = "hsq_refunds.W009"
W020_SCHEDULE_NOT_RUN = "hsq_refunds.W020"
W021_Q_TIMEOUT_RETRY = "hsq_refunds.W021"
W022_Q_BATCH_TIMEOUT = "hsq_refunds.W022"

#: What each check id means, in the order of the ids.
CHECK_IDS: Mapping[str, str] = {
    E001_NOT_A_DICT: "`HSQ_REFUNDS` is not a dict",
    E003_ENVIRONMENT: "unknown `ENVIRONMENT`",
    E004_BASE_URL: "`BASE_URL` is not an http(s) URL with a host, or holds credentials or spaces",
    E005_MERCHANTS: "`MERCHANTS` or one of its entries is malformed (merchant numbers included)",
    E006_MERCHANT_KEY_MISSING: "a required merchant key is missing or empty",
    E007_SIGN_KEY: "`SIGN_KEY` is not usable",
    E008_PRIVATE_KEY_PASSWORD: "`PRIVATE_KEY_PASSWORD` is wrong, missing or not a string",
    E009_PRIVATE_KEY: "`PRIVATE_KEY` cannot be read or is not a private key",
    E010_VALUE: "an optional key has a bad type or value",
    E011_STEPS: "`QUERY_INTERVALS` or `ERROR_BACKOFF` is malformed",
    E012_PLATFORM_CERT: "`PLATFORM_CERT` cannot be read or is not a public key",
    E013_RATE_LIMIT_CACHE: "`RATE_LIMIT` is set and `RATE_LIMIT_CACHE` is not an alias in `CACHES`",
    W001_UNKNOWN_KEY: "unknown setting name (ignored)",
    W002_NO_MERCHANTS: "no merchants configured",
    W003_GATEWAY_NOT_PRODUCTION: "a sandbox or plain-http gateway URL while `DEBUG` is off",
    W004_SIGN_KEY_FORMAT: "`SIGN_KEY` does not look like HSQ's 32 hex characters",
    W005_CLAIM_LEASE: "`CLAIM_LEASE` is shorter than twice `QUERY_DEADLINE`",
    W006_NOTIFY_URL_NOT_HTTPS: "`NOTIFY_URL` is not https while `DEBUG` is off",
    W007_NOTIFY_URL_VIEW: "`NOTIFY_URL` does not lead to the view `hsq_refunds:refund_notify`",
    W008_RATE_LIMIT_CACHE_LOCAL: (
        "`RATE_LIMIT` is set and its cache (`RATE_LIMIT_CACHE`) is not shared between processes"
    ),
    W009_NOTIFY_URL_SSL_REDIRECT: (
        "`NOTIFY_URL` is plain http and `SECURE_SSL_REDIRECT` would redirect HSQ's POST to https"
    ),
    W020_SCHEDULE_NOT_RUN: (
        "the django-q2 schedule is in the database but `django_q` is not installed"
    ),
    W021_Q_TIMEOUT_RETRY: '`Q_CLUSTER["timeout"]` is missing or not below `["retry"]`',
    W022_Q_BATCH_TIMEOUT: (
        '`Q_CLUSTER["timeout"]` is shorter than a batch of `TASK_BATCH_SIZE` refunds may take '
        "with a gateway that answers at `QUERY_DEADLINE`"
    ),
}

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


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every problem in ``HSQ_REFUNDS``, with each merchant's keys actually loaded."""
    from .conf import inspect_settings

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
    from .conf import setting_path

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
    from .conf import setting_path

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
    from .conf import setting_path

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
    from .conf import setting_path

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
    from .conf import setting_path

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
