"""The response rules of docs/protocol.md, applied by ``parse_refund_query_response`` and the
general ``parse_signed_response``."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from hsq_refunds.gateway import (
    MAX_AMOUNT_FEN,
    GatewayError,
    HsqError,
    RefundStatus,
    ResponseError,
    SignatureError,
    SignedResult,
    TransportError,
    parse_refund_query_response,
    parse_signed_response,
    verify_result,
)
from hsq_refunds.gateway.signing import sign, success_sign_string

from .support import (
    MERCHANT_NO,
    SIGN_KEY,
    TRANS_NO,
    business_result,
    failure_body,
    success_body,
)


@pytest.fixture
def parse(platform_public):
    def parse(body, *, trans_no=TRANS_NO, merchant_no=MERCHANT_NO, sign_key=SIGN_KEY):
        return parse_refund_query_response(
            body,
            merchant_no=merchant_no,
            trans_no=trans_no,
            sign_key=sign_key,
            platform_key=platform_public,
        )

    return parse


@pytest.fixture
def signed(platform_private):
    def signed(result=None, **kwargs):
        return success_body(
            platform_private, business_result() if result is None else result, **kwargs
        )

    return signed


# --------------------------------------------------------------------------- success


def test_valid_success(parse, signed):
    body = signed()
    result = parse(body)
    assert result.merchant_no == MERCHANT_NO
    assert result.trans_no == TRANS_NO
    assert result.status is RefundStatus.SUCCESS
    assert result.is_final
    assert result.amount == 1500
    assert result.finished_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert result.finished_at.utcoffset().total_seconds() == 8 * 3600
    assert result.resp_code == "200007"
    assert result.resp_msg == "查询成功"
    assert result.orig_trans_no == "PAY20240101000001"
    assert result.trade_no == "12000020240101000000000000000001"
    assert result.extend == "自定义参数"
    assert result.raw_result == json.loads(body)["result"]
    assert result.as_gateway_dict() == {**business_result(), "orderAmt": 1500}


def test_body_as_text(parse, signed):
    assert parse(signed().decode()).status is RefundStatus.SUCCESS


def test_success_as_string(parse, signed):
    assert parse(signed(success="true")).status is RefundStatus.SUCCESS


@pytest.mark.parametrize("value", ["True", "TRUE", "tRuE"])
def test_success_as_string_in_any_case(parse, signed, value):
    assert parse(signed(success=value)).status is RefundStatus.SUCCESS


def test_signature_in_upper_case_hex(parse, platform_private):
    envelope = json.loads(success_body(platform_private, business_result()))
    envelope["sign"] = envelope["sign"].upper()
    assert parse(json.dumps(envelope)).status is RefundStatus.SUCCESS


def test_result_is_verified_exactly_as_received(parse, platform_private):
    """Whitespace and key order in ``result`` are the gateway's; re-serializing would break."""
    text = json.dumps(business_result(), indent=2, sort_keys=True, ensure_ascii=True)
    result = parse(success_body(platform_private, text))
    assert result.raw_result == text
    assert result.extend == "自定义参数"


@pytest.mark.parametrize("status", list(RefundStatus))
def test_every_status(parse, signed, status):
    assert parse(signed(business_result(orderStatus=status.value))).status is status


@pytest.mark.parametrize("value", ["", None, ...])
def test_no_order_status(parse, signed, value):
    result = parse(signed(business_result(orderStatus=value, respCode="200008")))
    assert result.status is None
    assert not result.is_final


@pytest.mark.parametrize("value", ["success", "DONE", " SUCCESS", 1, True, ["SUCCESS"]])
def test_unknown_order_status(parse, signed, value):
    with pytest.raises(ResponseError, match="orderStatus"):
        parse(signed(business_result(orderStatus=value)))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1500, 1500),
        ("1500", 1500),
        ("0", 0),
        (0, 0),
        ("007", 7),
        ("", None),
        (None, None),
        (..., None),
    ],
)
def test_amount(parse, signed, value, expected):
    assert parse(signed(business_result(orderAmt=value))).amount == expected


@pytest.mark.parametrize(
    "value", [-1, "-1", "1.5", 1.5, 15.0, "abc", True, "１２", " 12", "12\n", [1], "1" * 40]
)
def test_bad_amount(parse, signed, value):
    with pytest.raises(ResponseError, match="orderAmt"):
        parse(signed(business_result(orderAmt=value)))


@pytest.mark.parametrize("as_text", [False, True])
def test_largest_amount(parse, signed, as_text):
    value = str(MAX_AMOUNT_FEN) if as_text else MAX_AMOUNT_FEN
    assert parse(signed(business_result(orderAmt=value))).amount == MAX_AMOUNT_FEN


