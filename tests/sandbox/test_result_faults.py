"""Faults for hardening the sync engine: results the sandbox's encoder would never write, statuses
that go backwards, and answers that trickle in a few bytes at a time."""

from __future__ import annotations

import json
import logging
import socket
import urllib.parse

import pytest
import requests

from hsq_refunds.gateway import signing
from hsq_refunds.sandbox import SandboxServer
from tests.sandbox.receiver import wait_until
from tests.sandbox.wire import platform_key, query, signed_fields, verified_result


@pytest.fixture
def creds(hsq_sandbox_credentials):
    return hsq_sandbox_credentials


@pytest.fixture
def gateway(hsq_sandbox):
    hsq_sandbox.add_refund("R1", amount=300, extend="x", timeline=[{"status": "PROCESSING"}])
    return hsq_sandbox


def signed_raw_result(response, creds) -> str:
    """The ``result`` text of a success answer, after checking its signature over that text."""
    body = response.json()
    assert body["success"] is True and isinstance(body["result"], str)
    text = signing.success_sign_string(body["result"], creds.sign_key)
    assert signing.verify(platform_key(creds.platform_cert), text, body["sign"])
    return body["result"]


@pytest.mark.parametrize(
    "text",
    [
        '{"extend":"\\ud83d","merchantNo":"M","orderAmt":99999999999999999999,'
        '"orderStatus":"SUCCESS","transNo":"R1"}',
        '{"transNo":"R1","orderAmt":1e400}',
        "not json at all, 中文",
        "",
    ],
)
def test_verbatim_result_is_sent_exactly_and_signed_over(gateway, creds, text):
    gateway.set_fault("verbatim_result", trans_no="R1", result=text)
    assert signed_raw_result(query(gateway.url, creds, "R1"), creds) == text


def test_verbatim_result_carries_what_json_encoders_refuse(gateway, creds):
    text = '{"extend":"\\ud83d","orderAmt":99999999999999999999,"transNo":"R1"}'
    gateway.set_fault("verbatim_result", result=text, times=1)
    result = json.loads(signed_raw_result(query(gateway.url, creds, "R1"), creds))
    assert result["extend"] == "\ud83d" and result["orderAmt"] == 99999999999999999999
    assert verified_result(query(gateway.url, creds, "R1"), creds)["extend"] == "x"  # used up


def test_lone_surrogate_in_extend_as_a_signed_escape(gateway, creds):
    gateway.set_fault("lone_surrogate", trans_no="R1")
    raw = signed_raw_result(query(gateway.url, creds, "R1"), creds)
    assert '"extend":"\\ud83d"' in raw
    result = json.loads(raw)
    assert result["extend"] == "\ud83d"
    assert (result["transNo"], result["orderStatus"], result["orderAmt"]) == (
        "R1",
        "PROCESSING",
        "300",
    )


@pytest.mark.parametrize(
    ("params", "amount"),
    [
        ({}, 2**64 + 1),
        ({"amount": 99999999999999999999}, 99999999999999999999),
        ({"amount": -5}, -5),
    ],
)
def test_huge_amount_is_a_json_number(gateway, creds, params, amount):
    gateway.set_fault("huge_amount", trans_no="R1", **params)
    raw = signed_raw_result(query(gateway.url, creds, "R1"), creds)
    assert f'"orderAmt":{amount}' in raw
    assert json.loads(raw)["orderAmt"] == amount


def test_status_goes_backwards(gateway, creds):
    first = verified_result(query(gateway.url, creds, "R1"), creds)
    gateway.set_fault("status", trans_no="R1", status="INIT", times=1)
    second = verified_result(query(gateway.url, creds, "R1"), creds)
    third = verified_result(query(gateway.url, creds, "R1"), creds)
    assert [r["orderStatus"] for r in (first, second, third)] == [
        "PROCESSING",
        "INIT",
        "PROCESSING",
    ]
    assert (second["respCode"], second["respMsg"], second["finishedDate"]) == (
        "200007",
        "查询成功",
        "",
    )
    assert second["tradeNo"] == first["tradeNo"] and second["orderAmt"] == "300"


def test_status_fills_and_clears_the_finished_date(gateway, creds):
    gateway.add_refund("DONE", timeline=[{"status": "SUCCESS"}])
    finished = verified_result(query(gateway.url, creds, "DONE"), creds)["finishedDate"]
    gateway.set_fault("status", trans_no="R1", status="FAIL")
    gateway.set_fault("status", trans_no="DONE", status="PROCESSING")
    failed = verified_result(query(gateway.url, creds, "R1"), creds)
    assert failed["orderStatus"] == "FAIL" and len(failed["finishedDate"]) == 14
    back = verified_result(query(gateway.url, creds, "DONE"), creds)
    assert (back["orderStatus"], back["respCode"], back["finishedDate"]) == (
        "PROCESSING",
        "100201",
        "",
    )
    gateway.set_fault("status", trans_no="DONE", status="SUCCESS")
    assert verified_result(query(gateway.url, creds, "DONE"), creds)["finishedDate"] == finished


