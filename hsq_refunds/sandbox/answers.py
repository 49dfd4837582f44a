"""The sandbox's answers as HSQ words them: requests verified, envelopes signed, faults applied.

A request's signature is checked with the merchant's public key over the sign string of the
*received* values; every answer (success or failure) is signed with the platform private key,
unless a fault says otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..gateway.keys import load_private_key
from ..gateway.signing import (
    REQUEST_SIGN_FIELDS,
    failure_sign_strings,
    request_sign_string,
    sign,
    success_sign_string,
    verify,
)
from .credentials import Credentials, CredentialsError
from .faults import Fault
from .refunds import FINAL_STATUSES, PROCESSING, QUERY_OK, SHANGHAI

__all__ = [
    "API_PATH",
    "JSON_TYPE",
    "REFUSING_FAULTS",
    "Answers",
    "Reply",
    "corrupt_hex",
    "json_bytes",
    "spring_error_body",
]

API_PATH = "/api/acquiring"
JSON_TYPE = "application/json;charset=UTF-8"
#: Faults that stand in for the gateway's answer: an application they hit is not recorded.
REFUSING_FAULTS = frozenset(
    {"drop", "http_error", "spring_error", "unsigned_failure", "signed_failure"}
)
#: The JSON escape of a lone surrogate, as ``lone_surrogate`` writes it into ``extend``.
_LONE_SURROGATE = "\ud83d"


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back: a status and body, after ``delay`` seconds, or nothing (``drop``)."""

    status: int
    body: bytes = b""
    delay: float = 0.0
    drop: bool = False
    #: One-line description for the query log (never holds secrets).
    summary: str = ""
    #: ``(chunk bytes, interval seconds, body only)``: write the answer a few bytes at a time.
    trickle: tuple[int, float, bool] | None = None


def spring_error_body(status: int, path: str, message: str = "") -> bytes:
    """The body Spring Boot answers for an unhandled error: unsigned, not an HSQ envelope."""
    try:
        error = HTTPStatus(status).phrase
    except ValueError:
        error = "Error"
    now = dt.datetime.now(dt.UTC)
    return json_bytes(
        {
            "timestamp": now.isoformat(timespec="milliseconds"),
            "status": status,
            "error": error,
            "message": message,
            "path": path,
        }
    )


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def corrupt_hex(signature: str) -> str:
    """The same hex string with its last digit changed: well-formed, but it will not verify."""
    last = signature[-1]
    return signature[:-1] + ("0" if last != "0" else "1")


