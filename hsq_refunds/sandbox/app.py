"""The sandbox gateway's behaviour, free of sockets: a request body in, a :class:`Reply` out.

It answers ``POLYMERIZE_REFUND_QUERY`` exactly as ``PROTOCOL.md`` describes HSQ: the request's
signature is checked with the merchant's public key over the sign string of the *received*
values, and every answer (success or failure) is signed with the platform private key. The
same object holds the sandbox's state (refunds, faults, query counts) behind one lock, and
answers the JSON control endpoint under ``/sandbox``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping
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
from .faults import Fault, FaultBook, make_fault, parse_fault_spec
from .refunds import SandboxRefund, not_found_result, parse_refund_spec

__all__ = ["API_PATH", "CONTROL_PATH", "Reply", "SandboxApp"]

logger = logging.getLogger("hsq_refunds.sandbox")

API_PATH = "/api/acquiring"
CONTROL_PATH = "/sandbox"
METHOD = "POLYMERIZE_REFUND_QUERY"
JSON_TYPE = "application/json;charset=UTF-8"


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back: a status and body, after ``delay`` seconds, or nothing (``drop``)."""

    status: int
    body: bytes = b""
    delay: float = 0.0
    drop: bool = False
    #: One-line description for the query log (never holds secrets).
    summary: str = ""


