"""The client of HSQ's acquiring API: one general signed call, and a typed method per operation.

:class:`HsqClient` signs a request, sends it, verifies the answer and returns a typed result
(:meth:`~HsqClient.query_refund`, :meth:`~HsqClient.apply_refund`), or raises a typed
:class:`~hsq_refunds.gateway.errors.HsqError`; :meth:`~HsqClient.call` is the general signed call
under both. It also verifies HSQ's refund notifications with the merchant's keys. The rules for
reading answers are pure functions in :mod:`hsq_refunds.gateway.response`
(:func:`parse_refund_query_response` is re-exported here); HTTP, retries and the deadline are in
:mod:`hsq_refunds.gateway.transport`. See ``docs/protocol.md``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import ConfigurationError, HsqError, InvalidRequestError
from .keys import KeySource, load_platform_key, load_private_key
from .methods import (
    READ_ONLY_METHODS,
    REFUND_APPLY_METHOD,
    REFUND_QUERY_METHOD,
    RefundApplyRequest,
    RefundQueryRequest,
)
from .notification import verify_notification as _verify_notification
from .response import beijing, parse_refund_query_response, parse_signed_response
from .results import RefundApplyResult, RefundQueryResult, SignedResult
from .signing import encode_sign_content, request_sign_string, sign
from .text import printable
from .transport import make_session, post_form, sends_once
from .validation import (
    ENVIRONMENTS,
    check_merchant_no,
    check_text,
    query_deadline,
    resolve_base_url,
)

__all__ = [
    "ENVIRONMENTS",
    "REFUND_APPLY_METHOD",
    "REFUND_QUERY_METHOD",
    "HsqClient",
    "RateLimiter",
    "parse_refund_query_response",
]

logger = logging.getLogger("hsq_refunds.gateway.client")

_METHOD_MAX_LENGTH = 64
_ResultT = TypeVar("_ResultT", RefundQueryResult, RefundApplyResult)


# --------------------------------------------------------------------------- rate limiting


class RateLimiter:
    """Spaces calls at least ``1 / rate`` seconds apart, across every thread that shares it.

    Each caller reserves the next free slot under a lock and sleeps outside it, so a waiting
    thread holds up no one but itself. There is no burst allowance: HSQ's own limits are not
    documented, and an even pace is the polite reading of "n requests per second". ``clock``
    and ``sleep`` are injectable so the pacing can be tested without waiting.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not rate > 0:
            raise ValueError("rate must be a positive number of requests per second")
        if math.isinf(rate):
            raise ValueError("rate must be finite")
        self.rate = float(rate)
        self.interval = 1.0 / self.rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = -math.inf

    def reserve(self) -> float:
        """Take the next free slot; return how many seconds to wait for it."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        return slot - now

    def acquire(self) -> None:
        """Wait for this caller's turn."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate!r})"


# --------------------------------------------------------------------------- the client


