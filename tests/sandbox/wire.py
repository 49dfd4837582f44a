"""Build HSQ requests and check HSQ answers by hand, with the protocol primitives only."""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from hsq_refunds.gateway import keys, signing
from hsq_refunds.sandbox import Credentials

METHOD = "POLYMERIZE_REFUND_QUERY"


@functools.cache
def merchant_key(path: str, password: str) -> rsa.RSAPrivateKey:
    return keys.load_private_key(path, password)


@functools.cache
def platform_key(path: str) -> rsa.RSAPublicKey:
    return keys.load_platform_key(path)


def signed_fields(
    credentials: Credentials,
    trans_no: str,
    *,
    sign_key: str | None = None,
    private_key: rsa.RSAPrivateKey | None = None,
    **overrides: str,
) -> dict[str, str]:
    """A query form, signed over its own (possibly overridden) values."""
    fields = {
        "method": METHOD,
        "version": "1.0",
        "format": "JSON",
        "merchantNo": credentials.merchant_no,
        "signType": "RSA2",
        "signContent": signing.encode_sign_content({"transNo": trans_no}),
    }
    fields.update(overrides)
    key = private_key or merchant_key(credentials.private_key, credentials.private_key_password)
    text = signing.request_sign_string(fields, sign_key or credentials.sign_key)
    fields["sign"] = signing.sign(key, text)
    return fields


def query(
    url: str,
    credentials: Credentials,
    trans_no: str,
    *,
    session: requests.Session | None = None,
    timeout: float = 10,
    **kwargs: Any,
) -> requests.Response:
    post = session.post if session is not None else requests.post
    return post(url, data=signed_fields(credentials, trans_no, **kwargs), timeout=timeout)


def verified_result(response: requests.Response, credentials: Credentials) -> dict[str, Any]:
    """The business result of a success answer whose signature verifies (else AssertionError)."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    body = response.json()
    assert body["success"] is True, body
    assert body["errorCode"] is None and body["errorMsg"] is None
    assert isinstance(body["result"], str), "result must be double-encoded"
    text = signing.success_sign_string(body["result"], credentials.sign_key)
    assert signing.verify(platform_key(credentials.platform_cert), text, body["sign"])
    return json.loads(body["result"])


def failure_verifies(body: dict[str, Any], credentials: Credentials) -> bool:
    """Whether a failure answer's sign verifies under any failure layout."""
    key = platform_key(credentials.platform_cert)
    return any(
        signing.verify(key, text, body.get("sign") or "")
        for text in signing.failure_sign_strings(
            body["errorCode"], body["errorMsg"], credentials.sign_key
        )
    )


# --------------------------------------------------------------------------- POLYMERIZE_REFUND

APPLY_METHOD = "POLYMERIZE_REFUND"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def request_date(offset_seconds: float = 0) -> str:
    """``yyyyMMddHHmmss`` in Beijing time, ``offset_seconds`` from now."""
    moment = dt.datetime.now(SHANGHAI) + dt.timedelta(seconds=offset_seconds)
    return moment.strftime("%Y%m%d%H%M%S")


def application(
    trans_no: str,
    *,
    orig_trans_no: str = "P1",
    orig_amount: Any = 1000,
    amount: Any = 100,
    refund_type: Any = 2,
    reason: Any = "退款",
    date: Any = None,
    return_url: Any = None,
    extend: Any = None,
) -> dict[str, Any]:
    """An application's business fields, in the order docs/protocol.md's known answer has them."""
    business: dict[str, Any] = {
        "transNo": trans_no,
        "refundType": refund_type,
        "origTransNo": orig_trans_no,
        "origOrderAmt": orig_amount,
        "orderAmt": amount,
        "requestDate": request_date() if date is None else date,
        "refundReason": reason,
    }
    if return_url is not None:
        business["returnUrl"] = return_url
    if extend is not None:
        business["extend"] = extend
    return business


def apply_fields(
    credentials: Credentials,
    business: dict[str, Any] | str,
    *,
    sign_key: str | None = None,
    private_key: rsa.RSAPrivateKey | None = None,
    **overrides: str,
) -> dict[str, str]:
    """An application form, signed over its own (possibly overridden) values."""
    content = business if isinstance(business, str) else signing.encode_sign_content(business)
    return signed_fields(
        credentials,
        "",
        sign_key=sign_key,
        private_key=private_key,
        **{"method": APPLY_METHOD, "signContent": content, **overrides},
    )


def apply(
    url: str,
    credentials: Credentials,
    business: dict[str, Any] | str,
    *,
    session: requests.Session | None = None,
    timeout: float = 10,
    **kwargs: Any,
) -> requests.Response:
    post = session.post if session is not None else requests.post
    return post(url, data=apply_fields(credentials, business, **kwargs), timeout=timeout)


def verified_failure(response: requests.Response, credentials: Credentials) -> dict[str, Any]:
    """The body of a ``success=false`` answer whose signature verifies (else AssertionError)."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is False and body["result"] is None, body
    assert failure_verifies(body, credentials), body
    return body
