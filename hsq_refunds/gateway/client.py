"""The HTTP client of HSQ's acquiring API and the rules for reading its answers.

:class:`HsqClient` sends the signed ``POLYMERIZE_REFUND_QUERY`` and returns a verified
:class:`~hsq_refunds.gateway.results.RefundQueryResult` or raises a typed
:class:`~hsq_refunds.gateway.errors.HsqError`. :func:`parse_refund_query_response` holds the
response rules of ``PROTOCOL.md`` as a pure function, so they can be tested and reused apart
from HTTP.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from .errors import (
    ConfigurationError,
    GatewayError,
    HsqError,
    ResponseError,
    SignatureError,
    TransportError,
)
from .keys import KeySource, load_platform_key, load_private_key
from .results import RefundQueryResult, RefundStatus
from .signing import (
    encode_sign_content,
    failure_sign_strings,
    request_sign_string,
    sign,
    success_sign_string,
    verify,
)
from .validation import (
    ENVIRONMENTS,
    RETRY_AFTER_CAP,
    check_merchant_no,
    check_trans_no,
    resolve_base_url,
)

__all__ = [
    "ENVIRONMENTS",
    "REFUND_QUERY_METHOD",
    "HsqClient",
    "RateLimiter",
    "parse_refund_query_response",
]

logger = logging.getLogger("hsq_refunds.gateway.client")

REFUND_QUERY_METHOD = "POLYMERIZE_REFUND_QUERY"

#: An answer to a refund query is a few hundred bytes; anything this large is not one.
_MAX_BODY_BYTES = 1 << 20
_SPRING_ERROR_KEYS = frozenset({"timestamp", "status", "error", "path"})
_DIGITS = re.compile(r"^[0-9]{1,18}$")
_FINISHED_DATE = re.compile(r"^[0-9]{14}$")


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


class _Retry(Retry):
    """urllib3's ``Retry`` with ``Retry-After`` capped, so a gateway cannot stall a sync."""

    RETRY_AFTER_CAP = RETRY_AFTER_CAP

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.RETRY_AFTER_CAP)


