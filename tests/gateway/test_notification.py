"""Verifying HSQ's refund notification: the received fields, signed by the platform like a
request; only then is ``signContent`` read, with a query result's rules."""

from __future__ import annotations

import json
import logging
import urllib.parse
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from hsq_refunds.gateway import (
    MAX_AMOUNT_FEN,
    HsqClient,
    HsqError,
    RefundQueryResult,
    RefundStatus,
    ResponseError,
    SignatureError,
    notification_merchant_no,
    verify_notification,
    verify_notification_signature,
    verify_result,
)
from hsq_refunds.gateway.notification import NOTIFICATION_FIELDS

from .support import MERCHANT_NO, SIGN_KEY, TRANS_NO, business_result, notification_form


@pytest.fixture
def verify(platform_public):
    def verify(form, *, merchant_no=MERCHANT_NO, sign_key=SIGN_KEY, platform_key=None):
        return verify_notification(
            form,
            merchant_no=merchant_no,
            sign_key=sign_key,
            platform_key=platform_public if platform_key is None else platform_key,
        )

    return verify


@pytest.fixture
def form(platform_private):
    def form(content=None, **overrides):
        return notification_form(platform_private, content, **overrides)

    return form


# --------------------------------------------------------------------------- verified


def test_a_notification_reads_like_a_query_result(verify, form, platform_public):
    received = form()
    result = verify(received)
    assert isinstance(result, RefundQueryResult)
    assert result.merchant_no == MERCHANT_NO
    assert result.trans_no == TRANS_NO
    assert result.status is RefundStatus.SUCCESS and result.is_final
    assert result.amount == 1500  # sent as a string
    assert result.finished_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert (result.resp_code, result.resp_msg) == ("200007", "查询成功")
    assert (result.orig_trans_no, result.trade_no) == (
        "PAY20240101000001",
        "12000020240101000000000000000001",
    )
    assert result.extend == "自定义参数"
    assert result.raw_result == received["signContent"]
    assert result.sign == received["sign"]
    # The proof is a notification's, not a query answer's: it verifies with all its fields.
    assert verify_notification_signature(received, sign_key=SIGN_KEY, platform_key=platform_public)
    assert not verify_result(
        result.raw_result, result.sign, sign_key=SIGN_KEY, platform_key=platform_public
    )


@pytest.mark.parametrize(
    ("method", "version"),
    [("CALLBACK", "1.0.0"), ("POLYMERIZE_REFUND", "1.0"), ("REFUND_NOTIFY", "2"), ("", "")],
)
def test_method_and_version_are_taken_as_received(verify, form, method, version):
    assert verify(form(method=method, version=version)).trans_no == TRANS_NO


def test_amount_as_a_number_and_signature_in_upper_case(verify, form):
    received = form(business_result(orderAmt=1500))
    received["sign"] = received["sign"].upper()
    result = verify(received)
    assert result.amount == 1500
    assert result.sign == received["sign"]


def test_signcontent_is_verified_exactly_as_received(verify, form):
    text = json.dumps(business_result(), indent=2, sort_keys=True)
    assert verify(form(text)).raw_result == text


@pytest.mark.parametrize("status", list(RefundStatus))
def test_every_status(verify, form, status):
    assert verify(form(business_result(orderStatus=status.value))).status is status


def test_the_form_survives_one_round_of_form_encoding(verify, form):
    """Values with ``& = + %`` come through a single decode of the body intact."""
    received = form(business_result(extend="a&b=c+d%20e 退"))
    body = urllib.parse.urlencode(received)
    decoded = dict(urllib.parse.parse_qsl(body, keep_blank_values=True, strict_parsing=True))
    assert verify(decoded).extend == "a&b=c+d%20e 退"
    # Decoding twice, as some clients did, corrupts the values and fails verification.
    twice = {name: urllib.parse.unquote_plus(value) for name, value in decoded.items()}
    with pytest.raises((SignatureError, ResponseError)):
        verify(twice)