def spring_error_body(status: int, path: str, message: str = "") -> bytes:
    """The body Spring Boot answers for an unhandled error: unsigned, not an HSQ envelope."""
    try:
        error = HTTPStatus(status).phrase
    except ValueError:
        error = "Error"
    now = dt.datetime.now(dt.UTC)
    return _json_bytes(
        {
            "timestamp": now.isoformat(timespec="milliseconds"),
            "status": status,
            "error": error,
            "message": message,
            "path": path,
        }
    )


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class SandboxApp:
    """Keys parsed once, state behind a lock; every public method is thread-safe."""

    def __init__(self, credentials: Credentials, *, latency: float = 0.0) -> None:
        if not credentials.platform_private_key:
            raise CredentialsError(
                f"the credentials in {credentials.directory!r} have no platform private key; "
                "the sandbox can only serve credentials made by `python -m hsq_refunds.sandbox "
                "init`"
            )
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self.merchant_no = credentials.merchant_no
        self._sign_key = credentials.sign_key
        self._latency = float(latency)
        self._merchant_public = load_private_key(
            credentials.private_key, credentials.private_key_password
        ).public_key()
        self._platform_private = _load_platform_private(credentials.platform_private_key)
        self._lock = threading.Lock()
        self._refunds: dict[str, SandboxRefund] = {}
        self._faults = FaultBook()
        self._counts: Counter[str] = Counter()

    # -- state ---------------------------------------------------------------------------

    def add_refunds(self, specs: Iterable[Mapping[str, Any]]) -> int:
        """Add (or replace, by transNo) refunds from JSON specs; all or none on error."""
        now = dt.datetime.now(dt.UTC)
        refunds = [
            parse_refund_spec(spec, default_merchant_no=self.merchant_no, now=now) for spec in specs
        ]
        with self._lock:
            for refund in refunds:
                self._refunds[refund.trans_no] = refund
        return len(refunds)

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.add(fault)

    def set_fault(
        self, name: str, *, trans_no: str | None = None, times: int | None = None, **params: Any
    ) -> None:
        self.add_fault(make_fault(name, trans_no=trans_no, times=times, **params))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def query_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Forget refunds, faults and counts (the base latency stays)."""
        with self._lock:
            self._refunds.clear()
            self._faults.clear()
            self._counts.clear()

    def load_scenario(self, path: str | os.PathLike[str]) -> None:
        """Add the refunds and faults of a scenario file ``{"refunds": [...], "faults": [...]}``."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"scenario {str(path)!r}: cannot read it ({exc})") from None
        if not isinstance(data, dict) or set(data) - {"refunds", "faults"}:
            raise ValueError(
                f"scenario {str(path)!r}: expected an object with only 'refunds' and 'faults'"
            )
        try:
            faults = [parse_fault_spec(spec) for spec in _list(data.get("faults", []), "faults")]
            self.add_refunds(_list(data.get("refunds", []), "refunds"))
        except ValueError as exc:
            raise ValueError(f"scenario {str(path)!r}: {exc}") from None
        for fault in faults:
            self.add_fault(fault)

    # -- HTTP ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> Reply:
        """Answer one HTTP request."""
        if path == API_PATH:
            if method != "POST":
                message = f"Request method '{method}' is not supported"
                return Reply(405, spring_error_body(405, path, message), summary="405")
            return self.answer_query(body)
        if path == CONTROL_PATH or path.startswith(CONTROL_PATH + "/"):
            return self.answer_control(method, path, body)
        return Reply(404, spring_error_body(404, path), summary="404")

    def answer_query(self, body: bytes) -> Reply:
        """Answer a ``POLYMERIZE_REFUND_QUERY`` form body, faults included."""
        fields = _parse_form(body)
        trans_no = _read_trans_no(fields.get("signContent") if fields else None)
        with self._lock:
            if trans_no is not None:
                self._counts[trans_no] += 1
            latency, fault = self._faults.take(trans_no)
            refund = self._refunds.get(trans_no) if trans_no is not None else None
        delay = self._latency + (latency.params["seconds"] if latency else 0.0)
        reply = self._answer(fields, trans_no, refund, fault)
        if delay:
            reply = Reply(reply.status, reply.body, delay, reply.drop, reply.summary)
        logger.info("query transNo=%s answered %s", trans_no or "-", reply.summary)
        return reply

    def _answer(
        self,
        fields: dict[str, str] | None,
        trans_no: str | None,
        refund: SandboxRefund | None,
        fault: Fault | None,
    ) -> Reply:
        name = fault.name if fault else ""
        params = fault.params if fault else {}
        if name == "drop":
            return Reply(0, drop=True, summary="fault drop (no answer)")
        if name in ("http_error", "spring_error"):
            status = params.get("status", 500)
            return Reply(
                status, spring_error_body(status, API_PATH), summary=f"fault {name} {status}"
            )
        if name in ("unsigned_failure", "signed_failure"):
            code = params.get("error_code", "SYSTEM_ERROR")
            message = params.get("error_msg", "系统繁忙,请稍后再试")
            envelope = self._failure(code, message, signed=name == "signed_failure")
            if params.get("null_sign"):
                envelope["sign"] = None
            return self._reply(envelope, name, f"fault {name} errorCode={code}")

        error = self._request_error(fields)
        if error is not None or trans_no is None:
            code, message = error or ("PARAM_ERROR", "业务参数有误: transNo")
            envelope = self._failure(code, message, signed=True)
            summary = f"failure errorCode={code}" + (f" fault {name}" if name else "")
            return self._reply(envelope, name, summary)

        now = dt.datetime.now(dt.UTC)
        result = refund.result_at(now) if refund else not_found_result(self.merchant_no, trans_no)
        if name == "wrong_trans_no":
            result["transNo"] = params.get("answer_trans_no", f"{trans_no}X")
        elif name == "wrong_merchant_no":
            result["merchantNo"] = params.get("answer_merchant_no", self.merchant_no[::-1] + "9")
        result_text = json.dumps(result, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        envelope = {
            "success": True,
            "result": result_text,
            "errorCode": None,
            "errorMsg": None,
            "sign": sign(self._platform_private, success_sign_string(result_text, self._sign_key)),
        }
        if name == "double_encoding_missing":
            envelope["result"] = result
        summary = f"{result.get('orderStatus', '-')} respCode={result['respCode']}"
        return self._reply(envelope, name, summary + (f" fault {name}" if name else ""))

    def _request_error(self, fields: dict[str, str] | None) -> tuple[str, str] | None:
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
        if fields["method"] != METHOD:
            return "METHOD_NOT_SUPPORTED", "不支持的接口方法"
        if fields["version"] != "1.0":
            return "PARAM_ERROR", "不支持的接口版本"
        if fields["format"].upper() != "JSON":
            return "PARAM_ERROR", "不支持的请求格式"
        return None

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

    def _reply(self, envelope: dict[str, Any], fault_name: str, summary: str) -> Reply:
        """Encode an envelope, applying the faults that damage an otherwise valid answer."""
        if fault_name == "bad_signature" and envelope.get("sign"):
            envelope["sign"] = _corrupt_hex(envelope["sign"])
        body = _json_bytes(envelope)
        if fault_name == "malformed_json":
            body = body[: len(body) // 2]
        return Reply(200, body, summary=summary)

    # -- control endpoint ----------------------------------------------------------------

    def answer_control(self, method: str, path: str, body: bytes) -> Reply:
        """The JSON control API that :class:`~hsq_refunds.sandbox.control.SandboxControl` calls."""
        action = path[len(CONTROL_PATH) :].strip("/")
        routes = {
            ("POST", "refunds"): self._control_add_refunds,
            ("POST", "faults"): self._control_set_fault,
            ("DELETE", "faults"): lambda _data: self.clear_faults(),
            ("GET", "counts"): lambda _data: {"counts": self.query_counts()},
            ("POST", "reset"): lambda _data: self.reset(),
        }
        handler = routes.get((method, action))
        if handler is None:
            known = any(action == route_action for _method, route_action in routes)
            status = 405 if known else 404
            return Reply(status, _json_bytes({"error": f"no {method} {path}"}), summary="control")
        try:
            data = json.loads(body) if body.strip() else None
            answer = handler(data)
        except (ValueError, UnicodeDecodeError) as exc:
            return Reply(400, _json_bytes({"error": str(exc)}), summary="control error")
        return Reply(200, _json_bytes(answer if answer is not None else {"ok": True}))

    def _control_add_refunds(self, data: Any) -> dict[str, int]:
        if not isinstance(data, dict) or not isinstance(data.get("refunds"), list):
            raise ValueError('expected {"refunds": [...]}')
        return {"added": self.add_refunds(data["refunds"])}

    def _control_set_fault(self, data: Any) -> None:
        self.add_fault(parse_fault_spec(data))


def _load_platform_private(path: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise CredentialsError(f"cannot load the platform private key {path!r}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialsError(f"the platform private key {path!r} is not an RSA key")
    return key


def _parse_form(body: bytes) -> dict[str, str] | None:
    """The form fields (first value of each), or ``None`` where the body is not a UTF-8 form."""
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields


def _read_trans_no(sign_content: str | None) -> str | None:
    if not sign_content:
        return None
    try:
        business = json.loads(sign_content)
    except ValueError:
        return None
    trans_no = business.get("transNo") if isinstance(business, dict) else None
    return trans_no if isinstance(trans_no, str) and trans_no else None


def _corrupt_hex(signature: str) -> str:
    """The same hex string with its last digit changed: well-formed, but it will not verify."""
    last = signature[-1]
    return signature[:-1] + ("0" if last != "0" else "1")


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list")
    return value
