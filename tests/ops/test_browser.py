"""The dashboard and the export button in Debian's Chromium, in English and in Chinese.

Saves screenshots of the dashboard in each language: in a temporary folder, or in
``docs/screenshots/`` when ``HSQ_UPDATE_SCREENSHOTS=1`` (as ``tests/admin/browser.py``).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from hsq_refunds.dashboard import dashboard_data
from hsq_refunds.models import Refund
from hsq_refunds.runs import record_sync_run
from hsq_refunds.sync import RefundFailure, SyncReport
from tests.admin.browser import SCREENSHOTS, log_in

from .conftest import MERCHANT

pytestmark = pytest.mark.browser


@pytest.fixture
def refunds(transactional_db, settings, language):
    """Refunds in every state, and three sync runs recorded as a site in ``language`` would."""
    settings.LANGUAGE_CODE = language
    now = timezone.now()
    specs = [
        # (status, amount, age, attention reason)
        ("SUCCESS", 12800, timedelta(seconds=30), ""),
        ("SUCCESS", 5600, timedelta(seconds=50), ""),
        ("SUCCESS", 199900, timedelta(days=2), ""),
        ("SUCCESS", 4500, timedelta(days=3), "amount_mismatch"),
        ("FAIL", 990, timedelta(seconds=40), ""),
        ("PROCESSING", 56800, timedelta(minutes=4), ""),
        ("PROCESSING", 30000, timedelta(hours=3), ""),
        ("PROCESSING", 72000, timedelta(days=2, hours=5), ""),
        ("INIT", 20000, timedelta(minutes=25), ""),
        ("UNKNOWN", 1500, timedelta(minutes=1), ""),
        ("UNKNOWN", 8800, timedelta(hours=2), "not_found"),
        ("PROCESSING", 15000, timedelta(days=9), "gave_up"),
    ]
    Refund.objects.bulk_create(
        Refund(
            merchant_no=MERCHANT,
            trans_no=f"RF2026120100{number:02d}",
            orig_trans_no=f"PO2026113000{number:02d}",
            amount=amount,
            status=status,
            applied_at=now - age,
            needs_attention=bool(reason),
            attention_reason=reason,
        )
        for number, (status, amount, age, reason) in enumerate(specs, start=1)
    )
    runs = [
        SyncReport(selected=4, queried=4, outcomes=Counter(ok=4), by_status=Counter(SUCCESS=4)),
        SyncReport(
            selected=5,
            queried=5,
            outcomes=Counter(ok=3, transport_error=2),
            by_status=Counter(SUCCESS=2, PROCESSING=1, UNKNOWN=2),
            errors=[
                RefundFailure(f"RF20261201000{n}", MERCHANT, "transport", "", "timed out")
                for n in (6, 7)
            ],
        ),
        SyncReport(
            selected=3,
            queried=3,
            outcomes=Counter(ok=2, signature_error=1),
            by_status=Counter(PROCESSING=2, UNKNOWN=1),
            errors=[RefundFailure("RF2026120100010", MERCHANT, "signature", "", "bad sign")],
        ),
    ]
    for minutes, report in zip((3, 2, 1), runs, strict=True):
        finished = now - timedelta(minutes=minutes)
        trigger = "task" if minutes != 2 else "command"
        record_sync_run(
            report,
            started_at=finished - timedelta(seconds=4),
            finished_at=finished,
            trigger=trigger,
        )


@pytest.mark.parametrize(
    ("locale", "language", "texts"),
    [
        (
            "en-US",
            "en",
            {"title": "Refund dashboard", "today": "Applied for today", "header": "amount (fen)"},
        ),
        (
            "zh-CN",
            "zh-hans",
            {"title": "退款看板", "today": "今天申请的退款", "header": "退款金额（分）"},
        ),
    ],
)
def test_the_dashboard_and_the_export_in_chromium(
    browser, live_server, superuser, refunds, locale, language, texts, tmp_path
):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(
        locale=locale, viewport={"width": 1500, "height": 900}, accept_downloads=True
    )
    page = context.new_page()

    log_in(page, live_server.url, "/admin/hsq_refunds/")
    with page.expect_navigation():
        page.click("#hsq-dashboard-index-link")
    page.click("#toggle-nav-sidebar")  # room for the tables in the screenshots

    assert page.locator("html").get_attribute("lang") == language
    assert page.locator("h1").inner_text() == texts["title"]
    assert texts["today"].upper() in page.locator("#hsq-period-today caption").inner_text().upper()
    data = dashboard_data()
    for period in data.periods:
        for row in period.rows:
            cells = page.locator(f"#hsq-period-{period.key} tr[data-status='{row.status}'] td")
            assert cells.nth(0).inner_text() == str(row.count)
            assert cells.nth(1).inner_text() == row.amount_display
    assert page.locator("#hsq-ages tr[data-bucket='old'] td").nth(0).inner_text() == "1"
    assert page.locator("#hsq-attention tr[data-reason='total'] td").inner_text() == "3"
    assert page.locator("#hsq-runs tr.hsq-run").count() == 3
    page.screenshot(path=str(SCREENSHOTS / f"admin-dashboard-{language}.png"), full_page=True)

    # The attention queue's first reason leads to the list filtered to those refunds.
    first = data.attention[0]
    with page.expect_navigation():
        page.click(f"#hsq-attention tr[data-reason='{first.reason}'] a")
    assert page.locator("#result_list tbody tr").count() == first.count

    # Its "Export CSV" button downloads what the list shows.
    with page.expect_download() as download:
        page.click("#hsq-export-button")
    target = tmp_path / "export.csv"
    download.value.save_as(target)
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert texts["header"] in rows[0]
    assert len(rows) == 1 + first.count
    context.close()
