"""HTTP for the gateway client: one ``requests`` session (whose own POSTs go straight to its
urllib3 pool, as ``requests`` would send them, without its per-request work), urllib3's
retries, and a deadline for each whole call that a slow gateway cannot stretch.

urllib3's timeouts bound each socket operation, not a call: a gateway that sends its answer a
few bytes at a time keeps a call open as long as it likes, one read timeout per byte. Every
call therefore runs as a :class:`Call` with a deadline, watched by one :class:`_Watchdog`
thread per process. The connections of the client's own session record their sockets in the
call in flight (a duplicate of the descriptor, which stays valid across TLS wrapping); when
the deadline passes, the watchdog shuts those sockets down, which ends a blocked connect
handshake, send or read at once. The retry policy refuses to retry or wait past the deadline,
and a new connection's connect timeout is cut to the time left. The caller then gets a
:class:`~hsq_refunds.gateway.errors.TransportError` that names the deadline.

A call that may not be sent twice (``resend=False``, an application for a refund) is retried
only when connecting failed, that is when nothing can have reached the gateway.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3 import connection as urllib3_connection
from urllib3 import poolmanager
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from .errors import TransportError
from .validation import RETRY_AFTER_CAP

__all__ = ["Call", "current_call", "make_session", "post_form", "sends_once"]

#: An answer of the gateway is a few hundred bytes; anything this large is not one.
MAX_BODY_BYTES = 1 << 20


class _DeadlineExceeded(Exception):
    """Ends a call from inside urllib3 once its deadline has passed."""


# --------------------------------------------------------------------------- the call in flight


class Call:
    """One call to the gateway: its deadline, whether it may be sent again, its sockets.

    ``deadline`` is in seconds from now. ``resend`` says whether urllib3 may send the request
    again after it may have reached the gateway (a read error, a 5xx answer); connect failures
    are retried either way. :meth:`expire` (the watchdog's, at the deadline) shuts down every
    socket the call uses; :meth:`finish` ends the watch and releases them.
    """

    __slots__ = ("_lock", "_sockets", "deadline", "ends_at", "expired", "finished", "resend")

    def __init__(self, deadline: float, *, resend: bool) -> None:
        self.deadline = deadline
        self.ends_at = time.monotonic() + deadline
        self.resend = resend
        self.expired = False
        self.finished = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []

    def remaining(self) -> float:
        return self.ends_at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        """Keep a duplicate of ``sock``'s descriptor, to shut the connection down at the
        deadline. Shutting down any descriptor of a socket ends the connection for all of them,
        including the TLS socket that wraps (and takes over) the original."""
        try:
            duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        except (OSError, ValueError):
            return
        with self._lock:
            if not self.finished:
                self._sockets.append(duplicate)
                if self.expired:  # the deadline passed while this connection was being made
                    _shut_down(duplicate)
                return
        duplicate.close()

    def expire(self) -> None:
        """The deadline has passed: end whatever the call is waiting for."""
        with self._lock:
            if self.finished or self.expired:
                return
            self.expired = True
            # Under the lock, so that no socket is closed (and its descriptor number reused)
            # between looking it up and shutting it down.
            for sock in self._sockets:
                _shut_down(sock)

    def finish(self) -> None:
        with self._lock:
            self.finished = True
            sockets, self._sockets = self._sockets, []
            for sock in sockets:
                sock.close()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` before a retry, unless the retry could only start too late."""
        if self.expired:
            raise _DeadlineExceeded
        if seconds >= self.remaining():
            self.expire()
            raise _DeadlineExceeded
        if seconds > 0:
            time.sleep(seconds)


def _shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_local = threading.local()


def current_call() -> Call | None:
    """The call this thread has in flight, if any."""
    return getattr(_local, "call", None)


@contextlib.contextmanager
def _in_flight(call: Call) -> Iterator[Call]:
    _local.call = call
    _WATCHDOG.watch(call)
    try:
        yield call
    finally:
        call.finish()
        _local.call = None
        _WATCHDOG.forget()


class _Watchdog:
    """One thread per process that expires calls at their deadlines (started on first use,
    and again in a forked child, where the parent's thread does not exist)."""

    #: Finished calls stay in the heap until their deadline, unless they outnumber the rest.
    _COMPACT_AT = 256

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Call]] = []
        self._order = itertools.count()
        self._finished = 0
        self._thread: threading.Thread | None = None

    def watch(self, call: Call) -> None:
        with self._condition:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="hsq-refunds-deadline", daemon=True
                )
                self._thread.start()
            entry = (call.ends_at, next(self._order), call)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._condition.notify()

    def forget(self) -> None:
        """A call finished: drop finished calls when they are most of the heap."""
        with self._condition:
            self._finished += 1
            if self._finished >= self._COMPACT_AT and 2 * self._finished >= len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
                self._finished = 0

    def _run(self) -> None:
        while True:
            with self._condition:
                due = self._wait_for_due()
            for call in due:
                call.expire()

    def _wait_for_due(self) -> list[Call]:
        while True:
            now = time.monotonic()
            due = []
            while self._heap and (self._heap[0][2].finished or self._heap[0][0] <= now):
                _ends_at, _order, call = heapq.heappop(self._heap)
                if call.finished:
                    self._finished = max(0, self._finished - 1)
                else:
                    due.append(call)
            if due:
                return due
            self._condition.wait(self._heap[0][0] - now if self._heap else None)


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG._reset)