def test_status_leaves_an_unknown_refund_unknown(gateway, creds):
    gateway.set_fault("status", status="SUCCESS", times=1)
    result = verified_result(query(gateway.url, creds, "GHOST"), creds)
    assert result["respCode"] == "200004" and "orderStatus" not in result
    assert verified_result(query(gateway.url, creds, "R1"), creds)["orderStatus"] == "PROCESSING"


def test_new_faults_through_the_control_endpoint(gateway, creds):
    gateway.control.set_fault("huge_amount", trans_no="R1", times=1)
    gateway.control.set_fault("status", trans_no="R1", status="SUCCESS", times=1)
    assert '"orderAmt":18446744073709551617' in query(gateway.url, creds, "R1").json()["result"]
    assert verified_result(query(gateway.url, creds, "R1"), creds)["orderStatus"] == "SUCCESS"
    assert verified_result(query(gateway.url, creds, "R1"), creds)["orderStatus"] == "PROCESSING"


# ------------------------------------------------------------------------------- trickle


def raw_request(gateway, creds, trans_no: str) -> bytes:
    body = urllib.parse.urlencode(signed_fields(creds, trans_no)).encode()
    return (
        f"POST /api/acquiring HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def read_all(gateway, creds, trans_no: str) -> list[bytes]:
    """Each piece ``recv`` returned, until the sandbox closed the connection."""
    pieces = []
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(raw_request(gateway, creds, trans_no))
        while piece := sock.recv(65536):
            pieces.append(piece)
    return pieces


def test_trickle_keeps_a_per_read_timeout_from_firing(gateway, creds):
    gateway.set_fault("trickle", trans_no="R1", chunk=64, interval=0.1)
    # The whole answer takes longer than the read timeout; no single read waits that long.
    response = query(gateway.url, creds, "R1", timeout=(5, 0.8))
    assert verified_result(response, creds)["transNo"] == "R1"


def test_trickle_writes_headers_and_body_a_few_bytes_at_a_time(gateway, creds):
    gateway.set_fault("trickle", trans_no="R1", chunk=24, interval=0.04)
    pieces = read_all(gateway, creds, "R1")
    head, _, body = b"".join(pieces).partition(b"\r\n\r\n")
    assert b"\r\n\r\n" not in pieces[0]  # the headers themselves trickled
    assert len(pieces) > 1
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body)["success"] is True


def test_trickle_body_only_sends_the_headers_at_once(gateway, creds):
    gateway.set_fault("trickle", trans_no="R1", chunk=16, interval=0.02, body_only=True)
    pieces = read_all(gateway, creds, "R1")
    assert pieces[0].startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n\r\n" in pieces[0]
    assert len(pieces) > 1
    body = b"".join(pieces).partition(b"\r\n\r\n")[2]
    answer = json.loads(body)
    text = signing.success_sign_string(answer["result"], creds.sign_key)
    assert signing.verify(platform_key(creds.platform_cert), text, answer["sign"])


def test_trickle_stops_when_the_client_hangs_up(gateway, creds, caplog):
    caplog.set_level(logging.INFO, logger="hsq_refunds.sandbox")
    # One byte a tenth of a second: the answer would take over a minute to write.
    gateway.set_fault("trickle", trans_no="R1", chunk=1, interval=0.1)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(raw_request(gateway, creds, "R1"))
        assert sock.recv(1) == b"H"
    stopped = wait_until(
        lambda: [r for r in caplog.records if "trickle stopped" in r.getMessage()],
        what="the trickle to stop",
    )
    assert "the client hung up" in stopped[0].getMessage()
    verified_result(query(gateway.url, creds, "R2"), creds)  # and the sandbox serves on


def test_stop_ends_a_trickle(creds):
    server = SandboxServer(creds).start()
    server.set_fault("trickle", chunk=1, interval=0.1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(raw_request(server, creds, "R1"))
        received = sock.recv(1)
        server.stop()
        try:
            while piece := sock.recv(65536):
                received += piece
        except ConnectionResetError:
            pass
    assert received.startswith(b"H") and b"\r\n\r\n" not in received


def test_accepted_sockets_have_tcp_nodelay(gateway, creds):
    with requests.Session() as session:
        verified_result(query(gateway.url, creds, "R1", session=session), creds)
        connections = list(gateway._httpd._connections)
        assert connections
        for connection in connections:
            assert connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
