"""HsqClient against the sandbox gateway over real HTTP: statuses, codes, faults, retries."""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
import urllib3.connection

from hsq_refunds.gateway import (
    GatewayError,
    HsqClient,
    RefundStatus,
    RespCode,
    ResponseError,
    SignatureError,
    TransportError,
    load_private_key,
)
from hsq_refunds.gateway.signing import encode_sign_content, request_sign_string, sign


@pytest.fixture
def client(hsq_sandbox, hsq_sandbox_credentials):
    with _client(hsq_sandbox, hsq_sandbox_credentials) as client:
        yield client


def _client(sandbox, credentials, **overrides):
    options = {
        "merchant_no": credentials.merchant_no,
        "sign_key": credentials.sign_key,
        "private_key": credentials.private_key,
        "private_key_password": credentials.private_key_password,
        "platform_key": credentials.platform_cert,
        "base_url": sandbox.url,
        "retries": 2,
        "backoff_factor": 0,
        "read_timeout": 5,
    }
    options.update(overrides)
    return HsqClient(**options)


# --------------------------------------------------------------------------- statuses and codes


@pytest.mark.parametrize("status", list(RefundStatus))
def test_every_status(hsq_sandbox, client, status):
    hsq_sandbox.add_refund(
        "R1", amount=1234, timeline=[{"status": status.value}], orig_trans_no="P1", extend="备注"
    )
    result = client.query_refund("R1")
    assert result.status is status
    assert result.trans_no == "R1"
    assert result.merchant_no == client.merchant_no
    assert result.amount == 1234
    assert result.orig_trans_no == "P1"
    assert result.extend == "备注"
    assert result.trade_no
    expected_code = RespCode.PROCESSING if status is RefundStatus.PROCESSING else RespCode.QUERY_OK
    assert result.resp_code == expected_code
    assert result.is_final == status.is_final
    if status.is_final:
        assert result.finished_at.tzinfo is not None
        assert result.finished_at.utcoffset() == timedelta(hours=8)
        assert abs(result.finished_at - datetime.now(UTC)) < timedelta(minutes=5)
    else:
        assert result.finished_at is None
    assert json.loads(result.raw_result)["transNo"] == "R1"