# --------------------------------------------------------------------------- urllib3 parts


class _WatchedConnection:
    """Records in the call in flight every socket it connects or sends on, and cuts a new
    connection's connect timeout to the time the call has left."""

    sock: socket.socket | None
    timeout: Any
    _hsq_call: Call | None = None
    _hsq_body: bytes | None = None
    _hsq_joining = False

    def _new_conn(self) -> socket.socket:
        call = current_call()
        if call is not None:
            remaining = call.remaining()
            if call.expired or remaining <= 0:
                call.expire()
                raise _DeadlineExceeded
            if not isinstance(self.timeout, int | float) or self.timeout > remaining:
                self.timeout = remaining
        sock = super()._new_conn()  # type: ignore[misc]
        if call is not None:
            call.watch(sock)
            self._hsq_call = call
        return sock

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        call = current_call()
        if call is not None and self.sock is not None and self._hsq_call is not call:
            call.watch(self.sock)  # a connection kept alive from an earlier call
            self._hsq_call = call
        # A body of bytes sent with a Content-Length goes out with the headers in one write
        # (http.client writes them separately: a second system call and TCP segment).
        framed = not kwargs.get("chunked") and not any(
            name.lower() == "transfer-encoding" for name in headers or ()
        )
        self._hsq_body = body if framed and isinstance(body, bytes) and body else None
        self._hsq_joining = False
        try:
            super().request(method, url, body, headers, **kwargs)  # type: ignore[misc]
        finally:
            self._hsq_body = None
            self._hsq_joining = False

    def endheaders(self, message_body: Any = None, **kwargs: Any) -> None:
        if self._hsq_body is not None and message_body is None:
            if self.sock is None:
                # Connect (and send any proxy tunnel's CONNECT) now, as the first send would,
                # so that the next send is this request's headers.
                self.connect()  # type: ignore[attr-defined]
            self._hsq_joining = True
        super().endheaders(message_body, **kwargs)  # type: ignore[misc]

    def send(self, data: Any) -> None:
        body = self._hsq_body
        if body is not None:
            if self._hsq_joining:  # the headers: the body goes with them
                self._hsq_joining = False
                super().send(bytes(data) + body)  # type: ignore[misc]
                return
            if data is body:  # urllib3 sending the body that already went
                self._hsq_body = None
                return
        super().send(data)  # type: ignore[misc]


# _WatchedConnection.request takes urllib3's keyword arguments as **kwargs.
class _HTTPConnection(_WatchedConnection, urllib3_connection.HTTPConnection):  # type: ignore[misc]
    pass


class _HTTPSConnection(_WatchedConnection, urllib3_connection.HTTPSConnection):  # type: ignore[misc]
    pass


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}


