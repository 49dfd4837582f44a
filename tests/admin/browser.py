"""Debian's Chromium driven by Playwright, for the admin's and the operations' browser tests.

The ``browser`` and ``superuser`` fixtures (the conftests of ``tests/admin`` and ``tests/ops``
import them), and :func:`log_in`, which signs the superuser in through the admin's login page.
Screenshots go to a temporary folder, or to ``docs/screenshots/`` (the README's pictures) when
``HSQ_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.services import CHECKOUT_KEY

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("HSQ_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / f"hsq_refunds_screenshots-{CHECKOUT_KEY}"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
PASSWORD = "correct horse battery staple"


@pytest.fixture
def browser(monkeypatch):
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
        )
    # Playwright's sync API runs an event loop in this thread; the ORM calls made here are
    # ordinary synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def superuser(transactional_db, django_user_model):
    return django_user_model.objects.create_superuser("admin", "admin@example.com", PASSWORD)


def log_in(page, server_url: str, path: str) -> None:
    """Sign in as the ``superuser`` on the login page of ``server_url``; wait until at ``path``."""
    page.goto(f"{server_url}/admin/login/?next={path}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{path}")
