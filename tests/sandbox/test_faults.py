"""Each injected fault is observable over raw HTTP, as a client of the real gateway would see it."""

from __future__ import annotations

import json
import urllib.parse

import pytest
import requests

from hsq_refunds.gateway import signing
from hsq_refunds.sandbox.app import SandboxApp
from tests.sandbox.wire import (
    failure_verifies,
    platform_key,
    query,
    signed_fields,
    verified_result,
)


@pytest.fixture
def creds(hsq_sandbox_credentials):
    return hsq_sandbox_credentials


@pytest.fixture
def gateway(hsq_sandbox):
    hsq_sandbox.add_refund("R1", amount=300, timeline=[{"status": "SUCCESS"}])
    hsq_sandbox.add_refund("R2", amount=400, timeline=[{"status": "SUCCESS"}])
    return hsq_sandbox


def spring_body(response: requests.Response) -> dict:
    body = response.json()
    assert set(body) == {"timestamp", "status", "error", "message", "path"}
    assert body["status"] == response.status_code
    return body


def test_latency_delays_past_a_client_timeout(gateway, creds):
    gateway.set_fault("latency", trans_no="R1", seconds=2, times=1)
    with pytest.raises(requests.Timeout):
        query(gateway.url, creds, "R1", timeout=0.3)
    verified_result(query(gateway.url, creds, "R1"), creds)  # used up: answers normally


@pytest.mark.parametrize(
    ("name", "params", "status"),
    [
        ("http_error", {}, 500),
        ("http_error", {"status": 503}, 503),
        ("spring_error", {}, 500),
        ("spring_error", {"status": 502}, 502),
    ],
)
def test_http_errors_answer_spring_bodies(gateway, creds, name, params, status):
    gateway.set_fault(name, trans_no="R1", **params)
    response = query(gateway.url, creds, "R1")
    assert response.status_code == status
    assert spring_body(response)["path"] == "/api/acquiring"


def test_drop_closes_without_answer(gateway, creds):
    gateway.set_fault("drop", trans_no="R1")
    with requests.Session() as session:
        with pytest.raises(requests.ConnectionError):
            query(gateway.url, creds, "R1", session=session)
        verified_result(query(gateway.url, creds, "R2", session=session), creds)


def test_bad_signature_keeps_the_body_but_does_not_verify(gateway, creds):
    gateway.set_fault("bad_signature", trans_no="R1")
    body = query(gateway.url, creds, "R1").json()
    good = query(gateway.url, creds, "R2").json()
    assert body["success"] is True and json.loads(body["result"])["transNo"] == "R1"
    assert len(body["sign"]) == len(good["sign"]) and int(body["sign"], 16) >= 0
    text = signing.success_sign_string(body["result"], creds.sign_key)
    assert not signing.verify(platform_key(creds.platform_cert), text, body["sign"])


def test_bad_signature_on_a_failure(gateway, creds):
    gateway.set_fault("bad_signature")
    body = query(gateway.url, creds, "R1", sign_key="0" * 32).json()
    assert body["errorCode"] == "SIGN_ERROR"
    assert not failure_verifies(body, creds)


def test_malformed_json(gateway, creds):
    gateway.set_fault("malformed_json", trans_no="R1")
    response = query(gateway.url, creds, "R1")
    assert response.status_code == 200
    assert response.text.startswith('{"success":true')
    with pytest.raises(ValueError):
        response.json()


def test_wrong_trans_no_is_signed_but_about_another_refund(gateway, creds):
    gateway.set_fault("wrong_trans_no", trans_no="R1")
    assert verified_result(query(gateway.url, creds, "R1"), creds)["transNo"] != "R1"
    gateway.set_fault("wrong_trans_no", trans_no="R1", answer_trans_no="R2")
    assert verified_result(query(gateway.url, creds, "R1"), creds)["transNo"] == "R2"


def test_wrong_merchant_no_is_signed_but_about_another_merchant(gateway, creds):
    gateway.set_fault("wrong_merchant_no", trans_no="R1")
    result = verified_result(query(gateway.url, creds, "R1"), creds)
    assert result["merchantNo"] != creds.merchant_no and result["transNo"] == "R1"


