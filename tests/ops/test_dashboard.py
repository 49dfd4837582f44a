"""The admin dashboard: its figures against the rows, its links, its permission, its queries."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hsq_refunds.dashboard import dashboard_data

pytestmark = pytest.mark.django_db

BEIJING = ZoneInfo("Asia/Shanghai")
#: 15:00 on 3 December 2026 in Beijing (the tests' TIME_ZONE).
NOW = datetime(2026, 12, 3, 15, 0, tzinfo=BEIJING)
DASHBOARD_URL = "/admin/hsq_refunds/refund/dashboard/"
CHINESE = {"headers": {"accept-language": "zh-CN,zh;q=0.9"}}


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=BEIJING)


@pytest.fixture
def rows(make_refund, make_run):
    """Refunds around today's and the week's edges, some flagged, and two sync runs."""
    make_refund(status="SUCCESS", amount=1000, applied_at=at(3, 9))
    make_refund(status="SUCCESS", amount=2000, applied_at=at(3, 1))
    make_refund(
        status="PROCESSING",
        amount=500,
        applied_at=at(3, 14, 50),
        needs_attention=True,
        attention_reason="not_found",
    )
    make_refund(status="PROCESSING", amount=None, applied_at=at(3, 12))
    make_refund(status="FAIL", amount=300, applied_at=at(3, 0))  # today's first instant
    make_refund(
        status="SUCCESS",
        amount=4000,
        applied_at=at(2, 23, 59, 59),
        needs_attention=True,
        attention_reason="amount_mismatch",
    )
    make_refund(status="INIT", amount=700, applied_at=at(27, month=11))  # the week's first instant
    make_refund(
        status="UNKNOWN",
        amount=800,
        applied_at=at(26, 23, 59, 59, month=11),
        needs_attention=True,
        attention_reason="not_found",
    )
    make_refund(status="UNKNOWN", amount=100, applied_at=at(3, 15, 5))  # a clock ahead
    make_refund(status="UNKNOWN", amount=50, applied_at=at(20, 12, month=11))
    make_run(
        ago=timedelta(minutes=2),
        ok=False,
        error_count=3,
        errors_by_type={"transport": 2, "signature": 1},
    )
    make_run(ago=timedelta(minutes=1), ok=False, error_count=1, errors_by_type={"transport": 1})


def figures(period) -> dict[str, tuple[int, int]]:
    return {row.status: (row.count, row.amount) for row in period.rows}


def test_counts_and_amounts_per_status_today_and_over_seven_days(rows):
    today, week = dashboard_data(NOW).periods

    assert (today.key, week.key) == ("today", "week")
    assert today.since == at(3) and week.since == at(27, month=11) and today.until == at(4)
    assert figures(today) == {
        "UNKNOWN": (1, 100),
        "INIT": (0, 0),
        "PROCESSING": (2, 500),
        "SUCCESS": (2, 3000),
        "FAIL": (1, 300),
    }
    assert figures(week) == {
        "UNKNOWN": (1, 100),
        "INIT": (1, 700),
        "PROCESSING": (2, 500),
        "SUCCESS": (3, 7000),
        "FAIL": (1, 300),
    }
    assert (today.count, today.amount, today.amount_display) == (6, 3900, "¥39.00")
    assert (week.count, week.amount_display) == (8, "¥86.00")
    assert dict((row.status, row.amount_display) for row in week.rows)["SUCCESS"] == "¥70.00"


def test_the_attention_queue(rows):
    data = dashboard_data(NOW)

    assert [(row.reason, row.count) for row in data.attention] == [
        ("not_found", 2),
        ("amount_mismatch", 1),
    ]
    assert data.attention_total == 3
    assert data.attention[0].query == "needs_attention__exact=1&attention_reason__exact=not_found"


def test_unfinished_refunds_by_age(rows):
    data = dashboard_data(NOW)

    assert [(bucket.key, bucket.count, bucket.amount) for bucket in data.age_buckets] == [
        ("10m", 1, 100),  # applied "in the future"
        ("1h", 1, 500),  # exactly 10 minutes old
        ("6h", 1, 0),  # no amount
        ("1d", 0, 0),
        ("3d", 0, 0),
        ("7d", 2, 1500),  # 6 days 15 hours, and 6 days 14 hours
        ("old", 1, 50),
    ]
    assert (data.unfinished_total, data.unfinished_amount_display) == (6, "¥21.50")


def test_the_last_runs_and_their_errors_by_type(rows):
    data = dashboard_data(NOW)

    assert [row.run.error_count for row in data.runs] == [1, 3]  # newest first
    assert data.runs[1].errors == [("network error", 2), ("signature invalid", 1)]
    assert data.runs[0].trigger == "management command"
    assert data.run_errors == [("network error", 3), ("signature invalid", 1)]


def test_an_empty_table(db):
    data = dashboard_data(NOW)

    assert all(row.count == 0 for period in data.periods for row in period.rows)
    assert data.attention == [] and data.runs == [] and data.unfinished_total == 0


def test_a_fixed_number_of_queries_however_many_rows(make_refund):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            dashboard_data(NOW)
        return len(queries)

    make_refund(status="PROCESSING", applied_at=at(3, 10))
    few = count()
    for hour in range(24):
        for status in ("UNKNOWN", "SUCCESS", "FAIL"):
            make_refund(status=status, applied_at=at(2, hour), needs_attention=hour % 2 == 0)

    assert count() == few <= 5


# --------------------------------------------------------------------------- the page


def test_the_page_shows_the_figures(admin_client, make_refund, now):
    make_refund("R-TODAY", status="SUCCESS", amount=128800, applied_at=now - timedelta(seconds=1))

    response = admin_client.get(DASHBOARD_URL)
    html = response.content.decode()

    assert response.status_code == 200
    assert "<h1>Refund dashboard</h1>" in html
    today = html[html.index('id="hsq-period-today"') : html.index('id="hsq-period-week"')]
    success = today[today.index('data-status="SUCCESS"') :]
    assert re.search(
        r'class="number count">1</td>\s*<td class="number amount">¥1,288.00</td>', success
    )
    assert "Unfinished refunds by age" in html and "No sync has run yet." in html


def test_every_link_lists_exactly_the_refunds_counted(admin_client, rows, make_refund, now):
    # Rows relative to the real clock, for the page's own "today" and ages.
    make_refund(status="SUCCESS", applied_at=now - timedelta(minutes=1))
    make_refund(status="PROCESSING", applied_at=now - timedelta(hours=2))
    make_refund(status="PROCESSING", applied_at=now - timedelta(days=2), needs_attention=True)

    data = admin_client.get(DASHBOARD_URL).context["data"]
    links = [(row.query, row.count) for period in data.periods for row in period.rows]
    links += [(period.query, period.count) for period in data.periods]
    links += [(row.query, row.count) for row in data.attention]
    links += [(bucket.query, bucket.count) for bucket in data.age_buckets]

    assert sum(count for _query, count in links) > 10
    for query, count in links:
        listed = admin_client.get(f"/admin/hsq_refunds/refund/?{query}")
        assert listed.status_code == 200, query
        assert listed.context["cl"].result_count == count, query


def test_todays_link_selects_the_lists_today_filter(admin_client, make_refund):
    make_refund(status="SUCCESS")

    data = admin_client.get(DASHBOARD_URL).context["data"]
    listed = admin_client.get(f"/admin/hsq_refunds/refund/?{data.periods[0].query}")

    html = listed.content.decode()
    assert re.search(r'<li class="selected">\s*<a href="[^"]*"[^>]*>Today</a>', html)


def test_it_is_linked_from_the_app_index_and_the_list(staff_client):
    viewer = staff_client("view_refund")

    index = viewer.get("/admin/hsq_refunds/").content.decode()
    changelist = viewer.get("/admin/hsq_refunds/refund/").content.decode()

    assert f'href="{DASHBOARD_URL}" id="hsq-dashboard-index-link"' in index
    assert f'href="{DASHBOARD_URL}" id="hsq-dashboard-link"' in changelist


def test_the_view_permission_is_needed(staff_client):
    assert staff_client("view_refund").get(DASHBOARD_URL).status_code == 200
    assert staff_client("change_refund").get(DASHBOARD_URL).status_code == 200
    assert staff_client("refresh_refund").get(DASHBOARD_URL).status_code == 403


def test_anonymous_users_are_sent_to_log_in(client):
    response = client.get(DASHBOARD_URL)

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_page_speaks_chinese(admin_client, rows, make_refund):
    html = admin_client.get(DASHBOARD_URL, **CHINESE).content.decode()

    for text in (
        "退款看板",
        "今天申请的退款",
        "最近 7 天申请的退款",
        "需要人工处理",
        "未完成退款的账龄",
    ):
        assert text in html, text
    assert "最近的同步" in html and "网络错误" in html and "管理命令" in html
    assert '<span class="hsq-status hsq-status-success">成功</span>' in html
