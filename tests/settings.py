"""Django settings for the test suite.

SQLite by default. ``HSQ_TEST_DATABASE=postgres`` switches to the throwaway PostgreSQL server
that ``tests/services.py`` starts (its DSN in ``HSQ_TEST_PG_DSN``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "Asia/Shanghai"
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
USE_I18N = True

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
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

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

STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Test databases are named per process so that concurrent runs never share one, and SQLite's
# files per checkout too (``CHECKOUT_KEY``), so that two checkouts side by side never meet. Child
# processes started by a test (``manage.py sync_refunds``, ``qcluster``) are pointed at the test
# database with ``HSQ_TEST_PG_NAME`` or ``HSQ_TEST_SQLITE_NAME``: see ``tests/processes.py``.
_RUN_ID = os.environ.get("HSQ_TEST_RUN_ID", str(os.getpid()))
_SQLITE_DIR = Path(tempfile.gettempdir())

if os.environ.get("HSQ_TEST_DATABASE") == "postgres":
    from tests.services import postgres_settings

    DATABASES = {"default": postgres_settings()}
    DATABASES["default"]["TEST"] = {"NAME": f"test_hsq_refunds_{_RUN_ID}"}
else:
    # A file, not ":memory:", so that child processes see what a test wrote.
    from tests.services import CHECKOUT_KEY

    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get(
                "HSQ_TEST_SQLITE_NAME", str(_SQLITE_DIR / f"hsq_refunds_{CHECKOUT_KEY}.sqlite3")
            ),
            "TEST": {
                "NAME": str(_SQLITE_DIR / f"test_hsq_refunds_{CHECKOUT_KEY}_{_RUN_ID}.sqlite3")
            },
            "OPTIONS": {"timeout": 30},
        }
    }

Q_CLUSTER = {
    "name": "hsq_refunds_tests",
    "orm": "default",
    "sync": True,
    "timeout": 240,
    "retry": 300,
    "workers": 2,
}

# Filled per test by fixtures; empty means "not configured". Child processes receive the
# test's value as JSON in ``HSQ_TEST_REFUNDS_JSON`` (see ``tests/processes.py``).
HSQ_REFUNDS: dict = json.loads(os.environ.get("HSQ_TEST_REFUNDS_JSON") or '{"MERCHANTS": {}}')
