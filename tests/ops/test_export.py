"""CSV exports: the admin's action and button, ``manage.py export_refunds``, parsed back."""

from __future__ import annotations

import csv
import gc
import io
import re
import tracemalloc
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import translation

from hsq_refunds.export import COLUMNS, neutralize
from hsq_refunds.models import Refund

from .conftest import MERCHANT

pytestmark = pytest.mark.django_db

BEIJING = ZoneInfo("Asia/Shanghai")
UTC = ZoneInfo("UTC")
CHINESE = {"headers": {"accept-language": "zh-CN,zh;q=0.9"}}
EXPORT_URL = "/admin/hsq_refunds/refund/export/"
CHANGELIST_URL = "/admin/hsq_refunds/refund/"
ENGLISH_HEADERS = [
    "refund order number",
    "original order number",
    "merchant number",
    "HSQ trade number",
    "status",
    "status description",
    "amount (yuan)",
    "amount (fen)",
    "amount reported by HSQ (yuan)",
    "amount reported by HSQ (fen)",
    "applied at",
    "finished at",
    "last queried at",
    "response code",
    "response message",
    "needs attention",
    "attention reason",
]


def body(response) -> bytes:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content)


def parse(data: bytes) -> list[dict[str, str]]:
    """The file as dicts keyed by column key, after checking its BOM and decoding it."""
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert len(rows[0]) == len(COLUMNS)
    return [dict(zip([c.key for c in COLUMNS], row, strict=True)) for row in rows[1:]]


def headers(data: bytes) -> list[str]:
    return next(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


@pytest.fixture
def sample(make_refund):
    """Three refunds with everything an export shows."""
    make_refund(
        "RF-A",
        orig_trans_no="PO-A",
        trade_no="T-A",
        amount=1234,
        status="SUCCESS",
        applied_at=datetime(2026, 12, 1, 2, 0, tzinfo=UTC),  # 10:00 in Beijing
        finished_at=datetime(2026, 12, 1, 2, 3, 4, 987654, tzinfo=UTC),
        resp_code="200007",
        resp_msg="查询成功",
    )
    make_refund(
        "RF-B",
        amount=128800,
        reported_amount=128700,
        status="PROCESSING",
        needs_attention=True,
        attention_reason="amount_mismatch",
        applied_at=datetime(2026, 12, 1, 16, 30, tzinfo=UTC),  # 00:30 on 2 Dec in Beijing
    )
    make_refund(
        "RF-C",
        amount=None,
        status="UNKNOWN",
        merchant_no="888000000002",
        applied_at=datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC),  # 23:59:59 on 30 Nov
    )


# --------------------------------------------------------------------------- the admin


def test_the_button_exports_the_filtered_list(admin_client, sample):
    response = admin_client.get(EXPORT_URL, {"status__exact": "SUCCESS"})
    data = body(response)
    rows = parse(data)

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="refunds-')
    assert headers(data) == ENGLISH_HEADERS
    assert [row["trans_no"] for row in rows] == ["RF-A"]
    (row,) = rows
    assert row["amount_yuan"] == "12.34" and row["amount_fen"] == "1234"
    assert row["applied_at"] == "2026-12-01 10:00:00+08:00"
    assert row["finished_at"] == "2026-12-01 10:03:04+08:00"
    assert row["last_queried_at"] == ""
    assert (row["status"], row["status_label"]) == ("SUCCESS", "Succeeded")
    assert (row["resp_code"], row["resp_msg"]) == ("200007", "查询成功")
    assert (row["orig_trans_no"], row["trade_no"], row["merchant_no"]) == ("PO-A", "T-A", MERCHANT)
    assert (row["needs_attention"], row["attention_reason"]) == ("0", "")


def test_every_page_and_the_lists_order(admin_client, sample, make_refund):
    for number in range(60):  # more than a page of the list (50)
        make_refund(f"RF-P{number:02d}", status="FAIL")

    rows = parse(body(admin_client.get(EXPORT_URL, {"o": "1", "p": "2"})))  # by transNo

    assert len(rows) == 63
    assert [row["trans_no"] for row in rows] == sorted(row["trans_no"] for row in rows)


