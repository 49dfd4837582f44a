"""Hostile bodies never get a 5xx from the notification view, and never put unstorable text in
the database.

Three kinds of body: JSON nested far deeper than the parser goes (as the body, and as a signed
``signContent``), answered 400 ``FAIL`` (413 over the 64 KiB limit) with nothing written;
numbers no refund can have (``1e999999999``, thousands of digits, ``NaN``, ``Infinity``) as
JSON values and as the ``orderAmt`` of a verified notification, refused and nothing stored
beyond ``MAX_AMOUNT_FEN``; and verified ``SUCCESS`` notifications for an untracked refund whose
text fields carry NUL, a lone surrogate, other control characters or too many characters,
recorded with those fields cleaned and cut to their columns while the proof keeps
``signContent`` verbatim. Most go through Django's test client, a few through the live server.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
import requests
from django.db import models

from hsq_refunds.columns import RESP_MSG_LENGTH, TRADE_NO_LENGTH, TRANS_NO_LENGTH
from hsq_refunds.gateway.text import cleaned
from hsq_refunds.gateway.validation import MAX_AMOUNT_FEN
from hsq_refunds.models import Refund, RefundQuery
from hsq_refunds.views import MAX_BODY_BYTES
from tests.notify.conftest import NOTIFY_PATH

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def lists(depth: int) -> str:
    return "[" * depth + "]" * depth


def objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def snapshot() -> tuple[list, list]:
    return (
        list(Refund.objects.order_by("id").values()),
        list(RefundQuery.objects.order_by("id").values()),
    )


@pytest.fixture
def send(sandbox, client) -> Callable[..., tuple[int, str]]:
    """``send(body, content_type)``: the reply's status and text; asserts it is no 5xx."""

    def post(body: str | bytes, content_type: str = FORM) -> tuple[int, str]:
        reply = client.post(NOTIFY_PATH, data=body, content_type=content_type)
        assert reply.status_code < 500, (reply.status_code, reply.content[:200])
        return reply.status_code, reply.content.decode()

    return post


def expected_refusal(body: str | bytes) -> tuple[int, str]:
    size = len(body.encode() if isinstance(body, str) else body)
    return (413, "FAIL") if size > MAX_BODY_BYTES else (400, "FAIL")


# --------------------------------------------------------------------------- deep nesting

NESTED_BODIES = {
    "lists-100k": lists(100_000),
    "objects-100k": objects(100_000),
    "lists-30k": lists(30_000),
    "objects-10k": objects(10_000),
    "lists-5k": lists(5_000),
    "objects-5k": objects(5_000),
    "field-lists-30k": '{"signContent":' + lists(30_000) + "}",
    "field-objects-10k": '{"signContent":' + objects(10_000) + "}",
    "field-string-5k": json.dumps({"signContent": lists(5_000)}),
}


def test_the_just_under_the_limit_bodies_are_under_it():
    assert len(lists(30_000)) < MAX_BODY_BYTES < len(lists(100_000))
    assert len(objects(10_000)) < MAX_BODY_BYTES < len(objects(100_000))


@pytest.mark.parametrize("content_type", [JSON, FORM])
@pytest.mark.parametrize("body", NESTED_BODIES.values(), ids=NESTED_BODIES.keys())
def test_deeply_nested_bodies_are_refused(send, body, content_type):
    before = snapshot()
    assert send(body, content_type) == expected_refusal(body)
    assert snapshot() == before


@pytest.mark.parametrize("depth", [1_000, 5_000, 20_000])
@pytest.mark.parametrize("nest", [lists, objects], ids=["lists", "objects"])
def test_a_signed_deeply_nested_sign_content_is_refused(send, sign_form, nest, depth):
    form = sign_form(nest(depth))
    body = json.dumps(form)  # brackets need no escaping in JSON, unlike in a form
    before = snapshot()
    assert send(body, JSON) == expected_refusal(body)
    assert send(urlencode(sign_form(nest(1_000))), FORM) == (400, "FAIL")
    assert snapshot() == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("body", [lists(100_000), lists(30_000), objects(10_000)])
def test_deep_nesting_through_the_live_server(sandbox, notify_url, body):
    before = snapshot()
    reply = requests.post(notify_url, data=body, headers={"Content-Type": JSON}, timeout=30)
    assert (reply.status_code, reply.text) == expected_refusal(body)
    assert snapshot() == before


# --------------------------------------------------------------------------- huge numbers

