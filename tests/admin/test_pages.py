"""The change list and a refund's page: what they show, what may be edited, how many queries."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hsq_refunds.models import Refund, RefundQuery
from hsq_refunds.money import format_fen, yuan_to_fen

from .conftest import change_url, changelist_url

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("fen", "shown"),
    [(0, "¥0.00"), (1, "¥0.01"), (1234, "¥12.34"), (1999, "¥19.99"), (123456789, "¥1,234,567.89")],
)
def test_fen_are_shown_as_yuan(fen, shown):
    assert format_fen(fen) == shown


def test_yuan_are_converted_to_fen_exactly():
    from decimal import Decimal

    assert yuan_to_fen(Decimal("19.99")) == 1999
    assert yuan_to_fen(Decimal("0.1")) == 10
    assert yuan_to_fen(Decimal("12")) == 1200
    with pytest.raises(ValueError, match="two decimals"):
        yuan_to_fen(Decimal("1.005"))


def test_change_list_shows_the_refunds(admin_client, make_refund, merchant_no):
    make_refund(
        "R-LIST",
        amount=1234,
        orig_trans_no="P-1",
        status="SUCCESS",
        needs_attention=True,
        attention_reason="amount_mismatch",
    )

    html = admin_client.get(changelist_url()).content.decode()

    assert "R-LIST" in html
    assert "P-1" in html
    assert "¥12.34" in html
    assert '<span class="hsq-status hsq-status-success">Succeeded</span>' in html
    assert merchant_no in html
    assert (
        '<span class="hsq-attention" title="">Amount differs from the expected amount</span>'
        in html
    )
    assert "hsq_refunds/admin.css" in html
    for title in ("status", "merchant number", "needs attention", "applied at"):
        assert f" By {title} " in html


@pytest.mark.parametrize(
    ("query", "found"),
    [("R-SEARCH", True), ("P-SEARCH", True), ("T-SEARCH", True), ("nothing", False)],
)
def test_search_by_trans_no_orig_trans_no_or_trade_no(admin_client, make_refund, query, found):
    make_refund("R-SEARCH-1", orig_trans_no="P-SEARCH-1", trade_no="T-SEARCH-1")
    make_refund("R-OTHER", orig_trans_no="P-OTHER", trade_no="T-OTHER")

    html = admin_client.get(changelist_url(), {"q": query}).content.decode()

    assert ("R-SEARCH-1" in html) is found
    assert "R-OTHER</a>" not in html


def test_filters_by_status_and_attention(admin_client, make_refund):
    make_refund("R-DONE", status="SUCCESS")
    make_refund("R-OPEN", status="PROCESSING", needs_attention=True)

    done = admin_client.get(changelist_url(), {"status__exact": "SUCCESS"}).content.decode()
    flagged = admin_client.get(changelist_url(), {"needs_attention__exact": "1"}).content.decode()

    assert "R-DONE" in done and "R-OPEN" not in done
    assert "R-OPEN" in flagged and "R-DONE" not in flagged


def test_change_list_queries_do_not_grow_with_rows(admin_client, make_refund):
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(changelist_url()).status_code == 200
        return len(queries)

    make_refund("R-0", known=False)
    few = count_queries()
    for number in range(1, 30):
        make_refund(f"R-{number}", known=False)

    assert count_queries() == few


def test_refund_page_shows_gateway_fields_read_only(admin_client, make_refund):
    refund = make_refund(
        "R-PAGE",
        amount=1000,
        reported_amount=900,
        trade_no="T-PAGE",
        status="SUCCESS",
        last_error_type="signature",
        last_error_message="the signature of the success answer does not verify",
    )

    response = admin_client.get(change_url(refund))
    html = response.content.decode()

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert list(form.fields) == ["needs_attention"]
    assert "¥10.00" in html and "¥9.00" in html
    assert "T-PAGE" in html
    assert 'class="hsq-status hsq-status-success"' in html
    assert "signature invalid: the signature of the success answer does not verify" in html
    assert 'id="hsq-refresh-button"' in html


def test_refund_page_shows_the_recent_queries_newest_first(admin_client, make_refund):
    refund = make_refund("R-LOG", known=False)
    start = timezone.now() - timedelta(hours=1)
    RefundQuery.objects.bulk_create(
        RefundQuery(
            refund=refund,
            queried_at=start + timedelta(minutes=number),
            outcome="transport_error",
            error_type="transport",
            error_code=f"CODE{number:02d}",
        )
        for number in range(25)
    )

    with CaptureQueriesContext(connection) as queries:
        html = admin_client.get(change_url(refund)).content.decode()

    shown = re.findall(r"CODE(\d\d)", html)
    assert shown == [f"{number:02d}" for number in range(24, 4, -1)]
    assert len(re.findall(r'field-error_type_display">\s*<p>network error</p>', html)) == 20
    assert len(queries) < 20


def test_saving_a_refund_changes_only_the_attention_flag(admin_client, make_refund):
    refund = make_refund(
        "R-EDIT",
        needs_attention=True,
        attention_reason="not_found",
        attention_detail="not found",
        status="PROCESSING",
    )
    page = admin_client.get(change_url(refund))
    data = {
        "needs_attention": "",
        "status": "SUCCESS",
        "amount": "1",
        "queries-TOTAL_FORMS": "0",
        "queries-INITIAL_FORMS": "0",
        "queries-MIN_NUM_FORMS": "0",
        "queries-MAX_NUM_FORMS": "0",
    }
    formset_prefix = page.context["inline_admin_formsets"][0].formset.prefix
    data = {key.replace("queries", formset_prefix): value for key, value in data.items()}

    response = admin_client.post(change_url(refund), data)

    assert response.status_code == 302
    refund.refresh_from_db()
    assert (refund.needs_attention, refund.attention_reason, refund.attention_detail) == (
        False,
        "",
        "",
    )
    assert (refund.status, refund.amount) == ("PROCESSING", 1234)


def test_clear_attention_action(admin_client, make_refund):
    from .conftest import message_texts, run_action

    refunds = [
        make_refund("R-A", needs_attention=True, attention_reason="expired"),
        make_refund("R-B"),
    ]

    response = run_action(admin_client, "clear_attention", refunds)

    assert message_texts(response) == [("success", "1 refund no longer needs attention.")]
    assert not Refund.objects.filter(needs_attention=True).exists()


def _edit(admin_client, refund, **fields):
    page = admin_client.get(change_url(refund))
    prefix = page.context["inline_admin_formsets"][0].formset.prefix
    data = {f"{prefix}-{key}": "0" for key in ("TOTAL_FORMS", "INITIAL_FORMS", "MAX_NUM_FORMS")}
    data[f"{prefix}-MIN_NUM_FORMS"] = "0"
    return admin_client.post(change_url(refund), {**data, **fields})


@pytest.mark.parametrize(
    "typed", ["1e999999999", "-1", "-Infinity", "NaN", "9" * 400, "10000000000000001", "12.5"]
)
def test_an_unknown_amount_entered_by_hand_is_bounded(admin_client, make_refund, typed):
    """A refund without an amount shows the field (fen); what no refund can be is a form
    error, and nothing is written."""
    refund = make_refund("R-NOAMOUNT", amount=None)

    response = _edit(admin_client, refund, amount=typed)

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["amount"]
    refund.refresh_from_db()
    assert (refund.amount, refund.version) == (None, 0)


def test_an_unknown_amount_entered_by_hand_is_written_once(admin_client, make_refund):
    refund = make_refund("R-NOAMOUNT", amount=None)

    assert _edit(admin_client, refund, amount="1234").status_code == 302
    refund.refresh_from_db()
    assert refund.amount == 1234
    page = admin_client.get(change_url(refund)).content.decode()
    assert 'name="amount"' not in page  # known now: shown, not editable