def test_the_client_verifies_with_its_own_keys(
    form, merchant_private, platform_public, caplog, platform_private
):
    caplog.set_level(logging.DEBUG, logger="hsq_refunds")
    with HsqClient(
        merchant_no=MERCHANT_NO,
        sign_key=SIGN_KEY,
        private_key=merchant_private,
        platform_key=platform_public,
    ) as client:
        assert client.verify_notification(form()).status is RefundStatus.SUCCESS
        with pytest.raises(ResponseError, match="merchantNo"):
            client.verify_notification(form(merchantNo="888000000002"))
        other = notification_form(platform_private, sign_key="f" * 32)
        with pytest.raises(SignatureError):
            client.verify_notification(other)
    lines = [r.getMessage() for r in caplog.records if r.name == "hsq_refunds.gateway.client"]
    assert lines[0].startswith(f"notification transNo={TRANS_NO} outcome=ok")
    assert "outcome=error:response" in lines[1] and "outcome=error:signature" in lines[2]
    assert SIGN_KEY not in "\n".join(lines)


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize("field", NOTIFICATION_FIELDS)
def test_a_missing_field_is_refused(verify, form, field):
    received = form()
    del received[field]
    error = SignatureError if field == "sign" else ResponseError
    with pytest.raises(error, match=field if field != "sign" else "not signed"):
        verify(received)


@pytest.mark.parametrize("field", NOTIFICATION_FIELDS)
def test_a_field_that_is_not_text_is_refused(verify, form, field):
    received = form()
    received[field] = [received[field]]
    with pytest.raises((ResponseError, SignatureError)):
        verify(received)


@pytest.mark.parametrize("field", ["method", "version", "format", "signType", "signContent"])
def test_a_changed_field_does_not_verify(verify, form, field):
    received = form()
    received[field] += " "
    with pytest.raises(SignatureError, match="does not verify"):
        verify(received)


def test_another_merchant_is_refused(verify, form):
    with pytest.raises(ResponseError, match="merchantNo '888000000002'"):
        verify(form(merchantNo="888000000002"))


def test_a_wrong_sign_key_or_platform_key_does_not_verify(verify, form):
    with pytest.raises(SignatureError):
        verify(form(), sign_key="f" * 32)
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(SignatureError):
        verify(form(), platform_key=other.public_key())
    with pytest.raises(SignatureError):
        verify(notification_form(other))


@pytest.mark.parametrize("value", ["", "zz", "00" * 128, "ab"])
def test_a_malformed_signature_does_not_verify(verify, form, value):
    received = form()
    received["sign"] = value
    with pytest.raises(SignatureError):
        verify(received)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "signContent is not JSON"),
        ("[1]", "not a JSON object"),
        (business_result(transNo=...), "no transNo"),
        (business_result(transNo=""), "no transNo"),
        (business_result(orderStatus="DONE"), "orderStatus"),
        (business_result(orderAmt=MAX_AMOUNT_FEN + 1), "orderAmt"),
        (business_result(orderAmt=str(MAX_AMOUNT_FEN + 1)), "orderAmt"),
        (business_result(orderAmt="-5"), "orderAmt"),
        (business_result(finishedDate="yesterday"), "finishedDate"),
        (business_result(merchantNo="888000000002"), "merchantNo"),
        (business_result(respCode={"a": 1}), "respCode"),
    ],
)
def test_a_verified_but_malformed_content_is_refused(verify, form, content, match):
    with pytest.raises(ResponseError, match=match):
        verify(form(content))


def test_content_is_read_only_after_verification(verify, form):
    """A bad signature wins over a bad content: unverified text is never parsed."""
    received = form("not json")
    received["sign"] = "00" * 128
    with pytest.raises(SignatureError):
        verify(received)


def test_not_a_form(verify):
    for value in (None, "method=x", ["method"], 5):
        with pytest.raises(ResponseError):
            verify(value)


def test_errors_are_hsq_errors(verify, form):
    with pytest.raises(HsqError):
        verify({})


# --------------------------------------------------------------------------- whose keys


def test_notification_merchant_no(form):
    assert notification_merchant_no(form()) == MERCHANT_NO


@pytest.mark.parametrize("value", [..., "", None, 814000473149, "1" * 17, " 8140", "81\n40"])
def test_notification_merchant_no_refuses_non_merchant_numbers(form, value):
    received = form()
    if value is ...:
        del received["merchantNo"]
    else:
        received["merchantNo"] = value
    with pytest.raises(ResponseError, match="merchantNo"):
        notification_merchant_no(received)


def test_verify_notification_signature_never_raises(form, platform_public):
    received = form()
    assert verify_notification_signature(received, sign_key=SIGN_KEY, platform_key=platform_public)
    for broken in ({}, {**received, "sign": None}, {**received, "method": 1}, None, []):
        assert not verify_notification_signature(
            broken, sign_key=SIGN_KEY, platform_key=platform_public
        )
