"""Notification fixtures: the view behind a real HTTP server (pytest-django's ``live_server``);
the signed forms (``notification``, ``sign_form``) are suite-wide, in ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

NOTIFY_PATH = "/hsq/refund-notify/"


@pytest.fixture
def notify_url(live_server) -> str:
    return live_server.url + NOTIFY_PATH


@pytest.fixture
def post(notify_url) -> Callable[..., requests.Response]:
    """``post(form)``: the form POSTed to the view over real HTTP."""
    session = requests.Session()

    def send(form: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("data", form)
        return session.post(notify_url, timeout=30, **kwargs)

    yield send
    session.close()