@pytest.mark.parametrize(
    "value",
    [MAX_AMOUNT_FEN + 1, str(MAX_AMOUNT_FEN + 1), 2**63, 2**63 + 1, 2**64, 10**30, "9" * 18],
)
def test_amount_above_the_limit(parse, signed, value):
    """Above 10^16 fen, as a JSON number or as text: refused before it can reach a 64-bit
    column (a number above 2^63 would overflow SQLite)."""
    with pytest.raises(ResponseError, match="orderAmt"):
        parse(signed(business_result(orderAmt=value)))


@pytest.mark.parametrize("value", ["", None, ...])
def test_no_finished_date(parse, signed, value):
    assert parse(signed(business_result(finishedDate=value))).finished_at is None


def test_finished_date_as_number(parse, signed):
    result = parse(signed(business_result(finishedDate=20240102030405)))
    assert result.finished_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=ZoneInfo("Asia/Shanghai"))


@pytest.mark.parametrize(
    "value",
    ["2024-01-02 03:04:05", "20241302030405", "20240230120000", "2024010203040", "202401020304051",
     "2024 1 2030405", True, 1.5],
)  # fmt: skip
def test_bad_finished_date(parse, signed, value):
    with pytest.raises(ResponseError, match="finishedDate"):
        parse(signed(business_result(finishedDate=value)))


def test_text_fields_from_numbers_and_nulls(parse, signed):
    result = parse(
        signed(business_result(respCode=200007, respMsg=None, tradeNo=12345, extend=None))
    )
    assert (result.resp_code, result.resp_msg, result.trade_no, result.extend) == (
        "200007",
        "",
        "12345",
        "",
    )


@pytest.mark.parametrize("field", ["respCode", "respMsg", "extend", "tradeNo", "origTransNo"])
def test_text_field_that_is_an_object(parse, signed, field):
    with pytest.raises(ResponseError, match=field):
        parse(signed(business_result(**{field: {"a": 1}})))


# --------------------------------------------------------------------------- about what was asked


def test_other_trans_no(parse, signed):
    with pytest.raises(ResponseError, match="transNo"):
        parse(signed(business_result(transNo=TRANS_NO + "X")))


def test_other_trans_no_without_status(parse, signed):
    body = signed({"transNo": "OTHER", "respCode": "200004", "respMsg": "订单不存在"})
    with pytest.raises(ResponseError, match="transNo"):
        parse(body)


def test_missing_trans_no_with_status(parse, signed):
    with pytest.raises(ResponseError, match="no transNo"):
        parse(signed(business_result(transNo=...)))


@pytest.mark.parametrize("code", ["200004", "200009", "200008", "200021"])
def test_missing_trans_no_without_status_is_allowed(parse, signed, code):
    result = parse(signed({"merchantNo": MERCHANT_NO, "respCode": code, "respMsg": "x"}))
    assert result.status is None
    assert result.trans_no == TRANS_NO
    assert result.resp_code == code


def test_trans_no_is_compared_exactly(parse, signed):
    with pytest.raises(ResponseError):
        parse(signed(business_result(transNo=TRANS_NO.lower())))


def test_other_merchant(parse, signed):
    with pytest.raises(ResponseError, match="merchantNo"):
        parse(signed(business_result(merchantNo="888000000002")))


def test_missing_merchant_is_allowed(parse, signed):
    assert parse(signed(business_result(merchantNo=...))).merchant_no == MERCHANT_NO


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("value", [..., None, ""])
def test_unsigned_success(parse, platform_private, value):
    envelope = json.loads(success_body(platform_private, business_result()))
    if value is ...:
        del envelope["sign"]
    else:
        envelope["sign"] = value
    with pytest.raises(SignatureError, match="without a signature"):
        parse(json.dumps(envelope))


def test_signature_by_another_key(parse):
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(SignatureError, match="does not verify"):
        parse(success_body(other, business_result()))


def test_signature_with_another_sign_key(parse, signed):
    with pytest.raises(SignatureError):
        parse(signed(sign_key="f" * 32))


def test_tampered_result(parse, signed):
    envelope = json.loads(signed())
    envelope["result"] = envelope["result"].replace('"SUCCESS"', '"FAIL"')
    with pytest.raises(SignatureError):
        parse(json.dumps(envelope))


@pytest.mark.parametrize("value", [12345, ["ab"], "zz", "ab" * 10, " " + "a" * 256])
def test_malformed_signature(parse, signed, value):
    envelope = json.loads(signed())
    envelope["sign"] = value
    with pytest.raises(SignatureError):
        parse(json.dumps(envelope))


