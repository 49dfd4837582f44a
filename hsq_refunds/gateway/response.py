"""Reading the gateway's answers: the envelope, its signature, and the business fields.

Pure functions, no HTTP, following ``docs/protocol.md``. :func:`parse_signed_response` holds
the rules every method shares: the body is decoded once; a success is verified over
``result`` exactly as received *before* anything in it is read; a failure is verified
whenever it carries a ``sign``. The per-method readers (:func:`refund_query_result`,
:func:`refund_apply_result`) then check the verified fields against what was asked.
Everything that can go wrong is an :class:`~hsq_refunds.gateway.errors.HsqError`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import GatewayError, HsqError, ResponseError, SignatureError, TransportError
from .results import RefundApplyResult, RefundQueryResult, RefundStatus, SignedResult
from .signing import failure_sign_strings, success_sign_string, verify
from .validation import MAX_AMOUNT_FEN

__all__ = [
    "beijing",
    "parse_refund_query_response",
    "parse_signed_response",
    "refund_apply_result",
    "refund_query_result",
    "verify_result",
]

_SPRING_ERROR_KEYS = frozenset({"timestamp", "status", "error", "path"})
#: An amount as text: digits only (no sign, space or fraction), short enough to convert cheaply.
_DIGITS = re.compile("[0-9]{1,18}")
_FINISHED_DATE = re.compile("[0-9]{14}")


# --------------------------------------------------------------------------- the envelope


def parse_signed_response(
    body: bytes | str, *, sign_key: str, platform_key: rsa.RSAPublicKey
) -> SignedResult:
    """The verified ``result`` of a success answer, for any method.

    Raises :class:`TransportError` (not an HSQ envelope: not JSON, not an object, a
    Spring-style error page), :class:`GatewayError` (``success=false``, signed or not; a failure
    whose ``sign`` does not verify is a :class:`SignatureError`), :class:`SignatureError` (a
    success without a valid signature) or :class:`ResponseError` (no valid ``success`` flag, a
    ``result`` that is not a string holding a JSON object).
    """
    envelope = _decode_envelope(body)
    if not _is_success(envelope.get("success")):
        raise _gateway_error(envelope, sign_key, platform_key)
    result = envelope.get("result")
    if not isinstance(result, str):
        raise ResponseError("success answer whose 'result' is not a string")
    signature = envelope.get("sign")
    if signature is None or signature == "":
        raise SignatureError("success answer without a signature")
    if not verify_result(result, signature, sign_key=sign_key, platform_key=platform_key):
        raise SignatureError("the signature of the success answer does not verify")
    fields = parse_fields(result, "the signed 'result'")
    return SignedResult(raw_result=result, fields=fields, sign=signature)


def verify_result(
    raw_result: str, sign: str, *, sign_key: str, platform_key: rsa.RSAPublicKey
) -> bool:
    """Whether ``sign`` (hex, either case) is the platform's signature of a success answer
    whose ``result`` was ``raw_result``: to verify a stored answer again, long after it came.

    Never raises: anything that is not a valid signature of exactly that text is ``False``.
    (A notification's signature covers more than its ``signContent``: see
    :func:`~hsq_refunds.gateway.notification.verify_notification_signature`.)
    """
    if not isinstance(raw_result, str) or not isinstance(sign, str):
        return False
    return verify(platform_key, success_sign_string(raw_result, sign_key), sign)


def parse_fields(text: str, what: str) -> dict[str, Any]:
    """The JSON object in ``text`` (a verified ``result`` or ``signContent``)."""
    try:
        fields = _loads(text)
    except ValueError:
        raise ResponseError(f"{what} is not JSON") from None
    if not isinstance(fields, dict):
        raise ResponseError(f"{what} is not a JSON object")
    return fields


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
            f"the gateway answered with a server error page ({clip(envelope.get('error'))})",
            status_code=status_code,
        )
    return envelope


def _is_success(value: object) -> bool:
    """``success`` as a JSON boolean or as the text ``true``/``false`` in any letter case."""
    if value is True or value is False:
        return value
    if isinstance(value, str):
        if value.lower() == "true":
            return True
        if value.lower() == "false":
            return False
    raise ResponseError(f"the gateway's answer has no valid 'success' flag (got {clip(value)})")


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


# --------------------------------------------------------------------------- per method


def parse_refund_query_response(
    body: bytes | str,
    *,
    merchant_no: str,
    trans_no: str,
    sign_key: str,
    platform_key: rsa.RSAPublicKey,
) -> RefundQueryResult:
    """Read the gateway's answer to ``POLYMERIZE_REFUND_QUERY`` for ``trans_no``.

    :func:`parse_signed_response`, then :func:`refund_query_result`. Returns the verified
    result or raises :class:`TransportError` (not an HSQ envelope), :class:`GatewayError`
    (``success=false``), :class:`SignatureError` (signature missing or wrong) or
    :class:`ResponseError` (anything malformed, or a result about another refund or merchant).
    """
    signed = parse_signed_response(body, sign_key=sign_key, platform_key=platform_key)
    return refund_query_result(signed, merchant_no=merchant_no, trans_no=trans_no)


def refund_query_result(
    signed: SignedResult, *, merchant_no: str, trans_no: str | None
) -> RefundQueryResult:
    """A refund's state from verified fields (a query's ``result``, a notification's
    ``signContent``), checked against the merchant and refund asked about.

    With ``trans_no`` given (a query), the fields must be about that refund; a result without
    ``transNo`` is accepted only when it has no ``orderStatus`` either (HSQ's "order does not
    exist" answers). With ``trans_no=None`` (a notification), the fields name the refund and
    must have a ``transNo``. A ``merchantNo``, when present, must be ``merchant_no``.
    """
    fields = signed.fields
    status = _order_status(fields.get("orderStatus"))
    answered_trans_no = _text(fields, "transNo")
    if trans_no is None:
        if not answered_trans_no:
            raise ResponseError("the result has no transNo")
        trans_no = answered_trans_no
    elif answered_trans_no != trans_no and (answered_trans_no or status is not None):
        raise ResponseError(
            f"the result is about transNo {clip(answered_trans_no)}, not {trans_no!r}"
            if answered_trans_no
            else "the result has an orderStatus but no transNo"
        )
    _check_merchant(fields, merchant_no)
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
        raw_result=signed.raw_result,
        sign=signed.sign,
    )


def refund_apply_result(
    signed: SignedResult, *, merchant_no: str, trans_no: str
) -> RefundApplyResult:
    """An application's verified result: it must be about ``trans_no`` (the refund just applied
    for, compared exactly) and, when it names one, about ``merchant_no``."""
    fields = signed.fields
    answered_trans_no = _text(fields, "transNo")
    if answered_trans_no != trans_no:
        raise ResponseError(
            f"the result is about transNo {clip(answered_trans_no)}, not {trans_no!r}"
            if answered_trans_no
            else "the result has no transNo"
        )
    _check_merchant(fields, merchant_no)
    return RefundApplyResult(
        merchant_no=merchant_no,
        trans_no=trans_no,
        trade_no=_text(fields, "tradeNo"),
        amount=_amount(fields.get("orderAmt")),
        status=_order_status(fields.get("orderStatus")),
        finished_at=_finished_at(fields.get("finishedDate")),
        resp_code=_text(fields, "respCode"),
        resp_msg=_text(fields, "respMsg"),
        raw_result=signed.raw_result,
        sign=signed.sign,
    )


def _check_merchant(fields: Mapping[str, Any], merchant_no: str) -> None:
    answered = _text(fields, "merchantNo")
    if answered and answered != merchant_no:
        raise ResponseError(f"the result is about merchantNo {clip(answered)}, not {merchant_no!r}")


# --------------------------------------------------------------------------- field values


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
    raise ResponseError(f"unknown orderStatus {clip(value)}")


def _amount(value: object) -> int | None:
    """``orderAmt``: whole fen from 0 to :data:`MAX_AMOUNT_FEN`, as a JSON number or digits."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        amount = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        amount = int(value)
    else:
        raise ResponseError(f"orderAmt is not a whole number of fen (got {clip(value)})")
    if not 0 <= amount <= MAX_AMOUNT_FEN:
        raise ResponseError(f"orderAmt {clip(value)} is outside 0 to {MAX_AMOUNT_FEN} fen")
    return amount


def _finished_at(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and _FINISHED_DATE.fullmatch(value):
        try:
            return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=beijing())
        except ValueError:
            pass
    raise ResponseError(f"finishedDate is not yyyyMMddHHmmss (got {clip(value)})")


@functools.cache
def beijing() -> tzinfo:
    """Asia/Shanghai; a fixed +08:00 where no time zone database is installed (China has
    kept +08:00 without daylight saving since 1991)."""
    try:
        return ZoneInfo("Asia/Shanghai")
    except ZoneInfoNotFoundError:
        return timezone(timedelta(hours=8), "Asia/Shanghai")


def clip(value: object, limit: int = 80) -> str:
    """A short ``repr`` of a value from the gateway, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
