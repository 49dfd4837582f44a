"""``HsqClient.apply_refund`` (POLYMERIZE_REFUND): what is sent, how the answer is read, and
that an application is never sent twice, over real HTTP to local servers."""

from __future__ import annotations

import json
import logging
import re
import socket
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from hsq_refunds.gateway import (
    MAX_AMOUNT_FEN,
    ConfigurationError,
    GatewayError,
    HsqClient,
    InvalidRequestError,
    RefundApplyRequest,
    RefundApplyResult,
    RefundStatus,
    ResponseError,
    SignatureError,
    TransportError,
)
from hsq_refunds.gateway.signing import request_sign_string, verify
from hsq_refunds.gateway.transport import Call, _in_flight, _Retry

from .support import (
    MERCHANT_NO,
    SIGN_KEY,
    TRANS_NO,
    SocketGateway,
    apply_result,
    failure_body,
    http_response,
    success_body,
)

BEIJING = ZoneInfo("Asia/Shanghai")
REQUEST_DATE = datetime(2024, 1, 1, 12, 0, 0, tzinfo=BEIJING)


@pytest.fixture
def make_client(merchant_private, platform_public):
    clients: list[HsqClient] = []

    def make(url, **overrides):
        options = {
            "merchant_no": MERCHANT_NO,
            "sign_key": SIGN_KEY,
            "private_key": merchant_private,
            "platform_key": platform_public,
            "base_url": url,
            "retries": 2,
            "backoff_factor": 0,
            "read_timeout": 5,
        }
        options.update(overrides)
        client = HsqClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def gateway(recording_gateway, make_client):
    """The recording gateway and a client of it."""
    return recording_gateway, make_client(recording_gateway.url)


def application(**overrides):
    arguments = {
        "trans_no": TRANS_NO,
        "orig_trans_no": "PAY20240101000001",
        "orig_amount": 2000,
        "amount": 1500,
        "request_date": REQUEST_DATE,
    }
    arguments.update(overrides)
    return {key: value for key, value in arguments.items() if value is not ...}


# --------------------------------------------------------------------------- what is sent


def test_the_business_json_is_in_the_gateways_order(gateway, platform_private):
    recording, client = gateway
    recording.answer(200, success_body(platform_private, apply_result()))
    client.apply_refund(
        **application(
            reason="客户退货 & 退款",
            refund_type=1,
            return_url="https://example.com/hsq/refund-notify?shop=1",
            extend="单号=7",
        )
    )
    (request,) = recording.requests
    assert request.form["signContent"] == (
        f'{{"transNo":"{TRANS_NO}","refundType":1,"origTransNo":"PAY20240101000001",'
        '"origOrderAmt":2000,"orderAmt":1500,"requestDate":"20240101120000",'
        '"refundReason":"客户退货 & 退款",'
        '"returnUrl":"https://example.com/hsq/refund-notify?shop=1","extend":"单号=7"}'
    )
    assert request.form["method"] == "POLYMERIZE_REFUND"
    assert request.form["merchantNo"] == MERCHANT_NO


def test_the_request_is_signed_with_the_merchant_key(gateway, platform_private, merchant_private):
    recording, client = gateway
    recording.answer(200, success_body(platform_private, apply_result()))
    client.apply_refund(**application(reason="退款"))
    form = recording.requests[0].form
    signed = {name: form[name] for name in form if name != "sign"}
    assert verify(
        merchant_private.public_key(), request_sign_string(signed, SIGN_KEY), form["sign"]
    )
    assert SIGN_KEY.encode() not in recording.requests[0].body


@pytest.mark.parametrize("return_url", [None, ""])
def test_empty_return_url_and_extend_are_left_out(gateway, platform_private, return_url):
    recording, client = gateway
    recording.answer(200, success_body(platform_private, apply_result()))
    client.apply_refund(**application(return_url=return_url, extend=""))
    content = json.loads(recording.requests[0].form["signContent"])
    assert list(content) == [
        "transNo", "refundType", "origTransNo", "origOrderAmt", "orderAmt", "requestDate",
        "refundReason",
    ]  # fmt: skip
    assert content["refundReason"] == ""
    assert content["refundType"] == 2  # the default, as a JSON number