def test_signature_is_checked_before_the_result_is_read(parse, platform_private):
    """An unverified result is never parsed: a bad signature wins over a bad result."""
    envelope = {"success": True, "result": "not json", "sign": "00" * 128}
    with pytest.raises(SignatureError):
        parse(json.dumps(envelope))
    with pytest.raises(ResponseError, match="not JSON"):
        parse(success_body(platform_private, "not json"))


@pytest.mark.parametrize("result", ["[1, 2]", '"text"', "null", "12"])
def test_signed_result_that_is_not_an_object(parse, platform_private, result):
    with pytest.raises(ResponseError, match="not a JSON object"):
        parse(success_body(platform_private, result))


@pytest.mark.parametrize("result", [{"transNo": TRANS_NO}, None, 1, ["x"]])
def test_result_that_is_not_a_string(parse, platform_private, result):
    text = json.dumps(result)
    envelope = {
        "success": True,
        "result": result,
        "sign": sign(platform_private, success_sign_string(text, SIGN_KEY)),
    }
    with pytest.raises(ResponseError, match="not a string"):
        parse(json.dumps(envelope))


def test_lone_surrogate_in_result_cannot_verify(parse, platform_private):
    envelope = json.loads(success_body(platform_private, business_result()))
    envelope["result"] = envelope["result"][:-1] + ',"x":"\ud800"}'
    body = json.dumps(envelope)  # ensure_ascii escapes the surrogate
    with pytest.raises(SignatureError):
        parse(body)


# --------------------------------------------------------------------------- the envelope


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>Bad Gateway</html>", b"\xff\xfe\x00", b"[1, 2]", b'"ok"', b"null", b"{",
     b"[" * 100_000],
)  # fmt: skip
def test_not_an_envelope(parse, body):
    with pytest.raises(TransportError) as caught:
        parse(body)
    assert caught.value.status_code is None


def test_spring_error_body(parse):
    body = {
        "timestamp": "2024-01-01T00:00:00.000+08:00",
        "status": 502,
        "error": "Bad Gateway",
        "message": "",
        "path": "/api/acquiring",
    }
    with pytest.raises(TransportError, match="server error page") as caught:
        parse(json.dumps(body))
    assert caught.value.status_code == 502


@pytest.mark.parametrize("value", [..., None, "yes", " true", "true ", 1, 0, "", [True]])
def test_bad_success_flag(parse, platform_private, value):
    envelope = json.loads(success_body(platform_private, business_result()))
    if value is ...:
        del envelope["success"]
    else:
        envelope["success"] = value
    with pytest.raises(ResponseError, match="success"):
        parse(json.dumps(envelope))


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("success", [False, "false", "False", "FALSE"])
def test_signed_failure(parse, platform_private, success):
    envelope = json.loads(failure_body(platform_private, "SYSTEM_ERROR", "系统繁忙"))
    envelope["success"] = success
    with pytest.raises(GatewayError) as caught:
        parse(json.dumps(envelope))
    error = caught.value
    assert (error.error_code, error.error_msg, error.signed) == ("SYSTEM_ERROR", "系统繁忙", True)
    assert error.code == "SYSTEM_ERROR"
    assert "SYSTEM_ERROR" in str(error) and "系统繁忙" in str(error)


@pytest.mark.parametrize("layout", [0, 1, 2, 3])
def test_signed_failure_with_null_fields_in_every_layout(parse, platform_private, layout):
    with pytest.raises(GatewayError) as caught:
        parse(failure_body(platform_private, None, None, layout=layout))
    assert caught.value.signed
    assert (caught.value.error_code, caught.value.error_msg) == ("", "")


def test_signed_failure_with_numeric_code(parse, platform_private):
    with pytest.raises(GatewayError) as caught:
        parse(failure_body(platform_private, 40001, "bad"))
    assert caught.value.signed
    assert caught.value.code == "40001"


@pytest.mark.parametrize("sign_value", [..., None, ""])
def test_unsigned_failure(parse, sign_value):
    envelope = json.loads(failure_body(None, "SIGN_ERROR", "验签失败"))
    if sign_value is not ...:
        envelope["sign"] = sign_value
    with pytest.raises(GatewayError) as caught:
        parse(json.dumps(envelope))
    assert caught.value.signed is False
    assert caught.value.code == "SIGN_ERROR"
    assert "unsigned" in str(caught.value)


