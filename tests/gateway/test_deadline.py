"""The deadline of a whole call, against real local servers that answer a few bytes at a time.

urllib3's read timeout bounds each socket read: a gateway that keeps sending a byte now and then
never trips it. These tests show the client cutting such a call off at its deadline (the
server sees the connection closed before its answer is complete), in every phase: while the
headers trickle, while the body trickles, over TLS, and between retries.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from hsq_refunds.gateway import (
    ConfigurationError,
    HsqClient,
    InvalidRequestError,
    RefundStatus,
    TransportError,
    query_deadline,
)
from hsq_refunds.gateway.validation import RETRY_AFTER_CAP

from .support import (
    MERCHANT_NO,
    SIGN_KEY,
    TRANS_NO,
    SocketGateway,
    business_result,
    http_response,
    success_body,
    tls_server_context,
)


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
            "connect_timeout": 2,
            "read_timeout": 1,
            "retries": 2,
            "backoff_factor": 0,
        }
        options.update(overrides)
        client = HsqClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def gateways():
    started: list[SocketGateway] = []

    def start(*args, **kwargs):
        gateway = SocketGateway(*args, **kwargs)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.close()


@pytest.fixture
def answer(platform_private) -> bytes:
    """A valid, signed answer: what the client would accept if it waited for all of it."""
    return http_response(success_body(platform_private, business_result()))


# --------------------------------------------------------------------------- the formula


def test_default_deadline_is_the_formula(make_client):
    client = make_client("http://127.0.0.1:1/", connect_timeout=3, read_timeout=7, retries=2)
    assert client.deadline == query_deadline(3, 7, 2, 0) == (3 + 7) * 3 + 2 * RETRY_AFTER_CAP
    assert make_client("http://127.0.0.1:1/", deadline=4.5).deadline == 4.5


def test_formula_counts_every_attempt_and_wait():
    assert query_deadline(5, 15, 0, 0.5) == 20
    # urllib3 does not wait before the first retry; later waits double, up to 120 s.
    assert query_deadline(1, 1, 1, 100) == 2 * 2 + RETRY_AFTER_CAP
    assert query_deadline(1, 1, 2, 100) == 2 * 3 + RETRY_AFTER_CAP + 120
    assert query_deadline(1, 1, 3, 20) == 2 * 4 + RETRY_AFTER_CAP + 40 + 80
    assert math.isfinite(query_deadline(1, 1, 5000, 1))


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, "10", True])
def test_bad_deadline_names_the_parameter(make_client, value):
    with pytest.raises(ConfigurationError, match="deadline"):
        make_client("http://127.0.0.1:1/", deadline=value)


# --------------------------------------------------------------------------- trickling answers


def _assert_cut_off_at_deadline(caught, gateway, deadline):
    message = str(caught.value)
    assert "deadline" in message and f"{deadline:g}s" in message
    assert caught.value.status_code is None
    # The client closed the connection while the answer was still coming, and did not ask
    # again (retries were allowed: the deadline covers them too).
    assert gateway.cut_off.wait(10)
    assert not gateway.completed.is_set()
    assert gateway.requests == 1


def test_trickling_headers_are_cut_off(make_client, gateways, answer):
    gateway = gateways(answer, at_once=0, interval=0.05)
    client = make_client(gateway.url, deadline=1.5)
    with pytest.raises(TransportError) as caught:
        client.query_refund(TRANS_NO)
    _assert_cut_off_at_deadline(caught, gateway, 1.5)


def test_trickling_body_is_cut_off(make_client, gateways, answer):
    headers_end = answer.index(b"\r\n\r\n") + 4
    gateway = gateways(answer, at_once=headers_end + 10, interval=0.05)
    client = make_client(gateway.url, deadline=1.5)
    with pytest.raises(TransportError) as caught:
        client.query_refund(TRANS_NO)
    _assert_cut_off_at_deadline(caught, gateway, 1.5)


def test_trickling_over_tls_is_cut_off(make_client, gateways, answer, tmp_path, monkeypatch):
    """Over TLS the socket the client reads is a wrapper that owns the descriptor; the deadline
    reaches it all the same."""
    context, certificate = tls_server_context(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate))
    headers_end = answer.index(b"\r\n\r\n") + 4
    gateway = gateways(answer, at_once=headers_end // 2, chunk=2, interval=0.05, tls=context)
    client = make_client(gateway.url, deadline=1.5)
    with pytest.raises(TransportError) as caught:
        client.query_refund(TRANS_NO)
    _assert_cut_off_at_deadline(caught, gateway, 1.5)


def test_a_reused_connection_is_cut_off_too(make_client, gateways, answer):
    """The second call runs on the connection the first one left in the pool."""
    gateway = gateways(answer, at_once=len(answer))  # the first answer comes whole
    client = make_client(gateway.url, deadline=1.5)
    assert client.query_refund(TRANS_NO).status is RefundStatus.SUCCESS
    gateway.answer, gateway.at_once = answer, 0
    with pytest.raises(TransportError, match="deadline"):
        client.query_refund(TRANS_NO)
    # One connection served both requests: the first answer then the cut-off second one.
    assert gateway.requests == 2
    assert gateway.cut_off.wait(10)


def test_an_answer_within_the_deadline_is_taken(make_client, gateways, answer):
    gateway = gateways(answer, at_once=len(answer) - 5, interval=0.01)
    client = make_client(gateway.url, deadline=30)
    assert client.query_refund(TRANS_NO).status is RefundStatus.SUCCESS
    assert gateway.completed.wait(10)  # the server thread may mark it a moment later


def test_an_application_is_cut_off_too(make_client, gateways, platform_private):
    body = success_body(platform_private, business_result(orderStatus="PROCESSING"))
    gateway = gateways(http_response(body), at_once=0, interval=0.05)
    client = make_client(gateway.url, deadline=1)
    with pytest.raises(TransportError) as caught:
        client.apply_refund(
            trans_no=TRANS_NO,
            orig_trans_no="PAY1",
            orig_amount=100,
            amount=100,
            request_date=datetime.now(UTC),
        )
    _assert_cut_off_at_deadline(caught, gateway, 1)


# --------------------------------------------------------------------------- between retries


def test_no_retry_is_started_that_would_end_past_the_deadline(make_client, recording_gateway):
    """A 503 asking to retry after 30 s, with 2 s left: the call ends now, without a retry."""
    recording_gateway.answer(503, Retry_After="30")
    recording_gateway.answer(503, Retry_After="30")
    client = make_client(recording_gateway.url, retries=1, deadline=2)
    with pytest.raises(TransportError, match=r"deadline of 2s"):
        client.query_refund(TRANS_NO)
    assert len(recording_gateway.requests) == 1


def test_retries_within_the_deadline_still_happen(make_client, recording_gateway, platform_private):
    recording_gateway.answer(503, Retry_After="0")
    recording_gateway.answer(200, success_body(platform_private, business_result()))
    client = make_client(recording_gateway.url, retries=1, deadline=20)
    assert client.query_refund(TRANS_NO).status is RefundStatus.SUCCESS
    assert len(recording_gateway.requests) == 2


def test_invalid_requests_fail_before_the_deadline_matters(make_client):
    client = make_client("http://127.0.0.1:1/", deadline=0.001)
    with pytest.raises(InvalidRequestError):
        client.query_refund("")
