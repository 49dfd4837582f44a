"""System checks of the ``HSQ_REFUNDS`` setting, run by ``manage.py check`` and ``migrate``.

Every key is loaded here, so a wrong path, a wrong password or a mixed-up certificate shows at
deploy time instead of on the first query. Each message names the exact setting and what is
wrong with it, and never contains key material.

========================= =================================================================
``hsq_refunds.E001``      ``HSQ_REFUNDS`` is not a dict
``hsq_refunds.E003``      unknown ``ENVIRONMENT``
``hsq_refunds.E004``      ``BASE_URL`` is not an http(s) URL
``hsq_refunds.E005``      ``MERCHANTS`` or one of its entries is malformed
``hsq_refunds.E006``      a required merchant key is missing or empty
``hsq_refunds.E007``      ``SIGN_KEY`` is not usable
``hsq_refunds.E008``      ``PRIVATE_KEY_PASSWORD`` is wrong, missing or not a string
``hsq_refunds.E009``      ``PRIVATE_KEY`` cannot be read or is not a private key
``hsq_refunds.E010``      an optional key has a bad type or value
``hsq_refunds.E011``      ``QUERY_INTERVALS`` or ``ERROR_BACKOFF`` is malformed
``hsq_refunds.E012``      ``PLATFORM_CERT`` cannot be read or is not a public key
``hsq_refunds.W001``      unknown setting name (ignored)
``hsq_refunds.W002``      no merchants configured
``hsq_refunds.W003``      a sandbox or plain-http gateway URL while ``DEBUG`` is off
``hsq_refunds.W004``      ``SIGN_KEY`` does not look like HSQ's 32 hex characters
``hsq_refunds.W005``      ``CLAIM_LEASE`` is too short for the timeouts and retries
========================= =================================================================
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .conf import MerchantSettings, inspect_settings, setting_path
from .gateway import ENVIRONMENTS, ConfigurationError, load_platform_key, load_private_key

__all__ = ["check_settings"]

_SIGN_KEY = re.compile(r"^[0-9a-fA-F]{32}$")


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
                    id="hsq_refunds.W004",
                )
            )
    password = entry.get("PRIVATE_KEY_PASSWORD")
    private_key = entry.get("PRIVATE_KEY")
    if _present(private_key) and (password is None or isinstance(password, str)):
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
                    id="hsq_refunds.E008" if about_password else "hsq_refunds.E009",
                )
            )
    platform_cert = entry.get("PLATFORM_CERT")
    if _present(platform_cert):
        try:
            load_platform_key(platform_cert)
        except ConfigurationError as exc:
            messages.append(
                Error(
                    f"{setting_path(*path, 'PLATFORM_CERT')}: {_strip_prefix(exc.message)}",
                    hint="Give the path to HSQ's MANDAO_<merchantNo>_pub.cer, or its PEM text.",
                    id="hsq_refunds.E012",
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
            id="hsq_refunds.W003",
        )
    ]


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