def test_request_date_is_sent_in_beijing_time(gateway, platform_private):
    recording, client = gateway
    recording.answer(200, success_body(platform_private, apply_result()))
    new_york = timezone(timedelta(hours=-5))
    client.apply_refund(**application(request_date=datetime(2023, 12, 31, 23, 30, tzinfo=new_york)))
    assert json.loads(recording.requests[0].form["signContent"])["requestDate"] == "20240101123000"


def test_request_date_defaults_to_now(gateway, platform_private):
    recording, client = gateway
    recording.answer(200, success_body(platform_private, apply_result()))
    before = datetime.now(BEIJING).strftime("%Y%m%d%H%M%S")
    client.apply_refund(**application(request_date=...))
    after = datetime.now(BEIJING).strftime("%Y%m%d%H%M%S")
    sent = json.loads(recording.requests[0].form["signContent"])["requestDate"]
    assert before <= sent <= after


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        ({"trans_no": ""}, "trans_no"),
        ({"trans_no": "x" * 65}, "trans_no"),
        ({"trans_no": "a\nb"}, "trans_no"),
        ({"trans_no": 1}, "trans_no"),
        ({"orig_trans_no": ""}, "orig_trans_no"),
        ({"orig_trans_no": None}, "orig_trans_no"),
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"amount": 1500.0}, "amount"),
        ({"amount": "1500"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": 2001}, "amount"),
        ({"orig_amount": 0}, "orig_amount"),
        ({"orig_amount": MAX_AMOUNT_FEN + 1, "amount": 1}, "orig_amount"),
        ({"orig_amount": False}, "orig_amount"),
        ({"refund_type": "2"}, "refund_type"),
        ({"refund_type": True}, "refund_type"),
        ({"refund_type": -1}, "refund_type"),
        ({"reason": "x" * 129}, "reason"),
        ({"reason": "line\nbreak"}, "reason"),
        ({"reason": None}, "reason"),
        ({"extend": "x" * 257}, "extend"),
        ({"extend": "\x00"}, "extend"),
        ({"return_url": "ftp://example.com/n"}, "return_url"),
        ({"return_url": "https://example.com/" + "x" * 256}, "return_url"),
        ({"return_url": "https://a:b@example.com/n"}, "return_url"),
        ({"return_url": 5}, "return_url"),
        ({"request_date": datetime(2024, 1, 1, 12, 0)}, "request_date"),
        ({"request_date": "20240101120000"}, "request_date"),
        ({"request_date": datetime.max.replace(tzinfo=UTC)}, "request_date"),
    ],
)
def test_invalid_arguments_are_refused_before_sending(gateway, overrides, argument):
    recording, client = gateway
    with pytest.raises(InvalidRequestError) as caught:
        client.apply_refund(**application(**overrides))
    assert str(caught.value).startswith(argument + " ")
    assert isinstance(caught.value, ValueError)
    assert recording.requests == []


def test_the_whole_order_may_be_refunded(gateway, platform_private):
    recording, client = gateway
    recording.answer(200, success_body(platform_private, apply_result(orderAmt=2000)))
    assert client.apply_refund(**application(amount=2000)).amount == 2000


def test_arguments_are_keyword_only(gateway):
    _recording, client = gateway
    with pytest.raises(TypeError):
        client.apply_refund(TRANS_NO, "PAY1", 100, 100)


# --------------------------------------------------------------------------- the answer


def test_accepted_application(gateway, platform_private):
    recording, client = gateway
    body = success_body(platform_private, apply_result())
    recording.answer(200, body)
    result = client.apply_refund(**application())
    assert isinstance(result, RefundApplyResult)
    assert result.merchant_no == MERCHANT_NO
    assert result.trans_no == TRANS_NO
    assert result.trade_no == "12000020240101000000000000000009"
    assert result.amount == 1500
    assert result.status is RefundStatus.PROCESSING
    assert not result.is_final
    assert result.finished_at is None
    assert (result.resp_code, result.resp_msg) == ("100201", "退款处理中")
    envelope = json.loads(body)
    assert (result.raw_result, result.sign) == (envelope["result"], envelope["sign"])
    assert result.as_gateway_dict() == {
        "merchantNo": MERCHANT_NO, "transNo": TRANS_NO,
        "tradeNo": "12000020240101000000000000000009", "orderAmt": 1500,
        "orderStatus": "PROCESSING", "finishedDate": "", "respCode": "100201",
        "respMsg": "退款处理中",
    }  # fmt: skip