def test_finished_date_is_beijing_time(hsq_sandbox, client):
    created = datetime(2024, 5, 1, 2, 0, 0, tzinfo=UTC)  # 10:00 in Beijing
    hsq_sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}], created_at=created)
    result = client.query_refund("R1")
    assert result.finished_at == datetime(2024, 5, 1, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert result.finished_at == created


def test_default_timeline_starts_processing(hsq_sandbox, client):
    hsq_sandbox.add_refund("R1")
    assert client.query_refund("R1").status is RefundStatus.PROCESSING


def test_unknown_refund_is_200004(client):
    result = client.query_refund("NEVER-APPLIED")
    assert result.resp_code == RespCode.NOT_FOUND
    assert result.status is None
    assert result.trans_no == "NEVER-APPLIED"


@pytest.mark.parametrize(
    "code",
    [RespCode.NOT_FOUND, RespCode.QUERY_FAILED, RespCode.EMPTY_RESULT, RespCode.WRONG_OR_EXPIRED],
)
def test_bare_response_codes(hsq_sandbox, client, code):
    hsq_sandbox.add_refund("R1", timeline=[{"respCode": code}])
    result = client.query_refund("R1")
    assert result.resp_code == code
    assert result.resp_msg
    assert result.status is None
    assert result.amount is None


def test_odd_characters_survive_form_encoding_and_signing(hsq_sandbox, client):
    trans_no = "A&B=C+D %20退款/?"
    hsq_sandbox.add_refund(trans_no, timeline=[{"status": "SUCCESS"}])
    assert client.query_refund(trans_no).status is RefundStatus.SUCCESS


def test_each_request_is_sent_whole_once_on_new_and_kept_alive_connections(
    hsq_sandbox, client, monkeypatch
):
    """Each request goes out whole exactly once, its headers and then its body, whether its
    connection is new or kept alive."""
    writes: list[bytes] = []
    send = http.client.HTTPConnection.send

    def recording_send(self, data):
        writes.append(bytes(data))
        send(self, data)

    monkeypatch.setattr(http.client.HTTPConnection, "send", recording_send)
    connects: list[object] = []
    connect = urllib3.connection.HTTPConnection.connect

    def counting_connect(self):
        connects.append(self)
        connect(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", counting_connect)
    for trans_no in ("R1", "R2", "R3"):
        hsq_sandbox.add_refund(trans_no, amount=100, timeline=[{"status": "SUCCESS"}])
        assert client.query_refund(trans_no).status is RefundStatus.SUCCESS
    assert len(writes) == 6, [w[:40] for w in writes]
    for head, body in zip(writes[::2], writes[1::2], strict=True):
        assert head.startswith(b"POST /") and head.endswith(b"\r\n\r\n")
        assert f"Content-Length: {len(body)}".encode() in head
        assert body.startswith(b"merchantNo=") or b"&merchantNo=" in body
    assert len(connects) == 1  # the first request made the connection; the others reused it
    assert hsq_sandbox.query_counts() == {"R1": 1, "R2": 1, "R3": 1}


# --------------------------------------------------------------------------- faults


def test_bad_signature(hsq_sandbox, client):
    hsq_sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
    hsq_sandbox.set_fault("bad_signature", trans_no="R1")
    with pytest.raises(SignatureError):
        client.query_refund("R1")
    assert hsq_sandbox.query_counts() == {"R1": 1}


def test_malformed_json(hsq_sandbox, client):
    hsq_sandbox.set_fault("malformed_json")
    with pytest.raises(TransportError, match="not JSON"):
        client.query_refund("R1")


def test_wrong_trans_no(hsq_sandbox, client):
    hsq_sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
    hsq_sandbox.set_fault("wrong_trans_no", trans_no="R1")
    with pytest.raises(ResponseError, match="transNo"):
        client.query_refund("R1")


def test_wrong_merchant_no(hsq_sandbox, client):
    hsq_sandbox.add_refund("R1", timeline=[{"status": "FAIL"}])
    hsq_sandbox.set_fault("wrong_merchant_no", trans_no="R1")
    with pytest.raises(ResponseError, match="merchantNo"):
        client.query_refund("R1")


def test_result_not_double_encoded(hsq_sandbox, client):
    hsq_sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
    hsq_sandbox.set_fault("double_encoding_missing")
    with pytest.raises(ResponseError, match="not a string"):
        client.query_refund("R1")


@pytest.mark.parametrize("null_sign", [False, True])
def test_unsigned_failure(hsq_sandbox, client, null_sign):
    hsq_sandbox.set_fault(
        "unsigned_failure", error_code="SYSTEM_ERROR", error_msg="系统繁忙", null_sign=null_sign
    )
    with pytest.raises(GatewayError) as caught:
        client.query_refund("R1")
    assert caught.value.signed is False
    assert (caught.value.code, caught.value.error_msg) == ("SYSTEM_ERROR", "系统繁忙")


def test_signed_failure_is_not_retried(hsq_sandbox, client):
    hsq_sandbox.set_fault("signed_failure", error_code="LIMIT", error_msg="请求过于频繁")
    with pytest.raises(GatewayError) as caught:
        client.query_refund("R1")
    assert caught.value.signed is True
    assert caught.value.code == "LIMIT"
    assert caught.value.error_msg == "请求过于频繁"
    assert hsq_sandbox.query_counts() == {"R1": 1}


@pytest.mark.parametrize("fault", ["http_error", "spring_error"])
def test_server_errors_are_retried_then_reported(hsq_sandbox, client, fault):
    hsq_sandbox.set_fault(fault, status=503)
    with pytest.raises(TransportError) as caught:
        client.query_refund("R1")
    assert caught.value.status_code == 503
    assert hsq_sandbox.query_counts() == {"R1": 3}  # the first try and two retries


def test_a_passing_server_error_is_retried_away(hsq_sandbox, client):
    hsq_sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
    hsq_sandbox.set_fault("http_error", status=500, times=2)
    assert client.query_refund("R1").status is RefundStatus.SUCCESS
    assert hsq_sandbox.query_counts() == {"R1": 3}


def test_no_retries_when_disabled(hsq_sandbox, hsq_sandbox_credentials):
    hsq_sandbox.set_fault("http_error", status=502)
    with _client(hsq_sandbox, hsq_sandbox_credentials, retries=0) as client:
        with pytest.raises(TransportError):
            client.query_refund("R1")
    assert hsq_sandbox.query_counts() == {"R1": 1}


def test_client_errors_are_not_retried(hsq_sandbox, client):
    hsq_sandbox.set_fault("http_error", status=404)
    with pytest.raises(TransportError) as caught:
        client.query_refund("R1")
    assert caught.value.status_code == 404
    assert hsq_sandbox.query_counts() == {"R1": 1}


def test_spring_error_page_with_status_200(hsq_sandbox, client):
    hsq_sandbox.set_fault("spring_error", status=200)
    with pytest.raises(TransportError, match="error page") as caught:
        client.query_refund("R1")
    assert caught.value.status_code == 200


def test_dropped_connections_are_retried_then_reported(hsq_sandbox, client):
    hsq_sandbox.set_fault("drop")
    with pytest.raises(TransportError, match="broke off"):
        client.query_refund("R1")
    assert hsq_sandbox.query_counts() == {"R1": 3}


def test_a_dropped_connection_is_retried_away(hsq_sandbox, client):
    hsq_sandbox.add_refund("R1", timeline=[{"status": "FAIL"}])
    hsq_sandbox.set_fault("drop", times=1)
    assert client.query_refund("R1").status is RefundStatus.FAIL
    assert hsq_sandbox.query_counts() == {"R1": 2}


def test_read_timeout(hsq_sandbox, hsq_sandbox_credentials):
    hsq_sandbox.set_fault("latency", seconds=1.0)
    with _client(hsq_sandbox, hsq_sandbox_credentials, read_timeout=0.2, retries=1) as client:
        with pytest.raises(TransportError, match="timed out waiting") as caught:
            client.query_refund("R1")
    assert caught.value.status_code is None
    assert hsq_sandbox.query_counts() == {"R1": 2}  # read timeouts are retried too


def test_latency_within_the_timeout(hsq_sandbox, client):
    hsq_sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
    hsq_sandbox.set_fault("latency", seconds=0.05, trans_no="R1")
    assert client.query_refund("R1").status is RefundStatus.SUCCESS


# --------------------------------------------------------------------------- wrong settings


def test_wrong_merchant_key_is_a_signed_gateway_error(
    hsq_sandbox, hsq_sandbox_credentials, merchant_private
):
    with _client(hsq_sandbox, hsq_sandbox_credentials, private_key=merchant_private) as client:
        with pytest.raises(GatewayError) as caught:
            client.query_refund("R1")
    assert caught.value.signed
    assert caught.value.code == "SIGN_ERROR"


def test_wrong_sign_key_is_a_signature_error(hsq_sandbox, hsq_sandbox_credentials):
    with _client(hsq_sandbox, hsq_sandbox_credentials, sign_key="0" * 32) as client:
        with pytest.raises(SignatureError):
            client.query_refund("R1")


def test_wrong_platform_key_is_a_signature_error(
    hsq_sandbox, hsq_sandbox_credentials, platform_public
):
    hsq_sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
    with _client(hsq_sandbox, hsq_sandbox_credentials, platform_key=platform_public) as client:
        with pytest.raises(SignatureError):
            client.query_refund("R1")


def test_tampered_answer_is_rejected(hsq_sandbox, hsq_sandbox_credentials, recording_gateway):
    """A real sandbox answer with PROCESSING edited into SUCCESS, replayed to the client."""
    credentials = hsq_sandbox_credentials
    hsq_sandbox.add_refund("R1", timeline=[{"status": "PROCESSING"}])
    fields = {
        "method": "POLYMERIZE_REFUND_QUERY",
        "version": "1.0",
        "format": "JSON",
        "merchantNo": credentials.merchant_no,
        "signType": "RSA2",
        "signContent": encode_sign_content({"transNo": "R1"}),
    }
    private = load_private_key(credentials.private_key, credentials.private_key_password)
    fields["sign"] = sign(private, request_sign_string(fields, credentials.sign_key))
    genuine = requests.post(hsq_sandbox.url, data=fields, timeout=5).content

    with _client(hsq_sandbox, credentials, base_url=recording_gateway.url) as client:
        recording_gateway.answer(200, genuine)
        assert client.query_refund("R1").status is RefundStatus.PROCESSING
        tampered = genuine.replace(b'\\"PROCESSING\\"', b'\\"SUCCESS\\"')
        assert tampered != genuine
        recording_gateway.answer(200, tampered)
        with pytest.raises(SignatureError):
            client.query_refund("R1")


# --------------------------------------------------------------------------- sharing and logs


def test_one_client_shared_by_many_threads(hsq_sandbox, client):
    statuses = list(RefundStatus)
    for index in range(40):
        hsq_sandbox.add_refund(f"R{index}", timeline=[{"status": statuses[index % 4].value}])
    results: dict[str, RefundStatus] = {}
    errors: list[BaseException] = []

    def worker(indexes):
        for index in indexes:
            try:
                results[f"R{index}"] = client.query_refund(f"R{index}").status
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(range(i, 40, 8),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == {f"R{index}": statuses[index % 4] for index in range(40)}


def test_rate_limited_client_still_answers(hsq_sandbox, hsq_sandbox_credentials):
    hsq_sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
    with _client(hsq_sandbox, hsq_sandbox_credentials, rate_limit=500) as client:
        for _ in range(3):
            assert client.query_refund("R1").status is RefundStatus.SUCCESS
    assert hsq_sandbox.query_counts() == {"R1": 3}


def test_logs_name_the_trans_no_and_hide_secrets(
    hsq_sandbox, client, hsq_sandbox_credentials, caplog
):
    hsq_sandbox.add_refund("R-LOG-1", timeline=[{"status": "SUCCESS"}])
    hsq_sandbox.set_fault("bad_signature", trans_no="R-LOG-2")
    caplog.set_level(logging.DEBUG)
    client.query_refund("R-LOG-1")
    with pytest.raises(SignatureError):
        client.query_refund("R-LOG-2")
    ours = [r for r in caplog.records if r.name == "hsq_refunds.gateway.client"]
    assert [r.trans_no for r in ours] == ["R-LOG-1", "R-LOG-2"]
    assert "outcome=ok" in ours[0].getMessage() and "orderStatus=SUCCESS" in ours[0].getMessage()
    assert "outcome=error:signature" in ours[1].getMessage()
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert hsq_sandbox_credentials.sign_key not in everything
    assert hsq_sandbox_credentials.private_key_password not in everything
    assert not re.search(r"[0-9a-f]{64}", everything), "a signature reached the logs"