@pytest.mark.parametrize("error_msg", ["", None, ...])
def test_signed_failure_without_the_empty_message_pair(parse, platform_private, error_msg):
    """One public client leaves an empty errorMsg out of the sign string altogether."""
    envelope = {"success": False, "errorCode": "SYSTEM_ERROR"}
    if error_msg is not ...:
        envelope["errorMsg"] = error_msg
    text = f"errorCode=SYSTEM_ERROR&success=false&key={SIGN_KEY}"
    envelope["sign"] = sign(platform_private, text)
    with pytest.raises(GatewayError) as caught:
        parse(json.dumps(envelope))
    assert caught.value.signed
    assert (caught.value.code, caught.value.error_msg) == ("SYSTEM_ERROR", "")


def test_the_short_failure_layout_needs_an_empty_message(parse, platform_private):
    """With a message, its pair must be in the signed string: leaving it out does not verify
    (or a message could be swapped under a valid signature)."""
    envelope = {"success": False, "errorCode": "SYSTEM_ERROR", "errorMsg": "系统繁忙"}
    envelope["sign"] = sign(
        platform_private, f"errorCode=SYSTEM_ERROR&success=false&key={SIGN_KEY}"
    )
    with pytest.raises(SignatureError, match="failure"):
        parse(json.dumps(envelope))


def test_failure_whose_signature_does_not_verify(parse, platform_private):
    envelope = json.loads(failure_body(platform_private, "SYSTEM_ERROR", "系统繁忙"))
    envelope["errorCode"] = "OTHER"
    with pytest.raises(SignatureError, match="failure"):
        parse(json.dumps(envelope))


def test_every_error_is_an_hsq_error(parse):
    for body in (b"x", b'{"success": "maybe"}', b'{"success": false}'):
        with pytest.raises(HsqError):
            parse(body)


# --------------------------------------------------------------------------- the general parts


def test_signed_response_keeps_result_fields_and_sign_as_received(
    platform_public, platform_private
):
    text = json.dumps(business_result(), indent=1)
    envelope = json.loads(success_body(platform_private, text))
    envelope["sign"] = envelope["sign"].upper()
    signed = parse_signed_response(
        json.dumps(envelope), sign_key=SIGN_KEY, platform_key=platform_public
    )
    assert isinstance(signed, SignedResult)
    assert signed.raw_result == text
    assert signed.fields == business_result()
    assert signed.sign == envelope["sign"]  # exactly as received, upper case included
    assert signed.sign not in repr(signed)


def test_query_result_keeps_the_sign_for_later(parse, platform_public, signed):
    body = signed()
    result = parse(body)
    assert result.sign == json.loads(body)["sign"]
    assert verify_result(
        result.raw_result, result.sign, sign_key=SIGN_KEY, platform_key=platform_public
    )
    assert result.sign not in repr(result)


def test_verify_result_refuses_anything_else(parse, platform_public, platform_private, signed):
    result = parse(signed())
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    assert verify_result(
        result.raw_result, result.sign.upper(), sign_key=SIGN_KEY, platform_key=platform_public
    )
    for raw_result, signature, sign_key, key in [
        (result.raw_result.replace("SUCCESS", "FAIL"), result.sign, SIGN_KEY, platform_public),
        (result.raw_result + " ", result.sign, SIGN_KEY, platform_public),
        (result.raw_result, result.sign[:-2] + "00", SIGN_KEY, platform_public),
        (result.raw_result, result.sign, "f" * 32, platform_public),
        (result.raw_result, result.sign, SIGN_KEY, other),
        (result.raw_result, "", SIGN_KEY, platform_public),
        (result.raw_result, "zz" * 128, SIGN_KEY, platform_public),
        (result.raw_result, None, SIGN_KEY, platform_public),
        (None, result.sign, SIGN_KEY, platform_public),
        (result.raw_result.encode(), result.sign, SIGN_KEY, platform_public),
    ]:
        assert not verify_result(raw_result, signature, sign_key=sign_key, platform_key=key)


@pytest.mark.parametrize(
    "body",
    [b"x", b'{"success": "maybe"}', b'{"success": true, "result": "{}"}', b"[]"],
)
def test_signed_response_errors_are_hsq_errors(platform_public, body):
    with pytest.raises(HsqError):
        parse_signed_response(body, sign_key=SIGN_KEY, platform_key=platform_public)


def test_signed_response_of_a_failure(platform_public, platform_private):
    with pytest.raises(GatewayError) as caught:
        parse_signed_response(
            failure_body(platform_private, "LIMIT", "请求过于频繁"),
            sign_key=SIGN_KEY,
            platform_key=platform_public,
        )
    assert caught.value.signed and caught.value.code == "LIMIT"
