"""HsqClient's configuration, secrecy and HTTP behaviour that needs no sandbox."""

from __future__ import annotations

import json
import math
import pickle
import socket
import subprocess
import sys
import threading

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from hsq_refunds.gateway import (
    ENVIRONMENTS,
    ConfigurationError,
    HsqClient,
    HsqError,
    InvalidRequestError,
    RateLimiter,
    RefundStatus,
    TransportError,
)
from hsq_refunds.gateway.transport import _Retry
from hsq_refunds.gateway.validation import RETRY_AFTER_CAP

from .conftest import REPO_ROOT
from .support import (
    MERCHANT_NO,
    SIGN_KEY,
    TRANS_NO,
    RecordingGateway,
    business_result,
    success_body,
)


@pytest.fixture
def make_client(merchant_private, platform_public):
    clients: list[HsqClient] = []

    def make(**overrides):
        options = {
            "merchant_no": MERCHANT_NO,
            "sign_key": SIGN_KEY,
            "private_key": merchant_private,
            "platform_key": platform_public,
            "retries": 0,
        }
        options.update(overrides)
        client = HsqClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# --------------------------------------------------------------------------- configuration


def test_environments(make_client):
    assert make_client().base_url == ENVIRONMENTS["production"]
    assert (
        make_client(environment="test").base_url == "https://test-api.huishouqian.com/api/acquiring"
    )
    assert (
        make_client(environment="pre").base_url == "https://api-pre.huishouqian.com/api/acquiring"
    )
    assert make_client(base_url="http://127.0.0.1:1/x").base_url == "http://127.0.0.1:1/x"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("merchant_no", ""),
        ("merchant_no", "1" * 17),
        ("merchant_no", 814000473149),
        ("merchant_no", " 8140"),
        ("merchant_no", None),
        ("sign_key", ""),
        ("sign_key", None),
        ("sign_key", SIGN_KEY + "\n"),
        ("environment", "staging"),
        ("environment", "sandbox"),
        ("base_url", "ftp://example.com/api"),
        ("base_url", "not a url"),
        ("base_url", "http://"),
        ("base_url", "https://user:pw@example.com/"),
        ("base_url", "http://example.com:99999/"),
        ("base_url", b"http://example.com"),
        ("connect_timeout", 0),
        ("connect_timeout", -1),
        ("read_timeout", math.nan),
        ("read_timeout", "15"),
        ("read_timeout", math.inf),
        ("retries", -1),
        ("retries", 1.5),
        ("retries", True),
        ("backoff_factor", -0.1),
        ("rate_limit", 0),
        ("rate_limit", -5),
        ("rate_limit", math.inf),
        ("pool_maxsize", 0),
        ("private_key", None),
        ("platform_key", None),
    ],
)
def test_bad_configuration_names_the_parameter(make_client, option, value):
    with pytest.raises(ConfigurationError) as caught:
        make_client(**{option: value})
    assert option in str(caught.value)
    assert SIGN_KEY not in str(caught.value)


def test_keys_are_loaded_from_sources(merchant_private, platform_public, tmp_path, make_client):
    private_pem = merchant_private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    (tmp_path / "merchant.pem").write_bytes(private_pem)
    public_pem = platform_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    client = make_client(
        private_key=tmp_path / "merchant.pem",
        private_key_password="pw",
        platform_key=public_pem.decode(),
    )
    assert client.merchant_no == MERCHANT_NO
    with pytest.raises(ConfigurationError, match="wrong password"):
        make_client(private_key=tmp_path / "merchant.pem", private_key_password="nope")


def test_settings_are_exposed(make_client):
    client = make_client(connect_timeout=1, read_timeout=2.5, rate_limit=20)
    assert client.timeout == (1.0, 2.5)
    assert client.rate_limit == 20
    assert make_client().rate_limit is None


def test_proxy_and_ca_bundle_come_from_the_environment_once(make_client, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "api-pre.huishouqian.com")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    production = make_client(environment="production")
    pre = make_client(environment="pre")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9999")  # read at construction only

    assert production._session.proxies["https"] == "http://127.0.0.1:3128"
    assert "https" not in pre._session.proxies
    assert production._session.verify == "/etc/ssl/certs/ca-certificates.crt"
    assert not production._session.trust_env  # no per-request environment or .netrc look-ups