class Answers:
    """One merchant's keys at work on the gateway's side; immutable, so thread-safe."""

    def __init__(self, credentials: Credentials) -> None:
        self.merchant_no = credentials.merchant_no
        self._sign_key = credentials.sign_key
        self._merchant_public = load_private_key(
            credentials.private_key, credentials.private_key_password
        ).public_key()
        self._platform_private = _load_platform_private(credentials.platform_private_key)

    def sign_form(self, fields: dict[str, str]) -> str:
        """The platform's signature of a form the sandbox sends (a notification)."""
        return sign(self._platform_private, request_sign_string(fields, self._sign_key))

    def request_error(self, fields: dict[str, str] | None, method: str) -> tuple[str, str] | None:
        """The gateway's error code and message for a bad request, or ``None``."""
        if fields is None:
            return "PARAM_ERROR", "请求参数格式有误"
        missing = [name for name in (*REQUEST_SIGN_FIELDS, "sign") if not fields.get(name)]
        if missing:
            return "PARAM_ERROR", f"缺少必要参数: {', '.join(missing)}"
        if fields["merchantNo"] != self.merchant_no:
            return "MERCHANT_NOT_EXIST", "商户不存在"
        if fields["signType"] != "RSA2":
            return "PARAM_ERROR", "不支持的签名类型"
        signed_text = request_sign_string(fields, self._sign_key)
        if not verify(self._merchant_public, signed_text, fields["sign"]):
            return "SIGN_ERROR", "验签失败"
        if fields["method"] != method:
            return "METHOD_NOT_SUPPORTED", "不支持的接口方法"
        if fields["version"] != "1.0":
            return "PARAM_ERROR", "不支持的接口版本"
        if fields["format"].upper() != "JSON":
            return "PARAM_ERROR", "不支持的请求格式"
        return None

    def refusal(self, fault: Fault | None) -> Reply | None:
        """The answer of a fault that stands in for the gateway's (no answer, an HTTP error, an
        unexplained failure), or ``None``."""
        if fault is None or fault.name not in REFUSING_FAULTS:
            return None
        name, params = fault.name, fault.params
        if name == "drop":
            return Reply(0, drop=True, summary="fault drop (no answer)")
        if name in ("http_error", "spring_error"):
            status = params.get("status", 500)
            body = spring_error_body(status, API_PATH)
            return Reply(status, body, summary=f"fault {name} {status}")
        code = params.get("error_code", "SYSTEM_ERROR")
        message = params.get("error_msg", "系统繁忙,请稍后再试")
        envelope = self._failure(code, message, signed=name == "signed_failure")
        if params.get("null_sign"):
            envelope["sign"] = None
        return self._encode(envelope, fault, f"fault {name} errorCode={code}")

    def failure(self, code: str, message: str, fault: Fault | None) -> Reply:
        """A signed failure answer, damaged as the fault says."""
        envelope = self._failure(code, message, signed=True)
        summary = f"failure errorCode={code}" + (f" fault {fault.name}" if fault else "")
        return self._encode(envelope, fault, summary)

    def success(
        self, result: dict[str, Any], fault: Fault | None, now: dt.datetime, prefix: str = ""
    ) -> Reply:
        """A signed success answer of ``result``, altered as the fault says."""
        name = fault.name if fault else ""
        params = fault.params if fault else {}
        if name == "wrong_trans_no":
            result["transNo"] = params.get("answer_trans_no", f"{result['transNo']}X")
        elif name == "wrong_merchant_no":
            result["merchantNo"] = params.get("answer_merchant_no", self.merchant_no[::-1] + "9")
        elif name == "huge_amount":
            result["orderAmt"] = params["amount"]
        elif name == "status" and "orderStatus" in result:
            _override_status(result, params["status"], now)
        elif name == "lone_surrogate":
            result["extend"] = _LONE_SURROGATE
        if name == "verbatim_result":
            result_text = params["result"]
        else:
            result_text = json.dumps(
                result, ensure_ascii=False, sort_keys=True, separators=(",", ":")
            )
            if name == "lone_surrogate":
                result_text = result_text.replace(_LONE_SURROGATE, "\\ud83d")
        envelope = {
            "success": True,
            "result": result_text,
            "errorCode": None,
            "errorMsg": None,
            "sign": sign(self._platform_private, success_sign_string(result_text, self._sign_key)),
        }
        if name == "double_encoding_missing":
            envelope["result"] = result
        summary = f"{prefix}{result.get('orderStatus', '-')} respCode={result.get('respCode')}"
        return self._encode(envelope, fault, summary + (f" fault {name}" if name else ""))

    def _failure(self, code: str, message: str, *, signed: bool) -> dict[str, Any]:
        envelope: dict[str, Any] = {
            "success": False,
            "result": None,
            "errorCode": code,
            "errorMsg": message,
        }
        if signed:
            text = failure_sign_strings(code, message, self._sign_key)[0]
            envelope["sign"] = sign(self._platform_private, text)
        return envelope

    def _encode(self, envelope: dict[str, Any], fault: Fault | None, summary: str) -> Reply:
        """Encode an envelope, applying the faults that damage an otherwise valid answer."""
        name = fault.name if fault else ""
        if name == "bad_signature" and envelope.get("sign"):
            envelope["sign"] = corrupt_hex(envelope["sign"])
        body = json_bytes(envelope)
        if name == "malformed_json":
            body = body[: len(body) // 2]
        trickle = None
        if fault is not None and name == "trickle":
            params = fault.params
            trickle = (params["chunk"], float(params["interval"]), params["body_only"])
        return Reply(200, body, summary=summary, trickle=trickle)


def _override_status(result: dict[str, Any], status: str, now: dt.datetime) -> None:
    """Make ``result`` say ``status``, worded as the gateway words it."""
    result["orderStatus"] = status
    result["respCode"], result["respMsg"] = PROCESSING if status == "PROCESSING" else QUERY_OK
    if status not in FINAL_STATUSES:
        result["finishedDate"] = ""
    elif not result.get("finishedDate"):
        result["finishedDate"] = now.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")


def _load_platform_private(path: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise CredentialsError(f"cannot load the platform private key {path!r}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialsError(f"the platform private key {path!r} is not an RSA key")
    return key
