"""Properties of the general and per-method parsers and of notification verification:
arbitrary or mutated bodies and forms give a verified result or an ``HsqError``, never
anything else."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hsq_refunds.gateway import (
    HsqError,
    RefundApplyRequest,
    RefundApplyResult,
    RefundQueryResult,
    SignedResult,
    notification_merchant_no,
    parse_signed_response,
    verify_notification,
    verify_result,
)
from hsq_refunds.gateway.notification import NOTIFICATION_FIELDS
from hsq_refunds.gateway.signing import failure_sign_strings

from .support import (
    MERCHANT_NO,
    SIGN_KEY,
    TRANS_NO,
    apply_result,
    failure_body,
    notification_form,
    success_body,
)

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
result_keys = st.sampled_from(
    ["merchantNo", "transNo", "tradeNo", "orderAmt", "orderStatus", "finishedDate", "respCode",
     "respMsg", "origTransNo", "extend"]
)  # fmt: skip
result_values = (
    json_values
    | st.sampled_from(["SUCCESS", "FAIL", "PROCESSING", "INIT", TRANS_NO, MERCHANT_NO, ""])
    | st.integers(-(2**70), 2**70)
    | st.from_regex(r"[0-9]{1,20}", fullmatch=True)
)
results = st.dictionaries(result_keys, result_values, max_size=10)

APPLICATION = RefundApplyRequest(
    trans_no=TRANS_NO,
    orig_trans_no="PAY1",
    orig_amount=2000,
    amount=1500,
    request_date=datetime(2024, 1, 1, tzinfo=UTC),
)


def _signed(body, platform_public):
    try:
        signed = parse_signed_response(body, sign_key=SIGN_KEY, platform_key=platform_public)
    except HsqError:
        return None
    assert isinstance(signed, SignedResult)
    assert verify_result(
        signed.raw_result, signed.sign, sign_key=SIGN_KEY, platform_key=platform_public
    )
    return signed


def _notified(form, platform_public):
    try:
        result = verify_notification(
            form, merchant_no=MERCHANT_NO, sign_key=SIGN_KEY, platform_key=platform_public
        )
    except HsqError:
        return None
    assert isinstance(result, RefundQueryResult)
    return result


# --------------------------------------------------------------------------- answers


@PROPERTY
@given(body=st.binary(max_size=600) | st.text(max_size=300))
def test_arbitrary_bodies(platform_public, body):
    assert _signed(body, platform_public) is None


@PROPERTY
@given(
    envelope=st.dictionaries(
        st.sampled_from(["success", "result", "sign", "errorCode", "errorMsg", "status"]),
        json_values | st.sampled_from([True, False, "TRUE", "False", "true"]),
        max_size=6,
    )
)
def test_arbitrary_envelopes(platform_public, envelope):
    assert _signed(json.dumps(envelope), platform_public) is None


@PROPERTY
@given(fields=results)
def test_any_signed_result_is_an_application_result_or_a_response_error(
    platform_private, platform_public, fields
):
    """Even what the platform key signed must be about the refund applied for, in range."""
    signed = _signed(success_body(platform_private, fields), platform_public)
    assert signed is not None
    try:
        result = APPLICATION.result(signed, merchant_no=MERCHANT_NO)
    except HsqError:
        return
    assert isinstance(result, RefundApplyResult)
    assert result.trans_no == TRANS_NO == fields["transNo"]
    assert result.amount is None or 0 <= result.amount <= 10**16


@PROPERTY
@given(data=st.data())
def test_edited_application_answers(platform_private, platform_public, data):
    body = success_body(platform_private, apply_result())
    index = data.draw(st.integers(0, len(body) - 1))
    byte = data.draw(st.integers(0, 255))
    mutated = body[:index] + bytes([byte]) + body[index + 1 :]
    signed = _signed(mutated, platform_public)
    if signed is not None:
        # Only edits outside the signed result survive (whitespace, other fields, hex case).
        assert signed.raw_result == json.loads(body)["result"]
        assert APPLICATION.result(signed, merchant_no=MERCHANT_NO).trans_no == TRANS_NO


@PROPERTY
@given(code=json_values, message=json_values | st.just(""), data=st.data())
def test_failures_never_return(platform_private, platform_public, code, message, data):
    layouts = len(failure_sign_strings(code, message, SIGN_KEY))
    layout = data.draw(st.integers(0, layouts - 1))
    body = failure_body(platform_private, code, message, layout=layout)
    assert _signed(body, platform_public) is None


# --------------------------------------------------------------------------- notifications


form_values = st.text(max_size=40) | json_values | st.sampled_from([MERCHANT_NO, "", "RSA2"])


@PROPERTY
@given(form=st.dictionaries(st.sampled_from(NOTIFICATION_FIELDS), form_values, max_size=7))
def test_arbitrary_forms(platform_public, form):
    assert _notified(form, platform_public) is None
    try:
        assert notification_merchant_no(form) == form["merchantNo"]
    except HsqError:
        pass


@PROPERTY
@given(data=st.data())
def test_edited_notifications(platform_private, platform_public, data):
    form = notification_form(platform_private)
    field = data.draw(st.sampled_from(NOTIFICATION_FIELDS))
    value = form[field]
    index = data.draw(st.integers(0, max(0, len(value) - 1)))
    char = data.draw(st.characters())
    kind = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    if kind == "replace" and value:
        edited = value[:index] + char + value[index + 1 :]
    elif kind == "delete" and value:
        edited = value[:index] + value[index + 1 :]
    else:
        edited = value[:index] + char + value[index:]
    assume(edited != value)
    if field == "sign":
        assume(edited.lower() != value.lower())  # a hex digit's case is the same signature
    result = _notified({**form, field: edited}, platform_public)
    assert result is None


@PROPERTY
@given(content=st.one_of(results.map(json.dumps), st.text(max_size=80)))
def test_any_signed_notification_content(platform_private, platform_public, content):
    """Signed by the platform, yet read with a query result's rules: a valid result about a
    refund, or an HsqError."""
    result = _notified(notification_form(platform_private, content), platform_public)
    if result is not None:
        assert result.raw_result == content
        assert result.trans_no  # a notification must name its refund
        assert result.merchant_no == MERCHANT_NO