def test_own_session_sends_what_requests_would_send(make_client, recording_gateway, monkeypatch):
    """The client's own session sends what a plain requests session sends."""
    monkeypatch.setattr(requests.utils, "default_user_agent", lambda: "hsq-refunds")
    for session in (None, requests.Session()):
        if session is not None:
            session.headers["User-Agent"] = "hsq-refunds"
        client = make_client(base_url=recording_gateway.url, session=session)
        with pytest.raises(HsqError):  # "{}" is no answer; only the request matters here
            client.query_refund("退款 R+1&=%")
    own, plain = recording_gateway.requests
    assert own.path == plain.path == "/api/acquiring"
    assert own.body == plain.body
    assert b"+" in own.body and b"%E9%80%80%E6%AC%BE" in own.body  # form-encoded as UTF-8
    sent = {name.lower(): value for name, value in own.headers.items()}
    assert sent == {name.lower(): value for name, value in plain.headers.items()}
    assert sent["content-type"] == "application/x-www-form-urlencoded"
    assert sent["content-length"] == str(len(own.body))
    assert sent["accept"] == "application/json"
    assert sent["user-agent"] == "hsq-refunds"


def test_own_session_keeps_no_cookies(make_client, recording_gateway, platform_private):
    body = success_body(platform_private, business_result())
    recording_gateway.answer(200, body, Set_Cookie="SERVERID=a1; Path=/")
    recording_gateway.answer(200, body)
    client = make_client(base_url=recording_gateway.url)
    client.query_refund(TRANS_NO)
    client.query_refund(TRANS_NO)
    assert [r.headers.get("Cookie") for r in recording_gateway.requests] == [None, None]


def test_own_session_goes_through_the_environments_proxy(
    make_client, recording_gateway, monkeypatch, platform_private
):
    """An http:// gateway through an HTTP proxy: the request target is the absolute URL."""
    monkeypatch.setenv("HTTP_PROXY", recording_gateway.url.rsplit("/api/", 1)[0])
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    recording_gateway.answer(200, success_body(platform_private, business_result()))
    client = make_client(base_url="http://gateway.invalid/api/acquiring")
    assert client.query_refund(TRANS_NO).status is RefundStatus.SUCCESS
    (request,) = recording_gateway.requests
    assert request.path == "http://gateway.invalid/api/acquiring"
    assert request.headers["Host"] == "gateway.invalid"


# --------------------------------------------------------------------------- secrets


def test_repr_and_vars_show_no_secrets(tmp_path, merchant_private, platform_public, make_client):
    password = "pfx-Password-789"
    private_pem = merchant_private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    )
    client = make_client(private_key=private_pem.decode(), private_key_password=password)
    key_body = "".join(private_pem.decode().splitlines()[1:-1])
    shown = " ".join([repr(client), str(client), repr(vars(client)), str(vars(client))])
    assert repr(client) == f"HsqClient(merchant_no={MERCHANT_NO!r}, base_url={client.base_url!r})"
    for secret in (SIGN_KEY, password, key_body[:32], str(merchant_private.private_numbers().d)):
        assert secret not in shown
    with pytest.raises(TypeError):
        pickle.dumps(client)


# --------------------------------------------------------------------------- requests


@pytest.fixture(scope="module")
def shared_gateway():
    gateway = RecordingGateway()
    yield gateway
    gateway.close()


@settings(max_examples=60, deadline=None)
@given(trans_no=st.text(max_size=70))
def test_any_text_is_refused_or_sent_exactly(
    shared_gateway, merchant_private, platform_public, trans_no
):
    """Whatever the text, the client refuses it up front or sends it verbatim; the empty
    answer then fails as an HsqError (never another exception)."""
    shared_gateway.requests.clear()
    client = HsqClient(
        merchant_no=MERCHANT_NO,
        sign_key=SIGN_KEY,
        private_key=merchant_private,
        platform_key=platform_public,
        base_url=shared_gateway.url,
        retries=0,
    )
    with client, pytest.raises(HsqError) as caught:
        client.query_refund(trans_no)
    if isinstance(caught.value, InvalidRequestError):
        assert shared_gateway.requests == []
    else:
        (request,) = shared_gateway.requests
        assert json.loads(request.form["signContent"]) == {"transNo": trans_no}


@pytest.mark.parametrize(
    "trans_no",
    ["", "x" * 65, "a\nb", "a\x00b", "\x7f", "tab\there", "\ud800", 123, None, b"R1"],
)
def test_invalid_trans_no_is_refused_before_sending(make_client, recording_gateway, trans_no):
    client = make_client(base_url=recording_gateway.url)
    with pytest.raises(InvalidRequestError) as caught:
        client.query_refund(trans_no)
    assert isinstance(caught.value, ValueError)
    assert caught.value.exit_code == 7
    assert recording_gateway.requests == []


