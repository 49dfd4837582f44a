"""HSQ's notification behind the middleware a shop may run, over real HTTP: each stack still
answers HSQ's POST with 200 ``SUCCESS`` and records the refund, never a redirect or an error.

Each test starts its own live server (pytest-django's ``LiveServer``) after the settings under
test are in place. The session's ``live_server`` would not do: its ``WSGIHandler`` loads
``MIDDLEWARE`` (and ``SecurityMiddleware`` reads ``SECURE_SSL_REDIRECT``) once, when the server
starts; ``ROOT_URLCONF`` and ``ATOMIC_REQUESTS`` are read per request. Every stack is Django's
``startproject`` one plus what the test adds, and each test first shows that what it added is in
effect (a probe view of the shop's is redirected, runs in a transaction, ...).

Where a shop's setting would redirect the POST (plain http under ``SECURE_SSL_REDIRECT``, a
path without its trailing slash under ``APPEND_SLASH``, the app's URLs inside
``i18n_patterns``), the tests show the redirect over HTTP and that ``manage.py check`` names it
(``hsq_refunds.W009``, ``hsq_refunds.W007``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from django.core.checks import run_checks
from django.db import connections
from django.urls import clear_url_caches, set_urlconf
from pytest_django.live_server_helper import LiveServer

from hsq_refunds.check_ids import W007_NOTIFY_URL_VIEW, W009_NOTIFY_URL_SSL_REDIRECT
from hsq_refunds.models import Refund
from hsq_refunds.views import refund_notify

from .conftest import NOTIFY_PATH

pytestmark = pytest.mark.django_db(transaction=True)

#: ``MIDDLEWARE`` of a project made by ``django-admin startproject``.
STARTPROJECT = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
LOGIN_REQUIRED = "django.contrib.auth.middleware.LoginRequiredMiddleware"
LOCALE = "django.middleware.locale.LocaleMiddleware"
WITH_PROBE = "tests.notify.urls_middleware"


@pytest.fixture
def refund(refunds) -> Refund:
    [row] = refunds(
        [{"transNo": "R1", "status": "PROCESSING", "timeline": [{"status": "PROCESSING"}]}]
    )
    return row


@pytest.fixture
def shop(settings, transactional_db) -> Iterator[Callable[..., str]]:
    """``shop(middleware=[...], **django_settings)``: those settings applied, then a live server
    started with them; returns its URL (``http://localhost:<port>``)."""
    servers: list[LiveServer] = []

    def start(*, middleware: list[str], **django_settings: Any) -> str:
        settings.MIDDLEWARE = middleware
        for name, value in django_settings.items():
            setattr(settings, name, value)
        if "ROOT_URLCONF" in django_settings:
            clear_url_caches()
            set_urlconf(None)
        server = LiveServer("localhost")
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()
    clear_url_caches()
    set_urlconf(None)


def post(url: str, form: dict[str, str], **kwargs: Any) -> requests.Response:
    """One POST, as HSQ sends it: a redirect is an answer, never followed."""
    return requests.post(url, data=form, allow_redirects=False, timeout=30, **kwargs)


def get(url: str) -> requests.Response:
    return requests.get(url, allow_redirects=False, timeout=30)


def assert_recorded(reply: requests.Response, refund: Refund) -> None:
    assert (reply.status_code, reply.text) == (200, "SUCCESS"), (reply.status_code, reply.text)
    refund.refresh_from_db()
    assert refund.status == "SUCCESS" and refund.final_source == "notification"


def assert_unchanged(refund: Refund) -> None:
    refund.refresh_from_db()
    assert refund.status == "PROCESSING" and not refund.queries.exists()


def notify_checks(configure, url: str) -> list:
    """What ``manage.py check`` says about ``NOTIFY_URL=url`` that is about a redirect."""
    configure(NOTIFY_URL=url)
    redirects = (W007_NOTIFY_URL_VIEW, W009_NOTIFY_URL_SSL_REDIRECT)
    return [m for m in run_checks(tags=["hsq_refunds"]) if m.id in redirects]


def test_login_required_middleware_lets_the_notification_in(shop, refund, notification):
    url = shop(middleware=[*STARTPROJECT, LOGIN_REQUIRED], ROOT_URLCONF=WITH_PROBE)
    probe = get(url + "/probe/")
    assert probe.status_code == 302 and probe.headers["Location"].startswith("/accounts/login/")

    assert_recorded(post(url + NOTIFY_PATH, notification("R1")), refund)


def test_atomic_requests_leave_the_view_to_commit_its_own_write(
    shop, refund, notification, monkeypatch
):
    # DATABASES itself cannot be overridden: its dicts are the connections' settings.
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)
    assert connections["default"].settings_dict["ATOMIC_REQUESTS"] is True
    url = shop(middleware=STARTPROJECT, ROOT_URLCONF=WITH_PROBE)
    assert get(url + "/probe/").text == "atomic"
    assert "default" in refund_notify._non_atomic_requests  # type: ignore[attr-defined]

    assert_recorded(post(url + NOTIFY_PATH, notification("R1")), refund)


