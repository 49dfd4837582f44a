"""The admin in a real browser: Debian's Chromium, the live server, the sandbox over HTTP.

Saves screenshots of the list and of a refund's page in each language: in a temporary folder,
or in ``docs/screenshots/`` (the README's pictures) when ``HSQ_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hsq_refunds.sync import sync_refunds

from .browser import SCREENSHOTS, log_in

pytestmark = pytest.mark.browser

TARGET = "RF202406010007"


@pytest.fixture
def refunds(transactional_db, make_refund, sandbox) -> Iterator[None]:
    """A mix of refunds, all but the target already synced; the target is SUCCESS at HSQ."""
    specs = [
        ("RF202406010001", 1234, [{"status": "SUCCESS"}], {}),
        ("RF202406010002", 56800, [{"status": "PROCESSING"}], {}),
        ("RF202406010003", 990, [{"status": "FAIL"}], {}),
        ("RF202406010004", 20000, [{"status": "INIT"}], {}),
        ("RF202406010005", 1500, [{"status": "SUCCESS"}], {"hsq_amount": 1400}),
        ("RF202406010006", 7300, [{"status": "PROCESSING"}], {"fault": "bad_signature"}),
    ]
    for number, (trans_no, amount, timeline, extra) in enumerate(specs, start=1):
        make_refund(
            trans_no, amount=amount, timeline=timeline, orig_trans_no=f"PO2024053100{number:02d}"
        )
        if "hsq_amount" in extra:
            sandbox.add_refund(trans_no, amount=extra["hsq_amount"], timeline=timeline)
        if "fault" in extra:
            sandbox.set_fault(extra["fault"], trans_no=trans_no)
    sync_refunds(trans_nos=[spec[0] for spec in specs])
    make_refund(TARGET, amount=8888, orig_trans_no="PO202405310007")
    yield


@pytest.mark.parametrize(
    ("locale", "language", "texts"),
    [
        ("en-US", "en", {"before": "Unknown", "after": "Succeeded", "button": "Refresh status"}),
        ("zh-CN", "zh-hans", {"before": "未知", "after": "成功", "button": "刷新状态"}),
    ],
)
def test_refresh_a_refund_in_chromium(
    browser, live_server, superuser, refunds, sandbox, locale, language, texts
):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(locale=locale, viewport={"width": 1920, "height": 1000})
    page = context.new_page()

    log_in(page, live_server.url, "/admin/hsq_refunds/refund/")
    page.click("#toggle-nav-sidebar")  # room for every column in the screenshots
    assert page.locator("html").get_attribute("lang") == language
    assert page.locator("#result_list tbody tr").count() == 7
    page.screenshot(path=str(SCREENSHOTS / f"admin-list-{language}.png"), full_page=True)

    page.click(f"#result_list a:text-is('{TARGET}')")
    badge = page.locator(".field-status_badge .hsq-status")
    assert badge.inner_text() == texts["before"]
    button = page.locator("#hsq-refresh-button")
    assert button.inner_text().lower() == texts["button"].lower()
    with page.expect_navigation():
        button.click()

    assert badge.inner_text() == texts["after"]
    assert "hsq-status-success" in badge.get_attribute("class")
    assert TARGET in page.locator(".messagelist .success").inner_text()
    assert sandbox.query_counts()[TARGET] == 1
    page.screenshot(path=str(SCREENSHOTS / f"admin-refund-{language}.png"), full_page=True)
    context.close()
