"""HTTP for the gateway client: one ``requests`` session, urllib3's retries, and a deadline for
each whole call that a slow gateway cannot stretch.

urllib3's timeouts bound each socket operation, not a call, so a gateway that trickles its answer
keeps a call open as long as it likes. A watchdog thread therefore ends each :class:`Call` at its
deadline by shutting down its sockets, which Python's audit events ``socket.connect`` and
``http.client.send`` show (``requests`` shows none before the answer's headers): a blocked
connect, handshake, send or read ends at once, and neither a retry nor a wait starts that would
end later. A call that may not be sent twice (``resend=False``: an application for a refund) is
retried only when connecting failed, that is when nothing can have reached the gateway.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from .errors import TransportError
from .validation import RETRY_AFTER_CAP

__all__ = ["Call", "make_session", "post_form", "sends_once"]

#: An answer of the gateway is a few hundred bytes; anything this large is not one.
MAX_BODY_BYTES = 1 << 20
_HEADERS = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}


class Call:
    """One call to the gateway: its deadline in seconds from now, whether it may be sent again
    once it may have reached the gateway (``resend``), and duplicates of the descriptors of the
    sockets it uses (shutting down any descriptor of a socket ends it, TLS and all)."""

    def __init__(self, deadline: float, *, resend: bool) -> None:
        self.deadline = deadline
        self.ends_at = time.monotonic() + deadline
        self.resend = resend
        self.expired = False
        self.sockets: dict[socket.socket, socket.socket] = {}

    def deadline_error(self) -> TransportError:
        return TransportError(
            f"no complete answer from the gateway within the call's deadline of {self.deadline:g}s"
        )


class _Local(threading.local):
    call: Call | None = None  # the call this thread has in flight


_local = _Local()


class _Watchdog:
    """The calls in flight, and one thread per process (started on first use) that expires them
    at their deadlines. Its lock also keeps a call's duplicates from being closed (and their
    numbers reused) while they are shut down."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start afresh (in a forked child, which has none of its parent's threads)."""
        self.lock = threading.Condition(threading.Lock())
        self.calls: set[Call] = set()
        self.wakes_at = math.inf
        self.thread: threading.Thread | None = None

    @contextlib.contextmanager
    def track(self, call: Call) -> Iterator[Call]:
        """Watch ``call`` as this thread's call in flight."""
        with self.lock:
            if self.thread is None:
                _hook_audit_events()
                self.thread = threading.Thread(target=self.run, name="hsq-deadline", daemon=True)
                self.thread.start()
            self.calls.add(call)
            if call.ends_at < self.wakes_at:
                self.lock.notify()
        _local.call = call
        try:
            yield call
        finally:
            _local.call = None
            with self.lock:
                self.calls.discard(call)
                for duplicate in call.sockets.values():
                    duplicate.close()

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        """The audit hook: keeps a duplicate of each socket that the call in flight on this
        thread connects or sends a request on; once the call has expired, starts neither."""
        if (event == "socket.connect" or event == "http.client.send") and _local.call:
            call, sock = _local.call, args[0] if event == "socket.connect" else args[0].sock
            with self.lock:
                if call.expired:
                    raise call.deadline_error()
                if sock not in call.sockets:
                    with contextlib.suppress(OSError):
                        duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
                        call.sockets[sock] = duplicate

    def run(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                for call in [call for call in self.calls if call.ends_at <= now]:
                    self.calls.discard(call)
                    call.expired = True
                    for duplicate in call.sockets.values():
                        with contextlib.suppress(OSError):
                            duplicate.shutdown(socket.SHUT_RDWR)
                self.wakes_at = min((call.ends_at for call in self.calls), default=math.inf)
                self.lock.wait(self.wakes_at - now if self.calls else None)


_WATCHDOG = _Watchdog()
_in_flight = _WATCHDOG.track
_hooked = False


def _hook_audit_events() -> None:
    """Add the watchdog's audit hook, once per process (a forked child inherits it), on the
    first call: a process that never calls the gateway pays nothing for it."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_WATCHDOG.audit)
        _hooked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG.reset)


class _Retry(Retry):
    """urllib3's ``Retry`` with ``Retry-After`` capped at :data:`RETRY_AFTER_CAP`, so that a
    gateway cannot stall a sync, and with the deadline and ``resend`` of the call in flight."""

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), RETRY_AFTER_CAP)

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if _local.call is not None and not _local.call.resend:
            return False  # the gateway answered: it has the request
        return super().is_retry(method, status_code, has_retry_after)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> _Retry:
        call = _local.call
        if call is not None and call.expired:
            raise call.deadline_error()
        if call is not None and not call.resend and error is not None:
            cause = error.original_error if isinstance(error, ProxyError) else error
            if not isinstance(cause, ConnectTimeoutError):  # the request may have arrived
                raise MaxRetryError(_pool, url or "", error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def sleep(self, response: Any = None) -> None:
        call = _local.call
        if call is None:
            return super().sleep(response)
        wait = self.respect_retry_after_header and response and self.get_retry_after(response)
        wait = wait or self.get_backoff_time()
        if call.expired or wait >= call.ends_at - time.monotonic():
            raise call.deadline_error()  # the retry could only start too late
        time.sleep(wait)


class _Session(requests.Session):
    """The client's own session: its settings never change, so a POST to a URL is prepared
    once (the documented prepared-request flow) and each call only gives it a body."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared: dict[str, requests.PreparedRequest] = {}


def make_session(
    base_url: str, *, retries: int, backoff_factor: float, pool_maxsize: int
) -> requests.Session:
    """A session for one gateway URL: retries, a connection pool, the environment read once
    (the proxies and CA bundle it gives for the URL; never ``.netrc``), and no cookies."""
    retry = _Retry(
        total=retries,
        other=0,
        backoff_factor=backoff_factor,
        status_forcelist=range(500, 600),
        allowed_methods=frozenset({"POST"}),
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=pool_maxsize)
    session = _Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    environment = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies, session.verify = environment["proxies"], environment["verify"]
    session.trust_env = False
    session.headers["User-Agent"] = "hsq-refunds"
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session


def sends_once(session: requests.Session, url: str) -> bool:
    """Whether ``session`` (a caller's own) would not send a POST to ``url`` again once it may
    have reached the server. Adapters other than ``HTTPAdapter`` are the caller's to vouch for."""
    adapter = session.get_adapter(url)
    if not isinstance(adapter, HTTPAdapter):
        return True
    retry = adapter.max_retries
    if retry.total is False or retry.total == 0:
        return True
    post = not retry.allowed_methods or "POST" in retry.allowed_methods
    reads = post and retry.read not in (0, False)
    statuses = post and retry.status != 0
    statuses = statuses and bool(retry.status_forcelist or retry.respect_retry_after_header)
    return not (reads or statuses or retry.other != 0)


def post_form(
    session: requests.Session,
    url: str,
    form: Mapping[str, str],
    *,
    timeout: tuple[float, float],
    deadline: float,
    resend: bool,
) -> bytes:
    """POST ``form``; the body of a 2xx answer, or :class:`TransportError`. The whole call
    (connects, sends, reads, retries and the waits between them) ends by ``deadline`` seconds
    from now, with a :class:`TransportError` that says so."""
    call = Call(deadline, resend=resend)
    try:
        prepared, settings = _prepare(session, url, urlencode(form).encode("ascii"))
        with (
            _in_flight(call),
            session.send(prepared, timeout=timeout, allow_redirects=False, **settings) as response,
        ):
            body = _read(response)
        if not call.expired:  # else cut off at the deadline: what was read may be incomplete
            return body
    except requests.RequestException as exc:
        if not call.expired:
            raise TransportError(_describe(exc, timeout)) from None
    except TransportError:
        if not call.expired:
            raise
    raise call.deadline_error()


def _prepare(
    session: requests.Session, url: str, body: bytes
) -> tuple[requests.PreparedRequest, Any]:
    """A form POST of ``body`` to ``url``, and the settings to send it with, as
    ``session.post(url, data=body, headers=_HEADERS, stream=True)`` would have them."""
    if not isinstance(session, _Session):
        prepared = session.prepare_request(
            requests.Request("POST", url, headers=_HEADERS, data=body)
        )
        return prepared, session.merge_environment_settings(prepared.url, {}, True, None, None)
    template = session.prepared.get(url)
    if template is None:
        template = session.prepare_request(requests.Request("POST", url, headers=_HEADERS))
        session.prepared[url] = template
    prepared = template.copy()
    prepared.prepare_body(body, None)
    return prepared, {"stream": True}


def _read(response: requests.Response) -> bytes:
    """The body of a 2xx answer, refused past :data:`MAX_BODY_BYTES`."""
    status = response.status_code
    if not 200 <= status < 300:
        reason = f" {response.reason}" if response.reason else ""
        raise TransportError(f"the gateway answered HTTP {status}{reason}", status_code=status)
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            message = f"the gateway's answer is larger than {MAX_BODY_BYTES} bytes"
            raise TransportError(message, status_code=status)
    return bytes(body)


def _describe(exc: requests.RequestException, timeout: tuple[float, float]) -> str:
    """A clear, secret-free message for a failed request (after urllib3's retries)."""
    reason = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(exc, requests.ConnectTimeout):  # not raised when the connection was refused
        return f"timed out connecting to the gateway (connect timeout {timeout[0]:g}s)"
    if isinstance(exc, requests.ReadTimeout) or isinstance(reason, ReadTimeoutError):
        return f"timed out waiting for the gateway's answer (read timeout {timeout[1]:g}s)"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake with the gateway failed"
    broken = requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError
    if isinstance(exc, broken) or isinstance(reason, ProtocolError):
        return "the connection to the gateway broke off before a complete answer"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect to the gateway (connection refused or unreachable)"
    return f"request to the gateway failed ({type(exc).__name__})"
