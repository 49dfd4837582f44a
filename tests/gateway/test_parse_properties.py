"""Properties of ``parse_refund_query_response``: it returns only what the platform key signed,
and anything else is an ``HsqError``, never another exception."""

from __future__ import annotations

import json
from datetime import datetime

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hsq_refunds.gateway import HsqError, RefundQueryResult, RefundStatus
from hsq_refunds.gateway import parse_refund_query_response as parse_response
from hsq_refunds.gateway.signing import success_sign_string, verify

from .support import MERCHANT_NO, SIGN_KEY, TRANS_NO, business_result, failure_body, success_body

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
envelope_keys = st.sampled_from(
    ["success", "result", "sign", "errorCode", "errorMsg", "timestamp", "status", "error", "path"]
)
envelope_values = (
    json_values
    | st.sampled_from([True, False, "true", "false"])
    | st.text(alphabet="0123456789abcdef", min_size=0, max_size=300)
    | st.builds(lambda fields: json.dumps(fields), st.dictionaries(st.text(), json_values))
)


def _outcome(body, platform_public, *, trans_no=TRANS_NO):
    """Parse, asserting the only two allowed outcomes; return the result or ``None``."""
    try:
        result = parse_response(
            body,
            merchant_no=MERCHANT_NO,
            trans_no=trans_no,
            sign_key=SIGN_KEY,
            platform_key=platform_public,
        )
    except HsqError:
        return None
    assert isinstance(result, RefundQueryResult)
    return result


def _assert_verified(result, body, platform_public):
    """A returned result's ``raw_result`` is what the body's ``sign`` covers, byte for byte."""
    envelope = json.loads(body)
    assert envelope["result"] == result.raw_result
    assert verify(
        platform_public, success_sign_string(result.raw_result, SIGN_KEY), envelope["sign"]
    )


@PROPERTY
@given(body=st.binary(max_size=600))
def test_arbitrary_bytes(platform_public, body):
    result = _outcome(body, platform_public)
    assert result is None


@PROPERTY
@given(value=json_values)
def test_arbitrary_json(platform_public, value):
    assert _outcome(json.dumps(value), platform_public) is None


@PROPERTY
@given(envelope=st.dictionaries(envelope_keys, envelope_values, max_size=6))
def test_arbitrary_envelopes(platform_public, envelope):
    # Unsigned by the platform key: nothing can come out but an error.
    assert _outcome(json.dumps(envelope), platform_public) is None


# --------------------------------------------------------------------------- mutations


@st.composite
def _edit(draw, text):
    """``text`` with one character replaced, inserted or deleted."""
    assume(text)
    index = draw(st.integers(0, len(text) - 1))
    kind = draw(st.sampled_from(["replace", "insert", "delete"]))
    char = draw(st.characters())
    if kind == "replace":
        assume(char != text[index])
        return text[:index] + char + text[index + 1 :]
    if kind == "insert":
        return text[:index] + char + text[index:]
    return text[:index] + text[index + 1 :]


@PROPERTY
@given(data=st.data())
def test_edited_result_never_verifies(platform_private, platform_public, data):
    body = success_body(platform_private, business_result())
    envelope = json.loads(body)
    envelope["result"] = data.draw(_edit(envelope["result"]))
    mutated = json.dumps(envelope, ensure_ascii=data.draw(st.booleans()))
    assert _outcome(mutated, platform_public) is None


@PROPERTY
@given(data=st.data())
def test_edited_signature_never_verifies(platform_private, platform_public, data):
    envelope = json.loads(success_body(platform_private, business_result()))
    edited = data.draw(_edit(envelope["sign"]))
    # Changing the case of a hex digit keeps the same signature.
    assume(edited.lower() != envelope["sign"])
    envelope["sign"] = edited
    assert _outcome(json.dumps(envelope), platform_public) is None