def test_search_narrows_the_export(admin_client, sample):
    rows = parse(body(admin_client.get(EXPORT_URL, {"q": "RF-B"})))

    assert [row["trans_no"] for row in rows] == ["RF-B"]
    (row,) = rows
    assert row["reported_amount_yuan"] == "1287.00" and row["reported_amount_fen"] == "128700"
    assert row["amount_yuan"] == "1288.00" and row["amount_fen"] == "128800"
    assert row["applied_at"] == "2026-12-02 00:30:00+08:00"
    assert row["needs_attention"] == "1"
    assert row["attention_reason"] == "Amount differs from the expected amount"


def test_an_empty_amount_stays_empty(admin_client, sample):
    (row,) = parse(body(admin_client.get(EXPORT_URL, {"merchant_no__exact": "888000000002"})))

    assert row["amount_yuan"] == "" and row["amount_fen"] == ""
    assert row["applied_at"] == "2026-11-30 23:59:59+08:00"


def test_the_headers_are_in_the_users_language(admin_client, sample):
    data = body(admin_client.get(EXPORT_URL, **CHINESE))
    rows = {row["trans_no"]: row for row in parse(data)}

    assert headers(data)[:8] == [
        "退款单号",
        "原订单号",
        "商户号",
        "慧收钱交易号",
        "状态",
        "状态说明",
        "退款金额（元）",
        "退款金额（分）",
    ]
    assert rows["RF-A"]["status_label"] == "成功"
    assert rows["RF-A"]["status"] == "SUCCESS"
    assert rows["RF-B"]["attention_reason"] == "金额与预期不符"


def test_the_action_exports_the_selected_refunds(admin_client, sample):
    chosen = list(Refund.objects.filter(trans_no__in=["RF-A", "RF-C"]))

    response = admin_client.post(
        CHANGELIST_URL,
        {"action": "export_csv", "_selected_action": [refund.pk for refund in chosen]},
    )

    assert sorted(row["trans_no"] for row in parse(body(response))) == ["RF-A", "RF-C"]


def test_formula_cells_are_neutralized(admin_client, make_refund):
    values = ["=1+1", "+1", "-2", "@SUM(A1)", "\tTAB", "\rCR", '=HYPERLINK("x")', "ok"]
    for number, value in enumerate(values):
        make_refund(f"RF-F{number}", orig_trans_no=value[:64], resp_msg=value, trade_no=value)

    rows = {row["trans_no"]: row for row in parse(body(admin_client.get(EXPORT_URL)))}

    for number, value in enumerate(values):
        row = rows[f"RF-F{number}"]
        expected = value if value == "ok" else "'" + value
        assert row["resp_msg"] == row["trade_no"] == row["orig_trans_no"] == expected, value


def test_neutralize():
    assert neutralize("=cmd|' /C calc'!A0") == "'=cmd|' /C calc'!A0"
    assert neutralize("") == ""
    assert neutralize("12.34") == "12.34"
    assert neutralize("a=b") == "a=b"


def test_the_view_permission_is_enough(staff_client, sample):
    viewer = staff_client("view_refund")

    button = viewer.get(EXPORT_URL)
    changelist = viewer.get(CHANGELIST_URL).content.decode()
    action = viewer.post(
        CHANGELIST_URL,
        {"action": "export_csv", "_selected_action": [Refund.objects.get(trans_no="RF-A").pk]},
    )

    assert len(parse(body(button))) == 3
    assert 'value="export_csv"' in changelist
    assert 'id="hsq-export-button"' in changelist
    assert [row["trans_no"] for row in parse(body(action))] == ["RF-A"]


def test_without_the_view_permission_it_is_refused(staff_client, sample):
    assert staff_client().get(EXPORT_URL).status_code == 403


def test_the_button_carries_the_lists_filters(admin_client, sample):
    html = admin_client.get(CHANGELIST_URL, {"status__exact": "SUCCESS", "p": "1"}).content
    html = html.decode()

    assert f'href="{EXPORT_URL}?status__exact=SUCCESS"' in html


def test_a_bad_filter_goes_back_to_the_list(admin_client, sample):
    response = admin_client.get(EXPORT_URL, {"no_such_field__exact": "1"})

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:hsq_refunds_refund_changelist") + "?e=1"