class _Adapter(HTTPAdapter):
    """``HTTPAdapter`` whose connections (direct or through an HTTP proxy) are watched. Through
    a SOCKS proxy they are not: there the deadline is applied between retries and at the end."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager


class _Retry(Retry):
    """urllib3's ``Retry`` with ``Retry-After`` capped, so a gateway cannot stall a sync, and
    with the call's deadline and ``resend`` applied."""

    RETRY_AFTER_CAP = RETRY_AFTER_CAP

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.RETRY_AFTER_CAP)

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        call = current_call()
        if call is not None and not call.resend:
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
        call = current_call()
        if call is not None:
            if call.expired:
                raise _DeadlineExceeded
            if not call.resend and error is not None and not self._is_connection_error(error):
                # The request may have reached the gateway: it is not sent again.
                raise MaxRetryError(_pool, url or "", error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def sleep(self, response: Any = None) -> None:
        wait = 0.0
        if self.respect_retry_after_header and response:
            wait = self.get_retry_after(response) or 0.0
        if not wait:
            wait = self.get_backoff_time()
        call = current_call()
        if call is None:
            if wait > 0:
                time.sleep(wait)
            return
        call.pause(wait)


class _GatewaySession(requests.Session):
    """The client's own session. A POST through it skips what ``requests`` redoes for every
    request (preparing it: merging settings, headers, hooks and cookie jars, encoding the
    form) and goes to the adapter's urllib3 pool exactly as ``HTTPAdapter.send`` would send
    it, with the same proxy, TLS settings, retries, headers and request target, worked out
    once per URL. That is about a third of a query's CPU time. Cookies are neither sent nor
    kept (the gateway's calls are stateless). Other uses of the session (``session.post``)
    are plain ``requests``."""

    def __init__(self) -> None:
        super().__init__()
        self._routes: dict[str, _Route] = {}

    def route(self, url: str) -> _Route:
        route = self._routes.get(url)
        if route is None:
            route = self._routes[url] = _Route(self, url)
        return route


class _Route:
    """What ``requests`` works out for a form POST to one URL through a session, once."""

    __slots__ = ("adapter", "headers", "prepared", "proxies", "target", "verify")

    def __init__(self, session: requests.Session, url: str) -> None:
        adapter = session.get_adapter(url)
        if not isinstance(adapter, HTTPAdapter):  # pragma: no cover - make_session mounts one
            raise TypeError("the gateway session needs an HTTPAdapter")
        # The request as session.post(url, data=<a form>, headers=...) would prepare it; its
        # body is left out and given to each call.
        self.prepared = session.prepare_request(
            requests.Request("POST", url, headers={"Accept": "application/json"}, data={"a": "b"})
        )
        self.adapter = adapter
        self.proxies = dict(session.proxies)
        self.verify = session.verify
        self.target = adapter.request_url(self.prepared, self.proxies)
        self.headers = {
            name: value
            for name, value in self.prepared.headers.items()
            if name.lower() != "content-length"
        }

    def post(self, body: bytes, timeout: tuple[float, float]) -> Any:
        """The urllib3 response to POSTing ``body`` (streamed: read it, then release it)."""
        adapter = self.adapter
        pool: HTTPConnectionPool = adapter.get_connection_with_tls_context(  # type: ignore[assignment]
            self.prepared, self.verify, self.proxies
        )
        adapter.cert_verify(pool, self.prepared.url or "", self.verify, None)
        return pool.urlopen(
            method="POST",
            url=self.target,
            body=body,
            headers={**self.headers, "Content-Length": str(len(body))},
            redirect=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
            retries=adapter.max_retries,
            timeout=Timeout(connect=timeout[0], read=timeout[1]),
            chunked=False,
        )


def make_session(
    base_url: str, *, retries: int, backoff_factor: float, pool_maxsize: int
) -> requests.Session:
    """A session for one gateway URL: retries, a connection pool, the environment read once.

    ``requests`` reads proxy variables, ``.netrc`` and the CA bundle variables on every request
    (a noticeable share of a query's CPU time); the proxies and CA bundle the environment gives
    for the gateway's URL are resolved here once instead, and ``.netrc`` is never used. The
    client's own calls through it skip ``requests``' per-request work (:class:`_GatewaySession`).
    """
    retry = _Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=0,
        backoff_factor=backoff_factor,
        status_forcelist=frozenset(range(500, 600)),
        allowed_methods=frozenset({"POST"}),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    adapter = _Adapter(max_retries=retry, pool_connections=1, pool_maxsize=pool_maxsize)
    session = _GatewaySession()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    environment = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies = environment["proxies"]
    session.verify = environment["verify"]
    session.trust_env = False
    session.headers["User-Agent"] = "hsq-refunds"
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
    post = retry._is_method_retryable("POST")
    reads = post and retry.read not in (0, False)
    statuses = (
        post
        and retry.status != 0
        and bool(retry.status_forcelist or retry.respect_retry_after_header)
    )
    others = retry.other != 0
    return not (reads or statuses or others)


# --------------------------------------------------------------------------- one POST


def post_form(
    session: requests.Session,
    url: str,
    form: Mapping[str, str],
    *,
    timeout: tuple[float, float],
    deadline: float,
    resend: bool,
) -> bytes:
    """POST ``form``; the body of a 2xx answer, or :class:`TransportError`.

    The whole call (connects, sends, reads, retries and the waits between them) ends by
    ``deadline`` seconds from now, with a :class:`TransportError` that says so.
    """
    call = Call(deadline, resend=resend)
    try:
        with _in_flight(call):
            body = _post(session, url, form, timeout)
    except _DeadlineExceeded:
        raise _deadline_error(deadline) from None
    except TransportError:
        if call.expired:
            raise _deadline_error(deadline) from None
        raise
    if call.expired:  # cut off at the deadline: what was read may be incomplete
        raise _deadline_error(deadline)
    return body


def _deadline_error(deadline: float) -> TransportError:
    return TransportError(
        f"no complete answer from the gateway within the call's deadline of {deadline:g}s"
    )


def _post(
    session: requests.Session, url: str, form: Mapping[str, str], timeout: tuple[float, float]
) -> bytes:
    if isinstance(session, _GatewaySession):
        return _post_direct(session.route(url), form, timeout)
    try:
        response = session.post(
            url,
            data=form,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
            headers={"Accept": "application/json"},
        )
        with response:
            if not 200 <= response.status_code < 300:
                raise TransportError(
                    f"the gateway answered HTTP {response.status_code}"
                    f"{' ' + response.reason if response.reason else ''}",
                    status_code=response.status_code,
                )
            return _read_body(response)
    except requests.RequestException as exc:
        raise TransportError(_describe_request_failure(exc, timeout)) from None


def _post_direct(route: _Route, form: Mapping[str, str], timeout: tuple[float, float]) -> bytes:
    # Encoded as requests encodes a form: urlencode, UTF-8, '+' for spaces.
    body = urlencode(form).encode("ascii")
    try:
        response = route.post(body, timeout)
        read = False
        try:
            if not 200 <= response.status < 300:
                raise TransportError(
                    f"the gateway answered HTTP {response.status}"
                    f"{' ' + response.reason if response.reason else ''}",
                    status_code=response.status,
                )
            answer = _read_stream(response.stream(64 * 1024, decode_content=True), response.status)
            read = True
            return answer
        finally:
            if not read:
                # What is left of the answer would be read as the next answer on this
                # connection: it is closed instead of going back to the pool.
                response.close()
            response.release_conn()
    except (HTTPError, OSError) as exc:
        raise TransportError(_describe_urllib3_failure(exc, timeout)) from None


def _read_stream(chunks: Iterator[bytes], status_code: int) -> bytes:
    """The answer's body from its chunks, refused once it grows past :data:`MAX_BODY_BYTES`."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise TransportError(
                f"the gateway's answer is larger than {MAX_BODY_BYTES} bytes",
                status_code=status_code,
            )
        parts.append(chunk)
    return b"".join(parts)


def _describe_urllib3_failure(exc: BaseException, timeout: tuple[float, float]) -> str:
    """:func:`_describe_request_failure` for what urllib3 raises without ``requests``."""
    reason = exc.reason if isinstance(exc, MaxRetryError) else exc
    if isinstance(reason, NewConnectionError):  # a subclass of ConnectTimeoutError
        return "could not connect to the gateway (connection refused or unreachable)"
    if isinstance(reason, ConnectTimeoutError):
        return f"timed out connecting to the gateway (connect timeout {timeout[0]:g}s)"
    if isinstance(reason, ReadTimeoutError):
        return f"timed out waiting for the gateway's answer (read timeout {timeout[1]:g}s)"
    if isinstance(reason, SSLError):
        return "TLS handshake with the gateway failed"
    if isinstance(reason, ProtocolError) or isinstance(exc, ProtocolError | DecodeError):
        return "the connection to the gateway broke off before a complete answer"
    if isinstance(exc, MaxRetryError | ProxyError | OSError | ClosedPoolError):
        return "could not connect to the gateway (connection refused or unreachable)"
    return f"request to the gateway failed ({type(exc).__name__})"


def _read_body(response: requests.Response) -> bytes:
    return _read_stream(response.iter_content(chunk_size=64 * 1024), response.status_code)


def _describe_request_failure(exc: requests.RequestException, timeout: tuple[float, float]) -> str:
    """A clear, secret-free message for a failed request (after urllib3's retries)."""
    reason = _root_cause(exc)
    if isinstance(reason, NewConnectionError):  # a subclass of ConnectTimeoutError
        return "could not connect to the gateway (connection refused or unreachable)"
    if isinstance(exc, requests.ConnectTimeout) or isinstance(reason, ConnectTimeoutError):
        return f"timed out connecting to the gateway (connect timeout {timeout[0]:g}s)"
    if isinstance(exc, requests.ReadTimeout) or isinstance(reason, ReadTimeoutError):
        return f"timed out waiting for the gateway's answer (read timeout {timeout[1]:g}s)"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake with the gateway failed"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or isinstance(
        reason, ProtocolError
    ):
        return "the connection to the gateway broke off before a complete answer"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect to the gateway (connection refused or unreachable)"
    return f"request to the gateway failed ({type(exc).__name__})"


def _root_cause(exc: BaseException) -> BaseException | None:
    """The urllib3 error behind a requests exception (``MaxRetryError.reason`` unwrapped)."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
    return getattr(inner, "reason", inner)