def test_already_finished_application(gateway, platform_private):
    recording, client = gateway
    fields = apply_result(orderStatus="SUCCESS", finishedDate="20240101120003", orderAmt="1500")
    recording.answer(200, success_body(platform_private, fields))
    result = client.apply_refund(**application())
    assert result.status is RefundStatus.SUCCESS and result.is_final
    assert result.finished_at == datetime(2024, 1, 1, 12, 0, 3, tzinfo=BEIJING)
    assert result.amount == 1500


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (apply_result(transNo="OTHER"), "transNo"),
        (apply_result(transNo=...), "no transNo"),
        (apply_result(transNo=""), "no transNo"),
        (apply_result(transNo=TRANS_NO.lower()), "transNo"),
        (apply_result(merchantNo="888000000002"), "merchantNo"),
        (apply_result(orderStatus="DONE"), "orderStatus"),
        (apply_result(orderAmt=MAX_AMOUNT_FEN + 1), "orderAmt"),
        (apply_result(orderAmt="-1"), "orderAmt"),
        (apply_result(finishedDate="2024-01-01"), "finishedDate"),
        ("[]", "not a JSON object"),
    ],
)
def test_answers_about_something_else_are_response_errors(gateway, platform_private, fields, match):
    recording, client = gateway
    recording.answer(200, success_body(platform_private, fields))
    with pytest.raises(ResponseError, match=match):
        client.apply_refund(**application())


def test_merchant_no_may_be_absent(gateway, platform_private):
    recording, client = gateway
    recording.answer(200, success_body(platform_private, apply_result(merchantNo=...)))
    assert client.apply_refund(**application()).merchant_no == MERCHANT_NO


@pytest.mark.parametrize("signed", [True, False])
def test_refusal_is_a_gateway_error(gateway, platform_private, signed):
    recording, client = gateway
    key = platform_private if signed else None
    recording.answer(200, failure_body(key, "REFUND_AMOUNT_EXCEED", "退款金额超过可退金额"))
    with pytest.raises(GatewayError) as caught:
        client.apply_refund(**application())
    assert caught.value.signed is signed
    assert (caught.value.code, caught.value.error_msg) == (
        "REFUND_AMOUNT_EXCEED",
        "退款金额超过可退金额",
    )
    assert len(recording.requests) == 1


def test_unverifiable_answers_are_signature_errors(gateway, platform_private):
    recording, client = gateway
    body = json.loads(success_body(platform_private, apply_result()))
    body["result"] = body["result"].replace("PROCESSING", "SUCCESS")
    recording.answer(200, json.dumps(body).encode())
    with pytest.raises(SignatureError):
        client.apply_refund(**application())


# --------------------------------------------------------------------------- sent once


def test_a_5xx_answer_is_not_retried(make_client, recording_gateway):
    recording_gateway.answer(503, Retry_After="0")
    recording_gateway.answer(503)
    client = make_client(recording_gateway.url, retries=2)
    with pytest.raises(TransportError) as caught:
        client.apply_refund(**application())
    assert caught.value.status_code == 503
    assert len(recording_gateway.requests) == 1


def test_a_query_with_the_same_client_is_retried(make_client, recording_gateway):
    """The contrast: the same client, the same answers, a method that only reads."""
    for _ in range(3):
        recording_gateway.answer(503)
    client = make_client(recording_gateway.url, retries=2)
    with pytest.raises(TransportError):
        client.query_refund(TRANS_NO)
    assert len(recording_gateway.requests) == 3


@pytest.mark.parametrize("mode", ["silent", "drop"])
def test_a_lost_answer_is_not_retried(make_client, mode):
    """The application may have been applied: it is not sent again on a read timeout or a
    broken connection, while a query is."""
    gateway = SocketGateway(mode=mode)
    try:
        client = make_client(gateway.url, retries=2, read_timeout=0.3)
        with pytest.raises(TransportError, match=r"timed out waiting|broke off"):
            client.apply_refund(**application())
        assert gateway.requests == 1
        with pytest.raises(TransportError):
            client.query_refund(TRANS_NO)
        assert gateway.requests == 1 + 3
    finally:
        gateway.close()


