"""The sign strings and the SHA256withRSA signatures of HSQ's acquiring API.

See ``docs/protocol.md``: requests are signed over a fixed-order ``k=v&...&key=<signKey>`` string
with the merchant's private key; responses are verified against the platform key over
``result=...&success=true&key=...`` or ``errorCode=...&errorMsg=...&success=false&key=...``.
Signatures travel as lowercase hex.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "REQUEST_SIGN_FIELDS",
    "encode_sign_content",
    "failure_sign_strings",
    "request_sign_string",
    "sign",
    "success_sign_string",
    "verify",
]

#: The request fields in the order the sign string lists them (not alphabetical).
REQUEST_SIGN_FIELDS = ("method", "version", "format", "merchantNo", "signType", "signContent")


def encode_sign_content(business: Mapping[str, Any]) -> str:
    """Serialize the business parameters once, compactly; sign and send this same string."""
    return json.dumps(business, ensure_ascii=False, separators=(",", ":"))


def request_sign_string(fields: Mapping[str, str], sign_key: str) -> str:
    """``method=..&version=..&format=..&merchantNo=..&signType=..&signContent=..&key=<signKey>``.

    ``fields`` holds the raw (not form-encoded) values; every one of
    :data:`REQUEST_SIGN_FIELDS` must be present. Also used to verify notifications, whose
    ``method`` and ``version`` are their own: pass the values as received.
    """
    parts = [f"{name}={fields[name]}" for name in REQUEST_SIGN_FIELDS]
    parts.append(f"key={sign_key}")
    return "&".join(parts)


def success_sign_string(result: str, sign_key: str) -> str:
    """The string a success response's ``sign`` covers: ``result`` exactly as received."""
    return f"result={result}&success=true&key={sign_key}"


def failure_sign_strings(error_code: Any, error_msg: Any, sign_key: str) -> list[str]:
    """Every layout a failure response's ``sign`` may cover.

    Whether and how failures are signed is not documented. A missing value (JSON ``null``)
    is tried both as the empty string and as the text ``null`` (what a Java client's string
    concatenation produces), so that any of those verifies and nothing else does. When
    ``errorMsg`` is empty or missing, the layout without its pair is tried as well
    (``errorCode=<c>&success=false&key=<k>``: one public client leaves empty values out of the
    sign string). The layouts with both pairs come first, in a fixed order.
    """

    def variants(value: Any) -> Iterable[str]:
        if value is None:
            return ("", "null")
        return (value if isinstance(value, str) else json.dumps(value),)

    layouts = [
        f"errorCode={code}&errorMsg={msg}&success=false&key={sign_key}"
        for code in variants(error_code)
        for msg in variants(error_msg)
    ]
    if error_msg is None or error_msg == "":
        layouts.extend(
            f"errorCode={code}&success=false&key={sign_key}" for code in variants(error_code)
        )
    return layouts


def sign(private_key: rsa.RSAPrivateKey, message: str) -> str:
    """SHA256withRSA (PKCS#1 v1.5) over the UTF-8 bytes of ``message``, as lowercase hex."""
    signature = private_key.sign(message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return signature.hex()


def verify(public_key: rsa.RSAPublicKey, message: str, signature_hex: str) -> bool:
    """Whether ``signature_hex`` (hex, either case) is a valid signature of ``message``."""
    if not isinstance(signature_hex, str) or not signature_hex:
        return False
    try:
        signature = binascii.unhexlify(signature_hex)
        # A lone surrogate (a JSON "\ud800" escape) has no UTF-8 bytes the gateway could
        # have signed: such a message cannot verify.
        data = message.encode("utf-8")
    except (binascii.Error, ValueError):
        return False
    if len(signature) != (public_key.key_size + 7) // 8:
        return False
    try:
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True