def test_ssl_redirect_behind_a_tls_proxy_lets_the_https_notification_in(
    shop, refund, notification, configure
):
    """In production HSQ POSTs over https; a proxy that terminates TLS says so in
    ``X-Forwarded-Proto``, which ``SECURE_PROXY_SSL_HEADER`` makes Django trust. Without it
    the POST is redirected to https, and lost: ``W009`` warns of an http ``NOTIFY_URL``."""
    url = shop(
        middleware=STARTPROJECT,
        SECURE_SSL_REDIRECT=True,
        SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
    )
    form = notification("R1")

    plain = post(url + NOTIFY_PATH, form)
    assert plain.status_code == 301
    assert plain.headers["Location"] == url.replace("http://", "https://", 1) + NOTIFY_PATH
    assert_unchanged(refund)
    [warning] = notify_checks(configure, url + NOTIFY_PATH)
    assert warning.id == W009_NOTIFY_URL_SSL_REDIRECT and "SECURE_SSL_REDIRECT" in warning.msg
    assert notify_checks(configure, url.replace("http://", "https://", 1) + NOTIFY_PATH) == []

    assert_recorded(post(url + NOTIFY_PATH, form, headers={"X-Forwarded-Proto": "https"}), refund)


def test_locale_middleware_with_prefixed_i18n_patterns_lets_the_notification_in(
    shop, refund, notification, configure
):
    """The app's URLs outside ``i18n_patterns(..., prefix_default_language=True)``, as
    :mod:`tests.notify.urls_i18n` has them: the shop's pages are redirected to ``/en/...``,
    the notification view is not. Inside them it would be redirected (the next test), and
    ``W007`` says so."""
    middleware = [*STARTPROJECT]
    middleware.insert(middleware.index("django.middleware.common.CommonMiddleware"), LOCALE)
    url = shop(middleware=middleware, ROOT_URLCONF="tests.notify.urls_i18n")
    probe = get(url + "/probe/")
    assert probe.status_code == 302 and probe.headers["Location"] == "/en/probe/"
    assert notify_checks(configure, url + NOTIFY_PATH) == []

    assert_recorded(post(url + NOTIFY_PATH, notification("R1")), refund)


def test_inside_prefixed_i18n_patterns_the_notification_is_redirected_and_w007_says_so(
    shop, refund, notification, configure
):
    middleware = [*STARTPROJECT]
    middleware.insert(middleware.index("django.middleware.common.CommonMiddleware"), LOCALE)
    url = shop(middleware=middleware, ROOT_URLCONF="tests.notify.urls_i18n_inside")
    form = notification("R1")

    redirected = post(url + NOTIFY_PATH, form)
    assert redirected.status_code == 302
    assert redirected.headers["Location"] == "/en" + NOTIFY_PATH
    assert_unchanged(refund)
    [warning] = notify_checks(configure, url + NOTIFY_PATH)
    assert warning.id == W007_NOTIFY_URL_VIEW
    assert f"'/en{NOTIFY_PATH}'" in warning.msg and "i18n_patterns" in warning.msg
    assert notify_checks(configure, url + "/en" + NOTIFY_PATH) == []

    assert_recorded(post(url + "/en" + NOTIFY_PATH, form), refund)


def test_append_slash_the_url_as_configured_lets_the_notification_in(
    shop, refund, notification, configure, settings
):
    """``CommonMiddleware`` with ``APPEND_SLASH`` cannot pass a POST on to the slash-ending
    URL: it redirects it (the body is lost), or raises ``RuntimeError`` when ``DEBUG`` is on.
    The app's URL is matched as it is configured, with its slash; ``W007`` names a
    ``NOTIFY_URL`` without it."""
    url = shop(middleware=STARTPROJECT, APPEND_SLASH=True)
    form = notification("R1")
    slashless = NOTIFY_PATH.rstrip("/")

    redirected = post(url + slashless, form)
    assert redirected.status_code == 301 and redirected.headers["Location"] == NOTIFY_PATH
    settings.DEBUG = True
    assert post(url + slashless, form).status_code == 500
    settings.DEBUG = False
    assert_unchanged(refund)
    [warning] = notify_checks(configure, url + slashless)
    assert warning.id == W007_NOTIFY_URL_VIEW
    assert f"'{slashless}'" in warning.msg and f"to '{url}{NOTIFY_PATH}'" in warning.hint
    assert warning.hint.startswith("Add the trailing slash")
    assert notify_checks(configure, url + NOTIFY_PATH) == []

    assert_recorded(post(url + NOTIFY_PATH, form), refund)