def test_an_application_is_not_retried_across_the_deadline(make_client, platform_private):
    body = success_body(platform_private, apply_result())
    gateway = SocketGateway(http_response(body), at_once=0, interval=0.05)
    try:
        client = make_client(gateway.url, retries=2, deadline=1)
        with pytest.raises(TransportError, match="deadline"):
            client.apply_refund(**application())
        assert gateway.requests == 1
    finally:
        gateway.close()


def test_only_connect_errors_are_retried_for_an_application():
    """The retry policy itself: with a call that may not be resent in flight, a failure to
    connect (nothing was sent) uses up a retry; a read error ends the call."""
    retry = _Retry(
        total=2,
        connect=2,
        read=2,
        status=2,
        other=0,
        allowed_methods={"POST"},
        status_forcelist={503},
    )
    refused = NewConnectionError(None, "refused")
    timed_out = ReadTimeoutError(None, "/api", "read timed out")
    with _in_flight(Call(60, resend=False)):
        assert retry.increment("POST", "/api", error=refused).connect == 1
        with pytest.raises(MaxRetryError) as caught:
            retry.increment("POST", "/api", error=timed_out)
        assert caught.value.reason is timed_out
        assert not retry.is_retry("POST", 503)
    with _in_flight(Call(60, resend=True)):
        assert retry.increment("POST", "/api", error=timed_out).read == 1
        assert retry.is_retry("POST", 503)


def test_connection_refused_is_reported(make_client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}/api/acquiring", retries=1)
    with pytest.raises(TransportError, match="could not connect"):
        client.apply_refund(**application())


def test_a_given_session_that_would_resend_is_refused(make_client, recording_gateway):
    session = requests.Session()
    retrying = Retry(total=3, allowed_methods=None, status_forcelist=[503])
    session.mount("http://", HTTPAdapter(max_retries=retrying))
    client = make_client(recording_gateway.url, session=session)
    with pytest.raises(ConfigurationError, match="session"):
        client.apply_refund(**application())
    assert recording_gateway.requests == []
    session.close()


def test_a_given_plain_session_is_used(make_client, recording_gateway, platform_private):
    session = requests.Session()
    recording_gateway.answer(200, success_body(platform_private, apply_result()))
    client = make_client(recording_gateway.url, session=session)
    assert client.apply_refund(**application()).trans_no == TRANS_NO
    session.close()


# --------------------------------------------------------------------------- logs


def test_logs_name_the_method_and_trans_no_and_hide_secrets(gateway, platform_private, caplog):
    recording, client = gateway
    recording.answer(200, success_body(platform_private, apply_result()))
    recording.answer(200, failure_body(None, "E\n1", "forged\nINFO hsq_refunds: refund done"))
    caplog.set_level(logging.DEBUG, logger="hsq_refunds")
    client.apply_refund(**application())
    with pytest.raises(GatewayError):
        client.apply_refund(**application())
    ours = [r for r in caplog.records if r.name == "hsq_refunds.gateway.client"]
    assert [r.trans_no for r in ours] == [TRANS_NO, TRANS_NO]
    first, second = (r.getMessage() for r in ours)
    assert first.startswith(f"POLYMERIZE_REFUND transNo={TRANS_NO} outcome=ok code=100201")
    assert "orderStatus=PROCESSING" in first
    assert "outcome=error:gateway" in second
    assert "\n" not in second and "forged\\nINFO" in second and "code=E\\n1" in second
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert SIGN_KEY not in everything
    assert not re.search(r"[0-9a-f]{64}", everything), "a signature reached the logs"


def test_the_typed_request_is_usable_alone():
    request = RefundApplyRequest(**application(return_url="https://example.com/n"))
    assert request.method == "POLYMERIZE_REFUND"
    assert request.business()["returnUrl"] == "https://example.com/n"
    assert request.request_date_text == "20240101120000"
