"""Applying for a refund in a real browser: Debian's Chromium, the live server, the sandbox over
HTTP. From the refund list to the form in yuan, the confirmation, and the new refund's page.

Saves a screenshot of the confirmation in each language: in a temporary folder, or in
``docs/screenshots/`` when ``HSQ_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from hsq_refunds.models import Refund

from .browser import SCREENSHOTS, log_in

pytestmark = pytest.mark.browser

ORDER = "PO202406010001"


@pytest.fixture
def earlier_refund(transactional_db, sandbox) -> Refund:
    """¥50.00 of the order's ¥128.00 already applied for (from code)."""
    return Refund.objects.apply(
        trans_no="RF202406010000001", orig_trans_no=ORDER, orig_amount=12800, amount=5000
    )


@pytest.mark.parametrize(
    ("locale", "language", "texts"),
    [
        (
            "en-US",
            "en",
            {"link": "Apply for a refund", "status": "Processing", "reason": "Parcel damaged"},
        ),
        ("zh-CN", "zh-hans", {"link": "申请退款", "status": "处理中", "reason": "包裹破损"}),
    ],
)
def test_apply_for_a_refund_in_chromium(
    browser, live_server, superuser, earlier_refund, sandbox, locale, language, texts
):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = context.new_page()

    log_in(page, live_server.url, "/admin/hsq_refunds/refund/")
    assert page.locator("html").get_attribute("lang") == language

    link = page.locator("#hsq-apply-link")
    assert link.inner_text().lower() == texts["link"].lower()
    with page.expect_navigation():
        link.click()
    page.fill("#id_orig_trans_no", ORDER)
    page.fill("#id_orig_amount_yuan", "128.00")
    page.fill("#id_amount_yuan", "28.80")
    page.fill("#id_reason", texts["reason"])
    with page.expect_navigation():
        page.click("#hsq-review-button")

    figures = page.locator("#hsq-apply-figures")
    assert figures.locator(".hsq-paid").inner_text() == "¥128.00"
    assert figures.locator(".hsq-taken").inner_text() == "¥50.00"
    assert figures.locator(".hsq-amount").inner_text() == "¥28.80"
    assert figures.locator(".hsq-left").inner_text() == "¥49.20"
    assert page.locator("#hsq-order-refunds").inner_text().count(earlier_refund.trans_no) == 1
    trans_no = figures.locator(".hsq-trans-no").inner_text()
    assert Refund.objects.filter(trans_no=trans_no).count() == 0
    page.screenshot(path=str(SCREENSHOTS / f"admin-apply-{language}.png"), full_page=True)

    with page.expect_navigation():
        page.click("#hsq-confirm-button")

    refund = Refund.objects.get(trans_no=trans_no)
    assert re.search(reverse("admin:hsq_refunds_refund_change", args=[refund.pk]) + "$", page.url)
    message = page.locator(".messagelist .success").inner_text()
    assert trans_no in message and texts["status"] in message
    badge = page.locator(".field-status_badge .hsq-status")
    assert badge.inner_text() == texts["status"]
    assert (refund.amount, refund.orig_amount, refund.reason) == (2880, 12800, texts["reason"])
    assert sandbox.application_counts()[trans_no]["received"] == 1
    context.close()