@PROPERTY
@given(data=st.data())
def test_edited_body_bytes(platform_private, platform_public, data):
    body = success_body(platform_private, business_result())
    index = data.draw(st.integers(0, len(body) - 1))
    byte = data.draw(st.integers(0, 255))
    mutated = body[:index] + bytes([byte]) + body[index + 1 :]
    result = _outcome(mutated, platform_public)
    if result is not None:
        # Only edits that leave the signed result and its signature as they were survive
        # (whitespace, the other fields of the envelope, a hex digit's case).
        _assert_verified(result, mutated, platform_public)
        assert result.raw_result == json.loads(body)["result"]


@PROPERTY
@given(success=json_values | st.sampled_from(["true", "false", "TRUE", "True", 1, 0]))
def test_changed_success_flag(platform_private, platform_public, success):
    envelope = json.loads(success_body(platform_private, business_result()))
    envelope["success"] = success
    result = _outcome(json.dumps(envelope), platform_public)
    is_true = success is True or (isinstance(success, str) and success.lower() == "true")
    assert (result is not None) == is_true


@PROPERTY
@given(
    ensure_ascii=st.booleans(),
    indent=st.none() | st.integers(0, 4),
    sort_keys=st.booleans(),
)
def test_reencoded_envelope_parses_the_same(
    platform_private, platform_public, ensure_ascii, indent, sort_keys
):
    body = success_body(platform_private, business_result())
    expected = _outcome(body, platform_public)
    reencoded = json.dumps(
        json.loads(body), ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys
    )
    assert _outcome(reencoded, platform_public) == expected
    assert expected is not None


@PROPERTY
@given(code=json_values, message=json_values, edit=st.booleans())
def test_failures_are_gateway_or_signature_errors(
    platform_private, platform_public, code, message, edit
):
    envelope = json.loads(failure_body(platform_private, code, message))
    if edit:
        envelope["errorMsg"] = [envelope["errorMsg"]]
    assert _outcome(json.dumps(envelope), platform_public) is None


# --------------------------------------------------------------------------- valid answers


order_numbers = st.text(
    alphabet=st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=64
)
texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
finished_dates = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))


@PROPERTY
@given(
    trans_no=order_numbers,
    status=st.none() | st.sampled_from(list(RefundStatus)),
    amount=st.none() | st.integers(0, 10**15),
    amount_as_text=st.booleans(),
    finished=st.none() | finished_dates,
    resp_code=texts,
    resp_msg=texts,
    extend=texts,
    trade_no=texts,
    orig_trans_no=texts,
    ensure_ascii=st.booleans(),
)
def test_valid_signed_answer_always_parses(
    platform_private,
    platform_public,
    trans_no,
    status,
    amount,
    amount_as_text,
    finished,
    resp_code,
    resp_msg,
    extend,
    trade_no,
    orig_trans_no,
    ensure_ascii,
):
    fields = {
        "merchantNo": MERCHANT_NO,
        "transNo": trans_no,
        "orderStatus": status.value if status else "",
        "orderAmt": (str(amount) if amount_as_text else amount) if amount is not None else "",
        "finishedDate": finished.strftime("%Y%m%d%H%M%S") if finished else "",
        "respCode": resp_code,
        "respMsg": resp_msg,
        "extend": extend,
        "tradeNo": trade_no,
        "origTransNo": orig_trans_no,
    }
    result_text = json.dumps(fields, ensure_ascii=ensure_ascii)
    body = success_body(platform_private, result_text)
    result = _outcome(body, platform_public, trans_no=trans_no)
    assert result is not None
    assert result.raw_result == result_text
    assert result.trans_no == trans_no
    assert result.status == status
    assert result.amount == amount
    assert (result.finished_at.replace(tzinfo=None) if result.finished_at else None) == (
        finished.replace(microsecond=0) if finished else None
    )
    assert (result.resp_code, result.resp_msg, result.extend) == (resp_code, resp_msg, extend)
    assert (result.trade_no, result.orig_trans_no) == (trade_no, orig_trans_no)


@PROPERTY
@given(extra=st.text(alphabet=" \t\r\n", max_size=5))
def test_whitespace_around_the_body(platform_private, platform_public, extra):
    body = success_body(platform_private, business_result())
    assert _outcome(extra.encode() + body + extra.encode(), platform_public) is not None