class HsqClient:
    """A client of HSQ's acquiring API for one merchant.

    Everything is checked and parsed once, here: a bad setting raises
    :class:`~hsq_refunds.gateway.errors.ConfigurationError` naming the parameter, instead of
    failing later on every query. The client holds one ``requests.Session`` (a connection pool
    of ``pool_maxsize``) and is safe to share between threads; ``rate_limit`` (requests per
    second) paces the queries of all of them together. A :class:`RateLimiter` may be passed
    instead of a number, to share one pace between several clients.

    Retries are urllib3's: connection failures, read timeouts and 5xx answers are retried up
    to ``retries`` times with exponential backoff (``backoff_factor``), honouring
    ``Retry-After``. That is safe because the refund query only reads. Business errors are
    never retried here: they are answers.

    A ``session`` passed in is used as it is (its adapters, proxies and TLS settings are the
    caller's, so the retry settings do not apply to it) and is not closed by :meth:`close`.
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
        pool_maxsize = _check_count("pool_maxsize", pool_maxsize, minimum=1)
        self._limiter = None if rate_limit is None else _make_limiter(rate_limit)
        self._private_key = _private_key(private_key, private_key_password)
        self._platform_key = _platform_key(platform_key)
        self._owns_session = session is None
        self._session = (
            session
            if session is not None
            else _make_session(
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

    def query_refund(self, trans_no: str) -> RefundQueryResult:
        """Ask HSQ about the refund whose merchant order number is ``trans_no``.

        Returns the verified result; raises :class:`InvalidRequestError` for a ``trans_no``
        that cannot be sent (before anything is sent), :class:`TransportError`,
        :class:`GatewayError`, :class:`SignatureError` or :class:`ResponseError` otherwise.
        """
        check_trans_no(trans_no)
        started = time.monotonic()
        try:
            result = self._query_refund(trans_no)
        except HsqError as exc:
            _log_outcome(trans_no, started, f"error:{exc.kind}", code=exc.code, detail=str(exc))
            raise
        _log_outcome(
            trans_no,
            started,
            "ok",
            code=result.resp_code,
            detail=f"orderStatus={result.status.value if result.status else ''}",
        )
        return result

    def _query_refund(self, trans_no: str) -> RefundQueryResult:
        body = self._post(REFUND_QUERY_METHOD, {"transNo": trans_no})
        return parse_refund_query_response(
            body,
            merchant_no=self._merchant_no,
            trans_no=trans_no,
            sign_key=self._sign_key.reveal(),
            platform_key=self._platform_key,
        )

    def _signed_form(self, method: str, business: Mapping[str, Any]) -> dict[str, str]:
        fields = {
            "method": method,
            "version": "1.0",
            "format": "JSON",
            "merchantNo": self._merchant_no,
            "signType": "RSA2",
            "signContent": encode_sign_content(business),
        }
        sign_string = request_sign_string(fields, self._sign_key.reveal())
        return {**fields, "sign": sign(self._private_key, sign_string)}

    def _post(self, method: str, business: Mapping[str, Any]) -> bytes:
        """POST the signed form; the body of a 2xx answer, or :class:`TransportError`."""
        form = self._signed_form(method, business)
        if self._limiter is not None:
            self._limiter.acquire()
        try:
            response = self._session.post(
                self._base_url,
                data=form,
                timeout=self._timeout,
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
            raise TransportError(_describe_request_failure(exc, self._timeout)) from None


def _read_body(response: requests.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=64 * 1024):
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            raise TransportError(
                f"the gateway's answer is larger than {_MAX_BODY_BYTES} bytes",
                status_code=response.status_code,
            )
        chunks.append(chunk)
    return b"".join(chunks)


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


def _log_outcome(trans_no: str, started: float, outcome: str, *, code: str, detail: str) -> None:
    duration_ms = (time.monotonic() - started) * 1000
    logger.debug(
        "%s transNo=%s outcome=%s code=%s duration_ms=%.0f %s",
        REFUND_QUERY_METHOD,
        trans_no,
        outcome,
        code,
        duration_ms,
        detail,
        extra={"trans_no": trans_no, "outcome": outcome, "duration_ms": duration_ms},
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


def _make_session(
    base_url: str, *, retries: int, backoff_factor: float, pool_maxsize: int
) -> requests.Session:
    """A session for one gateway URL: retries, a connection pool, the environment read once.

    ``requests`` reads proxy variables, ``.netrc`` and the CA bundle variables on every request
    (a noticeable share of a query's CPU time); the proxies and CA bundle the environment gives
    for the gateway's URL are resolved here once instead, and ``.netrc`` is never used.
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
    adapter = HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=pool_maxsize)
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    environment = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies = environment["proxies"]
    session.verify = environment["verify"]
    session.trust_env = False
    session.headers["User-Agent"] = "hsq-refunds"
    return session


# --------------------------------------------------------------------------- the response


def parse_refund_query_response(
    body: bytes | str,
    *,
    merchant_no: str,
    trans_no: str,
    sign_key: str,
    platform_key: rsa.RSAPublicKey,
) -> RefundQueryResult:
    """Read the gateway's answer to ``POLYMERIZE_REFUND_QUERY`` for ``trans_no``.

    Follows ``PROTOCOL.md``: the envelope is decoded once; a success is verified over
    ``result`` exactly as received *before* anything in it is read; a failure is verified
    whenever it carries a ``sign``. Returns the verified result or raises
    :class:`TransportError` (not an HSQ envelope), :class:`GatewayError` (``success=false``),
    :class:`SignatureError` (signature missing or wrong) or :class:`ResponseError`
    (anything malformed, or a result about another refund or merchant).
    """
    envelope = _decode_envelope(body)
    if _is_success(envelope.get("success")):
        raw_result, fields = _verified_result(envelope, sign_key, platform_key)
        return _refund_query_result(
            fields, raw_result=raw_result, merchant_no=merchant_no, trans_no=trans_no
        )
    raise _gateway_error(envelope, sign_key, platform_key)