class _Secret:
    """Holds a secret so that ``repr``/``vars``-based output of its owner shows no value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


class HsqClient:
    """A client of HSQ's acquiring API for one merchant.

    Everything is checked and parsed once, here: a bad setting raises
    :class:`~hsq_refunds.gateway.errors.ConfigurationError` naming the parameter, instead of
    failing later on every call. The client holds one ``requests.Session`` (a connection pool
    of ``pool_maxsize``) and is safe to share between threads; ``rate_limit`` (requests per
    second) paces the calls of all of them together. A :class:`RateLimiter` may be passed
    instead of a number, to share one pace between several clients.

    Retries are urllib3's, and depend on the method. A method that only reads (the refund
    query) is retried up to ``retries`` times after connection failures, read timeouts and
    5xx answers, with exponential backoff (``backoff_factor``), honouring ``Retry-After``. An
    application for a refund is retried only when connecting failed (nothing was sent), never
    once the request may have reached the gateway. Business errors are never retried here:
    they are answers.

    ``deadline`` bounds a whole call in seconds: connecting, sending, every read, every retry
    and the waits between them (the rate limiter's wait comes before and is not counted). By
    default it is :func:`~hsq_refunds.gateway.validation.query_deadline` of the timeouts and
    retries, the longest a call takes when every socket read ends in time; a gateway that
    trickles its answer a few bytes at a time is cut off there with a
    :class:`~hsq_refunds.gateway.errors.TransportError` naming the deadline.

    A ``session`` passed in is used as it is (its adapters, proxies and TLS settings are the
    caller's, so the retry settings do not apply to it, nor does the deadline shorten its
    adapter's waits between retries) and is not closed by :meth:`close`. An application for
    a refund is refused with a :class:`ConfigurationError` when that session's adapter would
    send a POST again after it may have arrived.
    """

    def __init__(
        self,
        *,
        merchant_no: str,
        sign_key: str,
        private_key: rsa.RSAPrivateKey | KeySource,
        platform_key: rsa.RSAPublicKey | KeySource,
        private_key_password: str | None = None,
        base_url: str | None = None,
        environment: str = "production",
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        retries: int = 2,
        backoff_factor: float = 0.5,
        deadline: float | None = None,
        rate_limit: float | RateLimiter | None = None,
        pool_maxsize: int = 32,
        session: requests.Session | None = None,
    ) -> None:
        self._merchant_no = check_merchant_no(merchant_no)
        self._sign_key = _Secret(_check_sign_key(sign_key))
        self._base_url = resolve_base_url(base_url, environment)
        self._timeout = (
            _check_positive("connect_timeout", connect_timeout),
            _check_positive("read_timeout", read_timeout),
        )
        retries = _check_count("retries", retries, minimum=0)
        backoff_factor = _check_non_negative("backoff_factor", backoff_factor)
        self._deadline = (
            query_deadline(*self._timeout, retries, backoff_factor)
            if deadline is None
            else _check_positive("deadline", deadline)
        )
        pool_maxsize = _check_count("pool_maxsize", pool_maxsize, minimum=1)
        self._limiter = None if rate_limit is None else _make_limiter(rate_limit)
        self._private_key = _private_key(private_key, private_key_password)
        self._platform_key = _platform_key(platform_key)
        self._owns_session = session is None
        self._session = (
            session
            if session is not None
            else make_session(
                self._base_url,
                retries=retries,
                backoff_factor=backoff_factor,
                pool_maxsize=pool_maxsize,
            )
        )

    @property
    def merchant_no(self) -> str:
        return self._merchant_no

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` timeout in seconds, applied to every request."""
        return self._timeout

    @property
    def deadline(self) -> float:
        """Seconds one whole call may take (connect, reads, retries), after which it fails."""
        return self._deadline

    @property
    def rate_limit(self) -> float | None:
        """Requests per second shared by all threads using this client, or ``None``."""
        return self._limiter.rate if self._limiter else None

    def __repr__(self) -> str:
        return f"HsqClient(merchant_no={self._merchant_no!r}, base_url={self._base_url!r})"

    def __reduce__(self) -> Any:
        raise TypeError("HsqClient holds keys and is not pickled; build one per process")

    def close(self) -> None:
        """Close the connection pool (only if this client created the session)."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> HsqClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- the methods

    def query_refund(self, trans_no: str) -> RefundQueryResult:
        """Ask HSQ about the refund whose merchant order number is ``trans_no``.

        Returns the verified result; raises :class:`InvalidRequestError` for a ``trans_no``
        that cannot be sent (before anything is sent), :class:`TransportError`,
        :class:`GatewayError`, :class:`SignatureError` or :class:`ResponseError` otherwise.
        """
        request = RefundQueryRequest(trans_no)
        return self._logged(request.method, trans_no, lambda: self._send(request))

    def apply_refund(
        self,
        *,
        trans_no: str,
        orig_trans_no: str,
        orig_amount: int,
        amount: int,
        reason: str = "",
        refund_type: int = 2,
        request_date: datetime | None = None,
        return_url: str | None = None,
        extend: str = "",
    ) -> RefundApplyResult:
        """Apply to HSQ for a refund of ``amount`` fen of the paid order ``orig_trans_no``.

        ``trans_no`` is the new refund's own, unique merchant order number; ``orig_amount``
        what the original order was paid; ``request_date`` (timezone-aware) defaults to now.
        Every argument is checked before anything is sent (:class:`InvalidRequestError`
        naming it): order numbers, ``1 <= amount <= orig_amount <= MAX_AMOUNT_FEN`` as
        ``int``, texts and URL within their limits. See :class:`~.methods.RefundApplyRequest`.

        The application is sent once: it is retried only when the connection could not be
        made, so that nothing reached the gateway; after a read timeout, a broken connection,
        a 5xx answer or the deadline it is not sent again, and the outcome is unknown (a
        :class:`TransportError`): query ``trans_no`` before applying again. A refusal is a
        :class:`GatewayError` (``signed`` says whether it was authenticated). Returns the
        verified result, which must be about ``trans_no`` (else :class:`ResponseError`).
        """
        request = RefundApplyRequest(
            trans_no=trans_no,
            orig_trans_no=orig_trans_no,
            orig_amount=orig_amount,
            amount=amount,
            reason=reason,
            refund_type=refund_type,
            request_date=datetime.now(beijing()) if request_date is None else request_date,
            return_url=return_url,
            extend=extend,
        )
        return self._logged(request.method, trans_no, lambda: self._send(request))

    def verify_notification(self, form: Mapping[str, str]) -> RefundQueryResult:
        """Verify HSQ's refund notification to this merchant with this client's keys.

        See :func:`~hsq_refunds.gateway.notification.verify_notification`: the result reads
        like a query's; anything else is a :class:`SignatureError` or :class:`ResponseError`.
        """
        started = time.monotonic()
        try:
            result = _verify_notification(
                form,
                merchant_no=self._merchant_no,
                sign_key=self._sign_key.reveal(),
                platform_key=self._platform_key,
            )
        except HsqError as exc:
            _log_outcome("notification", "", started, f"error:{exc.kind}", exc.code, str(exc))
            raise
        detail = _status_detail(result)
        _log_outcome("notification", result.trans_no, started, "ok", result.resp_code, detail)
        return result

    def call(
        self, method: str, business: Mapping[str, Any], *, resend: bool | None = None
    ) -> SignedResult:
        """One signed call of any method: sign, POST, read, verify, decode ``result``.

        ``business`` is serialized once, compactly, as ``signContent``. ``resend`` says whether
        the request may be sent again once it may have reached the gateway (read timeouts,
        broken connections, 5xx answers); by default only for the methods that only read
        (:data:`~.methods.READ_ONLY_METHODS`). Returns the verified result, exactly as
        received and parsed; raises :class:`InvalidRequestError` (before sending),
        :class:`ConfigurationError`, :class:`TransportError`, :class:`GatewayError`,
        :class:`SignatureError` or :class:`ResponseError`.
        """
        form = self._signed_form(method, business)
        if resend is None:
            resend = method in READ_ONLY_METHODS
        if not resend and not self._owns_session and not sends_once(self._session, self._base_url):
            raise ConfigurationError(
                f"session: its adapter retries a POST that may have arrived; {method} is sent "
                "at most once, so pass a session without read or status retries"
            )
        if self._limiter is not None:
            self._limiter.acquire()
        body = post_form(
            self._session,
            self._base_url,
            form,
            timeout=self._timeout,
            deadline=self._deadline,
            resend=resend,
        )
        return parse_signed_response(
            body, sign_key=self._sign_key.reveal(), platform_key=self._platform_key
        )

    def _send(self, request: RefundQueryRequest | RefundApplyRequest) -> Any:
        signed = self.call(request.method, request.business())
        return request.result(signed, merchant_no=self._merchant_no)

    def _logged(self, method: str, trans_no: str, send: Callable[[], _ResultT]) -> _ResultT:
        started = time.monotonic()
        try:
            result = send()
        except HsqError as exc:
            _log_outcome(method, trans_no, started, f"error:{exc.kind}", exc.code, str(exc))
            raise
        _log_outcome(method, trans_no, started, "ok", result.resp_code, _status_detail(result))
        return result

    def _signed_form(self, method: str, business: Mapping[str, Any]) -> dict[str, str]:
        check_text(method, "method", max_length=_METHOD_MAX_LENGTH)
        if not method:
            raise InvalidRequestError("method must not be empty")
        try:
            content = encode_sign_content(business)
        except (TypeError, ValueError):
            raise InvalidRequestError("business parameters cannot be sent as JSON") from None
        fields = {
            "method": method,
            "version": "1.0",
            "format": "JSON",
            "merchantNo": self._merchant_no,
            "signType": "RSA2",
            "signContent": content,
        }
        sign_string = request_sign_string(fields, self._sign_key.reveal())
        try:
            signature = sign(self._private_key, sign_string)
        except UnicodeEncodeError:
            raise InvalidRequestError("business parameters hold text with no UTF-8 form") from None
        return {**fields, "sign": signature}


def _status_detail(result: RefundQueryResult | RefundApplyResult) -> str:
    return f"orderStatus={result.status.value if result.status else ''}"


def _log_outcome(
    method: str, trans_no: str, started: float, outcome: str, code: str, detail: str
) -> None:
    """One line per call, greppable by ``transNo``. The gateway's text (error codes and
    messages) is escaped, so that it cannot forge log lines or drive a terminal."""
    duration_ms = (time.monotonic() - started) * 1000
    shown_trans_no = printable(trans_no)
    logger.debug(
        "%s transNo=%s outcome=%s code=%s duration_ms=%.0f %s",
        method,
        shown_trans_no,
        outcome,
        printable(code),
        duration_ms,
        printable(detail),
        extra={"trans_no": shown_trans_no, "outcome": outcome, "duration_ms": duration_ms},
    )


# --------------------------------------------------------------------------- configuration


def _check_sign_key(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            "sign_key: the merchant's sign key (签名混淆KEY) is required and must be text"
        )
    if value != value.strip():
        raise ConfigurationError("sign_key: has leading or trailing whitespace")
    return value


def _finite(value: object) -> float | None:
    """``value`` as a float if it is a finite int or float (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _check_positive(name: str, value: object) -> float:
    number = _finite(value)
    if number is None or number <= 0:
        raise ConfigurationError(f"{name}: must be a positive number of seconds")
    return number


def _check_non_negative(name: str, value: object) -> float:
    number = _finite(value)
    if number is None or number < 0:
        raise ConfigurationError(f"{name}: must be a number >= 0")
    return number


def _check_count(name: str, value: object, *, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(f"{name}: must be an integer >= {minimum}")
    return value


def _make_limiter(rate_limit: object) -> RateLimiter:
    if isinstance(rate_limit, RateLimiter):
        return rate_limit
    rate = _finite(rate_limit)
    if rate is None or rate <= 0:
        raise ConfigurationError("rate_limit: must be a positive number of requests per second")
    return RateLimiter(rate)


def _private_key(key: rsa.RSAPrivateKey | KeySource, password: str | None) -> rsa.RSAPrivateKey:
    if isinstance(key, rsa.RSAPrivateKey):
        return key
    if key is None:
        raise ConfigurationError("private_key: the merchant private key is required")
    return load_private_key(key, password)


def _platform_key(key: rsa.RSAPublicKey | KeySource) -> rsa.RSAPublicKey:
    if isinstance(key, rsa.RSAPublicKey):
        return key
    if key is None:
        raise ConfigurationError("platform_key: the platform certificate is required")
    return load_platform_key(key)
