"""Settings of the example project: a merchant's Django site that tracks its HSQ refunds.

Everything a deployment changes comes from the environment, so the same file runs the local
demo and a real merchant account:

- ``HSQ_MERCHANT_NO``, ``HSQ_SIGN_KEY``, ``HSQ_PRIVATE_KEY`` (a path or the key text),
  ``HSQ_PRIVATE_KEY_PASSWORD``, ``HSQ_PLATFORM_CERT`` and ``HSQ_BASE_URL`` or ``HSQ_ENVIRONMENT``
  (``production``, ``test`` or ``pre``; ``test`` when neither is set): a real merchant account.
  Without ``HSQ_MERCHANT_NO`` the project uses the local sandbox gateway, with keys generated
  on first run under ``var/sandbox/`` and the gateway at ``http://127.0.0.1:$HSQ_SANDBOX_PORT``
  (8765 by default).
- ``HSQ_NOTIFY_URL``: where HSQ notifies the site that a refund finished (``NOTIFY_URL``, the
  view ``hsq_refunds:refund_notify`` at ``/hsq/refund-notify/``). With the sandbox it defaults
  to ``http://127.0.0.1:$EXAMPLE_PORT/hsq/refund-notify/`` (``make serve``'s runserver; 8000 by
  default); a real merchant account gets no notifications without it, only polling.
- ``DATABASE_URL``: ``postgres://user:password@host:5432/name``; SQLite in ``var/`` otherwise.
- ``DJANGO_SECRET_KEY`` (generated into ``var/secret_key`` when unset), ``DJANGO_DEBUG``
  (default on), ``DJANGO_ALLOWED_HOSTS`` (comma-separated), ``DJANGO_LANGUAGE_CODE``.
- ``EXAMPLE_VAR_DIR``: where the example keeps its state (default ``example_project/var/``).
- ``EXAMPLE_LOG_LEVEL``: how much of ``hsq_refunds``' logging reaches the console.
"""

from __future__ import annotations

import os
from typing import Any

from example_project import environment

VAR_DIR = environment.var_dir()

SECRET_KEY = environment.secret_key(VAR_DIR)
DEBUG = environment.env_flag("DJANGO_DEBUG", default=True)
ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "hsq_refunds",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions, before common: the browser's Accept-Language picks English or Chinese.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {"default": environment.database_settings(VAR_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# English by default; Simplified Chinese for browsers that ask for it (the app ships both).
LANGUAGE_CODE = os.environ.get("DJANGO_LANGUAGE_CODE", "en-us")
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
USE_I18N = True
# HSQ works in Beijing time; the database stores UTC.
TIME_ZONE = "Asia/Shanghai"
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# django-q2 with the database as its broker: no other server to run. A sync run must end
# (``timeout``) before the broker hands its task to another worker (``retry``).
Q_CLUSTER = {
    "name": "hsq_refunds_example",
    "orm": "default",
    "workers": 2,
    # A batch of TASK_BATCH_SIZE at CONCURRENCY, each query up to QUERY_DEADLINE (check W022).
    "timeout": 1600,
    "retry": 1800,
    "max_attempts": 1,
    "poll": 1,
    # After downtime, run a missed schedule once, not once per missed minute.
    "catch_up": False,
    "save_limit": 200,
    "label": "Django Q",
}


def _hsq_refunds() -> dict[str, Any]:
    """``HSQ_REFUNDS`` for the merchant account in the environment, or for the sandbox.

    Settings missing from the environment are left out rather than guessed: the app's system
    checks then name each one (``manage.py check``).
    """
    notify = _notify_url()
    where_notified = {"NOTIFY_URL": notify} if notify else {}
    if environment.uses_sandbox():
        credentials = environment.sandbox_credentials(VAR_DIR)
        base_url = environment.sandbox_base_url(environment.sandbox_port())
        return {**credentials.settings_dict(base_url), **where_notified}
    account = {
        name: os.environ[variable]
        for name, variable in (
            ("SIGN_KEY", "HSQ_SIGN_KEY"),
            ("PRIVATE_KEY", "HSQ_PRIVATE_KEY"),
            ("PRIVATE_KEY_PASSWORD", "HSQ_PRIVATE_KEY_PASSWORD"),
            ("PLATFORM_CERT", "HSQ_PLATFORM_CERT"),
        )
        if os.environ.get(variable)
    }
    where: dict[str, str] = (
        {"BASE_URL": os.environ["HSQ_BASE_URL"]}
        if os.environ.get("HSQ_BASE_URL")
        else {"ENVIRONMENT": os.environ.get("HSQ_ENVIRONMENT") or "test"}
    )
    return {
        **where,
        **where_notified,
        "MERCHANTS": {os.environ["HSQ_MERCHANT_NO"].strip(): account},
    }


def _notify_url() -> str | None:
    """``$HSQ_NOTIFY_URL``; with the sandbox, the local site's notification view by default.

    Plain http on loopback is what the sandbox reaches; ``manage.py check`` warns about plain
    http only with ``DEBUG`` off (``hsq_refunds.W006``), as it should in production.
    """
    configured = os.environ.get("HSQ_NOTIFY_URL", "").strip()
    if configured:
        return configured
    if environment.uses_sandbox():
        return environment.notify_url(environment.example_port())
    return None


HSQ_REFUNDS = _hsq_refunds()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "console": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "console"},
    },
    "loggers": {
        "hsq_refunds": {
            "handlers": ["console"],
            "level": os.environ.get("EXAMPLE_LOG_LEVEL", "WARNING").upper(),
            "propagate": False,
        },
    },
}