NUMBERS = ["1e999999999", "-1e999999999", "9" * 4_000, "9" * 5_000, "NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize("number", NUMBERS)
def test_huge_numbers_as_json_values_are_refused(send, sign_form, number):
    before = snapshot()
    assert send('{"merchantNo":' + number + "}", JSON) == (400, "FAIL")
    assert send("[" + number + "]", JSON) == (400, "FAIL")
    # Signed, as the orderAmt of a signContent that is otherwise a notification.
    content = '{"transNo":"HB-N","orderAmt":' + number + ',"orderStatus":"SUCCESS"}'
    assert send(json.dumps(sign_form(content)), JSON) == (400, "FAIL")
    assert snapshot() == before


@pytest.mark.parametrize("amount", ["1e999999999", "9" * 400, "-1", "NaN", str(MAX_AMOUNT_FEN + 1)])
@pytest.mark.parametrize("trans_no", ["HB-1", "HB-UNTRACKED"])
def test_an_impossible_signed_amount_stores_no_garbage(
    refunds, notification, send, trans_no, amount
):
    refunds([{"transNo": "HB-1", "status": "PROCESSING", "timeline": [{"status": "PROCESSING"}]}])
    before = snapshot()
    status, text = send(urlencode(notification(trans_no, "SUCCESS", amount=amount)))
    assert (status, text) in ((400, "FAIL"), (200, "SUCCESS"))
    if text == "FAIL":
        assert snapshot() == before
    for row in Refund.objects.values("status", "amount", "reported_amount"):
        assert row["status"] in ("PROCESSING", "SUCCESS")
        for value in (row["amount"], row["reported_amount"]):
            assert value is None or 0 <= value <= MAX_AMOUNT_FEN


# --------------------------------------------------------------------------- dirty verified fields

DIRTY = {
    "nul": "A\x00B",
    "surrogate": "A\ud800B",
    "low-surrogate": "\udfffA",
    "controls": "A\x01\x1b[31m\x7f\x9bB",
    "newlines": "A\r\n\u2028\u2029B",
    "long": "長" * 300,
    "long-nul": "\x00" * 300,
}
COLUMNS = {
    "orig_trans_no": TRANS_NO_LENGTH,
    "trade_no": TRADE_NO_LENGTH,
    "resp_msg": RESP_MSG_LENGTH,
    "extend": None,
}


def dirty_content(trans_no: str, value: str) -> str:
    content = {
        "transNo": trans_no,
        "origTransNo": value,
        "tradeNo": value,
        "orderAmt": "1500",
        "orderStatus": "SUCCESS",
        "finishedDate": "20261201100000",
        "respCode": "200007",
        "respMsg": value,
        "extend": value,
    }
    # ASCII escapes: a lone surrogate has no UTF-8 bytes, but ``\ud800`` signs fine.
    return json.dumps(content, ensure_ascii=True, separators=(",", ":"))


def unstorable(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in ("Cc", "Cs")]


def assert_recorded_clean(trans_no: str, form: dict[str, str]) -> None:
    refund = Refund.objects.get(trans_no=trans_no)
    assert refund.status == "SUCCESS" and refund.amount == 1500
    assert json.loads(refund.final_result)["signContent"] == form["signContent"]
    for name, length in COLUMNS.items():
        value = getattr(refund, name)
        assert length is None or len(value) <= length, (name, len(value))
    rows = [refund, *RefundQuery.objects.filter(refund=refund)]
    for row in rows:
        for field in row._meta.concrete_fields:
            if isinstance(field, (models.CharField, models.TextField)):
                value = getattr(row, field.attname) or ""
                assert not unstorable(value), (type(row).__name__, field.name, value[:80])
                assert field.max_length is None or len(value) <= field.max_length, field.name


@pytest.mark.parametrize("value", DIRTY.values(), ids=DIRTY.keys())
def test_dirty_verified_fields_are_stored_clean(send, sign_form, value):
    form = sign_form(dirty_content("HB-DIRTY", value))
    assert send(urlencode(form)) == (200, "SUCCESS")
    assert_recorded_clean("HB-DIRTY", form)
    refund = Refund.objects.get(trans_no="HB-DIRTY")
    assert refund.trade_no == cleaned(value, TRADE_NO_LENGTH)
    assert (refund.resp_msg, refund.extend) == (cleaned(value, RESP_MSG_LENGTH), cleaned(value))
    assert refund.needs_attention and refund.attention_reason == "not_applied_here"
    assert send(urlencode(form)) == (200, "SUCCESS")  # a repeat: acknowledged, nothing new
    assert RefundQuery.objects.filter(refund=refund).count() == 1


@pytest.mark.django_db(transaction=True)
def test_dirty_verified_fields_through_the_live_server(sandbox, sign_form, post):
    for number, value in enumerate(DIRTY.values()):
        form = sign_form(dirty_content(f"HB-LIVE-{number}", value))
        reply = post(form)
        assert (reply.status_code, reply.text) == (200, "SUCCESS"), number
        assert_recorded_clean(f"HB-LIVE-{number}", form)