@pytest.mark.parametrize("trans_no", ["x" * 64, "退款-1", " padded ", "a&b=c+d%20"])
def test_unusual_but_valid_trans_no_is_sent_exactly(
    make_client, recording_gateway, platform_private, trans_no
):
    recording_gateway.answer(200, success_body(platform_private, business_result(transNo=trans_no)))
    result = make_client(base_url=recording_gateway.url).query_refund(trans_no)
    assert result.trans_no == trans_no
    (request,) = recording_gateway.requests
    assert (
        request.form["signContent"]
        == '{"transNo":' + json.dumps(trans_no, ensure_ascii=False) + "}"
    )


def test_redirects_are_not_followed(make_client, recording_gateway):
    recording_gateway.answer(302, Location=recording_gateway.url + "/elsewhere")
    with pytest.raises(TransportError) as caught:
        make_client(base_url=recording_gateway.url).query_refund(TRANS_NO)
    assert caught.value.status_code == 302
    assert len(recording_gateway.requests) == 1


def test_oversized_answer(make_client, recording_gateway):
    recording_gateway.answer(200, b" " * (2 << 20))
    with pytest.raises(TransportError, match="larger than"):
        make_client(base_url=recording_gateway.url).query_refund(TRANS_NO)


def test_retry_after_is_honoured(make_client, recording_gateway, platform_private):
    recording_gateway.answer(503, Retry_After="0")
    recording_gateway.answer(200, success_body(platform_private, business_result()))
    client = make_client(base_url=recording_gateway.url, retries=1, backoff_factor=0)
    assert client.query_refund(TRANS_NO).status is RefundStatus.SUCCESS
    assert len(recording_gateway.requests) == 2


def test_retry_after_is_capped():
    retry = _Retry(total=1)
    assert retry.parse_retry_after("5") == 5
    assert retry.parse_retry_after("86400") == RETRY_AFTER_CAP
    assert retry.new(total=0).parse_retry_after("86400") == RETRY_AFTER_CAP


def test_connection_refused(make_client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{port}/api/acquiring", retries=1)
    with pytest.raises(TransportError, match="could not connect") as caught:
        client.query_refund(TRANS_NO)
    assert caught.value.status_code is None


def test_a_given_session_is_used_and_left_open(make_client, recording_gateway, platform_private):
    class Session(requests.Session):
        closed = False

        def close(self):
            self.closed = True
            super().close()

    session = Session()
    recording_gateway.answer(200, success_body(platform_private, business_result()))
    with make_client(base_url=recording_gateway.url, session=session) as client:
        assert client.query_refund(TRANS_NO).status is RefundStatus.SUCCESS
    assert not session.closed
    owned = make_client()
    owned.close()  # closing twice is harmless
    owned.close()


# --------------------------------------------------------------------------- rate limiting


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def test_limiter_spaces_calls():
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        limiter.acquire()
    assert clock.sleeps == [0.25, 0.5]  # the first call goes at once


def test_limiter_lets_idle_time_pass():
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    assert limiter.reserve() == 0
    clock.now += 10  # long idle: no debt, and no burst saved up either
    assert limiter.reserve() == 0
    assert limiter.reserve() == pytest.approx(0.5)
    clock.now += 0.2
    assert limiter.reserve() == pytest.approx(0.8)


def test_limiter_gives_every_thread_its_own_slot():
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    waits: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker():
        start.wait()
        for _ in range(10):
            wait = limiter.reserve()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(round(wait, 6) for wait in waits) == [round(i / 10, 6) for i in range(160)]


def test_client_waits_for_its_turn_on_a_shared_limiter(
    make_client, recording_gateway, platform_private
):
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    first = make_client(base_url=recording_gateway.url, rate_limit=limiter)
    second = make_client(base_url=recording_gateway.url, rate_limit=limiter)
    for client in (first, second, first):
        recording_gateway.answer(200, success_body(platform_private, business_result()))
        client.query_refund(TRANS_NO)
    assert clock.sleeps == [pytest.approx(0.2), pytest.approx(0.4)]
    assert first.rate_limit == second.rate_limit == 5


def test_invalid_requests_take_no_turn(make_client):
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    client = make_client(rate_limit=limiter)
    with pytest.raises(InvalidRequestError):
        client.query_refund("")
    assert limiter.reserve() == 0


@pytest.mark.parametrize("rate", [0, -1, math.nan, math.inf, "5", True])
def test_limiter_refuses_bad_rates(rate):
    with pytest.raises(ValueError):
        RateLimiter(rate)


# --------------------------------------------------------------------------- no Django


def test_the_gateway_and_the_command_line_import_no_django():
    code = (
        "import sys, hsq_refunds.gateway, hsq_refunds.cli\n"
        "loaded = [m for m in sys.modules if m == 'django' or m.startswith('django.')]\n"
        "assert not loaded, loaded"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr
