"""The ids of the app's system checks, and what each means.

Every check id is a constant here (``E004_BASE_URL = "hsq_refunds.E004"``), used wherever the
check is raised, so that ``grep E004`` finds both: most while ``HSQ_REFUNDS`` is read
(:mod:`hsq_refunds.conf`, :mod:`hsq_refunds.readers`), the rest by :mod:`hsq_refunds.checks`.
:data:`CHECK_IDS` is the table of the settings reference.
"""

from __future__ import annotations

from collections.abc import Mapping

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