def _loads(text: bytes | str) -> Any:
    """``json.loads`` with every way it can fail folded into ``ValueError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _decode_envelope(body: bytes | str) -> dict[str, Any]:
    try:
        envelope = _loads(body)
    except ValueError:
        raise TransportError("the gateway's answer is not JSON") from None
    if not isinstance(envelope, dict):
        raise TransportError("the gateway's answer is not a JSON object")
    if "success" not in envelope and _SPRING_ERROR_KEYS <= envelope.keys():
        status = envelope.get("status")
        status_code = status if isinstance(status, int) and not isinstance(status, bool) else None
        raise TransportError(
            f"the gateway answered with a server error page ({_clip(envelope.get('error'))})",
            status_code=status_code,
        )
    return envelope


def _is_success(value: object) -> bool:
    if value is True or value == "true":
        return True
    if value is False or value == "false":
        return False
    raise ResponseError(f"the gateway's answer has no valid 'success' flag (got {_clip(value)})")


def _verified_result(
    envelope: Mapping[str, Any], sign_key: str, platform_key: rsa.RSAPublicKey
) -> tuple[str, dict[str, Any]]:
    """The ``result`` string, verified, and the business fields parsed from it."""
    result = envelope.get("result")
    if not isinstance(result, str):
        raise ResponseError("success answer whose 'result' is not a string")
    signature = envelope.get("sign")
    if signature is None or signature == "":
        raise SignatureError("success answer without a signature")
    if not (
        isinstance(signature, str)
        and verify(platform_key, success_sign_string(result, sign_key), signature)
    ):
        raise SignatureError("the signature of the success answer does not verify")
    try:
        fields = _loads(result)
    except ValueError:
        raise ResponseError("the signed 'result' is not JSON") from None
    if not isinstance(fields, dict):
        raise ResponseError("the signed 'result' is not a JSON object")
    return result, fields


def _gateway_error(
    envelope: Mapping[str, Any], sign_key: str, platform_key: rsa.RSAPublicKey
) -> HsqError:
    error_code = envelope.get("errorCode")
    error_msg = envelope.get("errorMsg")
    signature = envelope.get("sign")
    signed = signature is not None and signature != ""
    if signed and not (
        isinstance(signature, str)
        and any(
            verify(platform_key, message, signature)
            for message in failure_sign_strings(error_code, error_msg, sign_key)
        )
    ):
        return SignatureError("the signature of the failure answer does not verify")
    return GatewayError(_lenient_text(error_code), _lenient_text(error_msg), signed=signed)


def _refund_query_result(
    fields: Mapping[str, Any], *, raw_result: str, merchant_no: str, trans_no: str
) -> RefundQueryResult:
    status = _order_status(fields.get("orderStatus"))
    answered_trans_no = _text(fields, "transNo")
    if answered_trans_no != trans_no and (answered_trans_no or status is not None):
        raise ResponseError(
            f"the result is about transNo {_clip(answered_trans_no)}, not {trans_no!r}"
            if answered_trans_no
            else "the result has an orderStatus but no transNo"
        )
    answered_merchant_no = _text(fields, "merchantNo")
    if answered_merchant_no and answered_merchant_no != merchant_no:
        raise ResponseError(
            f"the result is about merchantNo {_clip(answered_merchant_no)}, not {merchant_no!r}"
        )
    return RefundQueryResult(
        merchant_no=merchant_no,
        trans_no=trans_no,
        status=status,
        resp_code=_text(fields, "respCode"),
        resp_msg=_text(fields, "respMsg"),
        orig_trans_no=_text(fields, "origTransNo"),
        trade_no=_text(fields, "tradeNo"),
        amount=_amount(fields.get("orderAmt")),
        finished_at=_finished_at(fields.get("finishedDate")),
        extend=_text(fields, "extend"),
        raw_result=raw_result,
    )


def _text(fields: Mapping[str, Any], name: str) -> str:
    """A business field as text: ``None`` is empty, a number its decimal form."""
    value = fields.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise ResponseError(f"{name} in the result is not text (got {type(value).__name__})")


def _lenient_text(value: object) -> str:
    """Error codes and messages for display: whatever the gateway sent, as text."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _order_status(value: object) -> RefundStatus | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return RefundStatus(value)
        except ValueError:
            pass
    raise ResponseError(f"unknown orderStatus {_clip(value)}")


def _amount(value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ResponseError(f"negative orderAmt {value}")
        return value
    if isinstance(value, str) and _DIGITS.match(value):
        return int(value)
    raise ResponseError(f"orderAmt is not a whole number of fen (got {_clip(value)})")


def _finished_at(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and _FINISHED_DATE.match(value):
        try:
            return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=_beijing())
        except ValueError:
            pass
    raise ResponseError(f"finishedDate is not yyyyMMddHHmmss (got {_clip(value)})")


@functools.cache
def _beijing() -> tzinfo:
    """Asia/Shanghai; a fixed +08:00 where no time zone database is installed (China has
    kept +08:00 without daylight saving since 1991)."""
    try:
        return ZoneInfo("Asia/Shanghai")
    except ZoneInfoNotFoundError:
        return timezone(timedelta(hours=8), "Asia/Shanghai")


def _clip(value: object, limit: int = 80) -> str:
    """A short ``repr`` of a value from the gateway, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