def insert_many(count: int, now: datetime) -> None:
    """``count`` refunds ``BIG0`` ... in one ``INSERT ... SELECT`` (SQLite and PostgreSQL)."""
    template = Refund(
        merchant_no=MERCHANT,
        orig_trans_no="PO-BIG",
        amount=123456,
        status="SUCCESS",
        applied_at=now,
        finished_at=now,
        created_at=now,
        updated_at=now,
        resp_code="200007",
        resp_msg="query succeeded",
    )
    columns, values = [], []
    for field in Refund._meta.concrete_fields:
        value = field.get_db_prep_save(getattr(template, field.attname), connection)
        if field.primary_key or field.attname == "trans_no" or value is None:
            continue
        columns.append(connection.ops.quote_name(field.column))
        values.append(value)
    table = connection.ops.quote_name(Refund._meta.db_table)
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}, trans_no) "
        "WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < %s) "
        f"SELECT {', '.join(['%s'] * len(values))}, 'BIG' || n FROM g"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [count - 1, *values])


def test_a_large_export_is_streamed_in_bounded_memory(admin_client, now):
    count = 100_000
    insert_many(count, now)
    assert Refund.objects.count() == count
    response = admin_client.get(EXPORT_URL)

    gc.collect()
    tracemalloc.start()
    try:
        size = lines = 0
        first = b""
        for piece in response.streaming_content:
            first = first or piece
            size += len(piece)
            lines += piece.count(b"\r\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert first.startswith(b"\xef\xbb\xbf")
    assert lines == count + 1
    # The file is about 15 MB; the rows as Python objects would take several times that. Only
    # a chunk of rows and a piece of the file may be in memory at any time.
    assert size > 12_000_000
    assert peak < 8_000_000, f"peak {peak:,} bytes for a file of {size:,}"


# --------------------------------------------------------------------------- the command


def export(*args: str, stderr: io.StringIO | None = None) -> bytes:
    out = io.StringIO()
    with translation.override("en"):
        call_command("export_refunds", *args, stdout=out, stderr=stderr or io.StringIO())
    return out.getvalue().encode("utf-8")


def test_the_command_has_the_same_columns(sample, tmp_path):
    target = tmp_path / "refunds.csv"

    export("-o", str(target))
    data = target.read_bytes()

    assert headers(data) == ENGLISH_HEADERS
    rows = parse(data)
    # Ordered by when they were applied for.
    assert [row["trans_no"] for row in rows] == ["RF-C", "RF-A", "RF-B"]
    assert rows[1]["amount_yuan"] == "12.34" and rows[1]["amount_fen"] == "1234"
    assert rows[1]["applied_at"] == "2026-12-01 10:00:00+08:00"


def test_the_command_selects_by_beijing_day(sample):
    one_day = parse(export("--since", "2026-12-01", "--until", "2026-12-01"))
    from_the_first = parse(export("--since", "2026-12-01"))
    up_to_the_first = parse(export("--until", "2026-12-01"))

    assert [row["trans_no"] for row in one_day] == ["RF-A"]
    assert [row["trans_no"] for row in from_the_first] == ["RF-A", "RF-B"]
    assert [row["trans_no"] for row in up_to_the_first] == ["RF-C", "RF-A"]


def test_the_command_selects_by_finish_time(sample):
    rows = parse(export("--by", "finished", "--since", "2026-12-01", "--until", "2026-12-01"))

    assert [row["trans_no"] for row in rows] == ["RF-A"]


def test_the_command_filters_by_status_and_merchant(sample):
    by_status = parse(export("--status", "SUCCESS", "--status", "UNKNOWN"))
    by_merchant = parse(export("--merchant", MERCHANT))

    assert [row["trans_no"] for row in by_status] == ["RF-C", "RF-A"]
    assert [row["trans_no"] for row in by_merchant] == ["RF-A", "RF-B"]


def test_the_command_reports_how_many_it_wrote(sample, tmp_path):
    err = io.StringIO()

    export("-o", str(tmp_path / "x.csv"), stderr=err)

    assert err.getvalue().strip() == f"3 refunds exported to {tmp_path / 'x.csv'}."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "1 December"], "is not a date (YYYY-MM-DD)"),
        (["--since", "2026-12-02", "--until", "2026-12-01"], "--until is before --since"),
        (["-o", "/nonexistent/folder/x.csv"], "Cannot write /nonexistent/folder/x.csv"),
    ],
)
def test_the_command_refuses_bad_arguments(sample, args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        export(*args)


@pytest.mark.django_db(transaction=True)
def test_the_command_writes_bytes_to_a_real_stdout(sample):
    from tests.processes import run_manage

    process = run_manage(["export_refunds", "--status", "SUCCESS"])

    assert process.returncode == 0, process.stderr
    rows = parse(process.stdout.encode("utf-8"))
    assert [row["trans_no"] for row in rows] == ["RF-A"]
    assert rows[0]["resp_msg"] == "查询成功"
