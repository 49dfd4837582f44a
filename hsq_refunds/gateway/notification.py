"""Verifying HSQ's refund notification: the form HSQ POSTs to a refund's ``returnUrl``.

Pure functions, no HTTP. The notification carries the seven request fields (``method,
version, format, merchantNo, signType, signContent, sign``) and is signed like a request, but
by the platform: SHA256withRSA over the *received* values in the request's fixed order plus
``&key=<sign key>``, verified against the merchant's platform key. Its ``method`` and
``version`` are not public, so they are taken as received, never compared with a fixed value.
Only a verified ``signContent`` is read: it holds the fields of a refund query's result.
See ``docs/protocol.md``.

A receiving view decodes the form body once, finds the merchant with
:func:`notification_merchant_no` (to pick that merchant's keys), then calls
:func:`verify_notification` (or :meth:`HsqClient.verify_notification
<hsq_refunds.gateway.HsqClient.verify_notification>`) and hands the result to the same rules
as a query's answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import ConfigurationError, ResponseError, SignatureError
from .response import clip, parse_fields, refund_query_result
from .results import RefundQueryResult, SignedResult
from .signing import REQUEST_SIGN_FIELDS, request_sign_string, verify
from .validation import check_merchant_no

__all__ = [
    "NOTIFICATION_FIELDS",
    "notification_merchant_no",
    "verify_notification",
    "verify_notification_signature",
]

#: The fields of a notification: the signed ones in sign-string order, then ``sign``.
NOTIFICATION_FIELDS = (*REQUEST_SIGN_FIELDS, "sign")


def notification_merchant_no(form: Mapping[str, str]) -> str:
    """The ``merchantNo`` a notification claims to be for, to choose whose keys verify it.

    Unverified: use it only to pick the keys. Raises :class:`ResponseError` when it is missing
    or cannot be a merchant number.
    """
    value = form.get("merchantNo") if isinstance(form, Mapping) else None
    if not isinstance(value, str) or not value:
        raise ResponseError("the notification has no merchantNo")
    try:
        return check_merchant_no(value)
    except ConfigurationError:
        raise ResponseError(
            f"the notification's merchantNo {clip(value)} is not a merchant number"
        ) from None


def verify_notification(
    form: Mapping[str, str], *, merchant_no: str, sign_key: str, platform_key: rsa.RSAPublicKey
) -> RefundQueryResult:
    """The refund state that a notification for ``merchant_no`` reports, once verified.

    Raises :class:`ResponseError` for a missing or non-text field or a ``merchantNo`` other
    than ``merchant_no``; :class:`SignatureError` when ``sign`` is missing or does not verify
    against ``platform_key`` (the messages say which, for the logs; the sender needs to learn
    nothing but "not received"); then, reading the verified ``signContent``, the same
    :class:`ResponseError` a query's result would raise (not a JSON object, no ``transNo``,
    an unknown ``orderStatus``, an amount out of range...). Returns a
    :class:`~hsq_refunds.gateway.RefundQueryResult` whose ``raw_result`` is ``signContent``
    exactly as received and whose ``sign`` is the notification's signature.
    """
    fields = _signed_fields(form)
    signature = form.get("sign")
    if not isinstance(signature, str) or not signature:
        raise SignatureError("the notification is not signed")
    if fields["merchantNo"] != merchant_no:
        raise ResponseError(
            f"the notification is for merchantNo {clip(fields['merchantNo'])}, not {merchant_no!r}"
        )
    if not verify(platform_key, request_sign_string(fields, sign_key), signature):
        raise SignatureError("the signature of the notification does not verify")
    content = fields["signContent"]
    signed = SignedResult(
        raw_result=content,
        fields=parse_fields(content, "the notification's signContent"),
        sign=signature,
    )
    return refund_query_result(signed, merchant_no=merchant_no, trans_no=None)


def verify_notification_signature(
    form: Mapping[str, Any], *, sign_key: str, platform_key: rsa.RSAPublicKey
) -> bool:
    """Whether a notification's fields (as received, or as stored from it) carry the platform's
    signature. Never raises. To verify a stored notification again later, keep every field of
    :data:`NOTIFICATION_FIELDS`: its signature covers ``method``, ``version``, ``format``,
    ``merchantNo`` and ``signType`` as well as ``signContent``."""
    try:
        fields = _signed_fields(form)
    except ResponseError:
        return False
    signature = form.get("sign")
    if not isinstance(signature, str):
        return False
    return verify(platform_key, request_sign_string(fields, sign_key), signature)


def _signed_fields(form: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(form, Mapping):
        raise ResponseError("the notification is not a form")
    fields: dict[str, str] = {}
    for name in REQUEST_SIGN_FIELDS:
        value = form.get(name)
        if value is None:
            raise ResponseError(f"the notification has no {name}")
        if not isinstance(value, str):
            raise ResponseError(f"the notification's {name} is not text")
        fields[name] = value
    return fields