def test_unsigned_failure(gateway, creds):
    gateway.set_fault("unsigned_failure", trans_no="R1", error_code="SYS", error_msg="系统异常")
    body = query(gateway.url, creds, "R1").json()
    assert body == {"success": False, "result": None, "errorCode": "SYS", "errorMsg": "系统异常"}
    gateway.set_fault("unsigned_failure", trans_no="R1", null_sign=True)
    body = query(gateway.url, creds, "R1").json()
    assert body["success"] is False and "sign" in body and body["sign"] is None


def test_signed_failure(gateway, creds):
    gateway.set_fault("signed_failure", trans_no="R1", error_code="LIMIT", error_msg="请求过于频繁")
    body = query(gateway.url, creds, "R1").json()
    assert (body["success"], body["errorCode"], body["errorMsg"]) == (
        False,
        "LIMIT",
        "请求过于频繁",
    )
    assert failure_verifies(body, creds)


def test_double_encoding_missing(gateway, creds):
    gateway.set_fault("double_encoding_missing", trans_no="R1")
    body = query(gateway.url, creds, "R1").json()
    assert body["success"] is True and isinstance(body["result"], dict)
    assert body["result"]["transNo"] == "R1"


def test_times_then_normal(gateway, creds):
    gateway.set_fault("http_error", trans_no="R1", times=2)
    statuses = [query(gateway.url, creds, "R1").status_code for _ in range(3)]
    assert statuses == [500, 500, 200]


def test_refund_faults_come_before_global_ones(gateway, creds):
    gateway.set_fault("http_error", status=503)
    gateway.set_fault("signed_failure", trans_no="R1")
    assert query(gateway.url, creds, "R1").json()["success"] is False
    assert query(gateway.url, creds, "R2").status_code == 503
    assert query(gateway.url, creds, "UNKNOWN").status_code == 503


def test_faults_queue_up_in_the_order_set(gateway, creds):
    gateway.set_fault("http_error", trans_no="R1", times=1)
    gateway.set_fault("bad_signature", trans_no="R1", times=1)
    assert query(gateway.url, creds, "R1").status_code == 500
    with pytest.raises(AssertionError):
        verified_result(query(gateway.url, creds, "R1"), creds)
    verified_result(query(gateway.url, creds, "R1"), creds)


def test_setting_the_same_fault_again_replaces_it(gateway, creds):
    gateway.set_fault("http_error", trans_no="R1", status=502)
    gateway.set_fault("http_error", trans_no="R1", status=504)
    assert query(gateway.url, creds, "R1").status_code == 504


def test_clear_faults(gateway, creds):
    gateway.set_fault("drop")
    gateway.clear_faults()
    verified_result(query(gateway.url, creds, "R1"), creds)


def test_latency_combines_with_another_fault(creds):
    app = SandboxApp(creds, latency=0.25)
    app.add_refunds([{"transNo": "R1"}])
    app.set_fault("latency", trans_no="R1", seconds=1.5)
    app.set_fault("bad_signature", trans_no="R1")
    body = urllib.parse.urlencode(signed_fields(creds, "R1")).encode()
    reply = app.answer_api(body)
    assert reply.delay == pytest.approx(1.75)
    answer = json.loads(reply.body)
    text = signing.success_sign_string(answer["result"], creds.sign_key)
    assert not signing.verify(platform_key(creds.platform_cert), text, answer["sign"])


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("explode", {}, "unknown fault"),
        ("latency", {}, "seconds"),
        ("latency", {"seconds": -1}, "seconds"),
        ("http_error", {"status": 99}, "status"),
        ("drop", {"seconds": 1}, "parameter"),
        ("drop", {"times": 0}, "times"),
    ],
)
def test_invalid_faults_are_refused(hsq_sandbox, name, params, match):
    with pytest.raises(ValueError, match=match):
        hsq_sandbox.set_fault(name, **params)
