"""The sandbox gateway's behaviour, free of sockets: a request body in, a :class:`Reply` out.

It answers ``POLYMERIZE_REFUND_QUERY`` and ``POLYMERIZE_REFUND`` (dispatched on the form's
``method``) exactly as ``docs/protocol.md`` describes HSQ: the request's signature is checked
with the merchant's public key over the sign string of the *received* values, and every
answer (success or failure) is signed with the platform private key. The same object holds
the sandbox's state (refunds, orders, faults, counts, the notifier) behind one lock, and
answers the JSON control endpoint under ``/sandbox``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
import urllib.parse
from collections import Counter, deque
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
from .applications import (
    ORIG_AMOUNT_MISMATCH,
    REFUND_AMOUNT_EXCEED,
    REPEAT_ORDER,
    ApplicationRefused,
    ApplyTiming,
    Order,
    ReceivedApplication,
    parse_application,
    parse_order_spec,
    read_business,
)
from .credentials import Credentials, CredentialsError
from .faults import APPLY, QUERY, Fault, FaultBook, make_fault, parse_fault_spec
from .notifications import Notifier, NotifySettings
from .refunds import (
    FINAL_STATUSES,
    PROCESSING,
    QUERY_OK,
    SHANGHAI,
    SandboxRefund,
    new_trade_no,
    not_found_result,
    parse_refund_spec,
)

__all__ = ["API_PATH", "CONTROL_PATH", "Reply", "SandboxApp"]

logger = logging.getLogger("hsq_refunds.sandbox")

API_PATH = "/api/acquiring"
CONTROL_PATH = "/sandbox"
METHOD = QUERY
JSON_TYPE = "application/json;charset=UTF-8"
SCENARIO_KEYS = ("refunds", "faults", "orders", "apply", "notify")
#: How many arrival times of queries :meth:`SandboxApp.query_times` keeps.
QUERY_TIMES_KEPT = 100_000

#: Faults that stand for an application that never got through: it is not recorded.
_REFUSING_FAULTS = frozenset(
    {"drop", "http_error", "spring_error", "unsigned_failure", "signed_failure"}
)
#: The fields of an application's answer, from the refund's result.
_APPLY_RESULT_FIELDS = (
    "merchantNo",
    "transNo",
    "tradeNo",
    "orderAmt",
    "orderStatus",
    "finishedDate",
    "respCode",
    "respMsg",
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
    """Keys parsed once, state behind a lock; every public method is thread-safe.

    ``apply`` and ``notify`` are settings in their JSON form (the fields of
    :class:`~hsq_refunds.sandbox.applications.ApplyTiming` and
    :class:`~hsq_refunds.sandbox.notifications.NotifySettings`); like ``latency``, they (and
    those of a scenario) survive :meth:`reset`, while :meth:`configure_apply` and
    :meth:`configure_notify` last until the next reset.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        latency: float = 0.0,
        apply: Mapping[str, Any] | None = None,
        notify: Mapping[str, Any] | None = None,
    ) -> None:
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
        #: When each counted query arrived (``time.time()``), the last QUERY_TIMES_KEPT.
        self._query_times: deque[float] = deque(maxlen=QUERY_TIMES_KEPT)
        self._orders: dict[str, Order] = {}
        #: origTransNo -> the transNos of the refunds that name it.
        self._order_refunds: dict[str, set[str]] = {}
        self._applications: Counter[str] = Counter()
        self._accepted: Counter[str] = Counter()
        self._base_timing = ApplyTiming().updated(apply or {})
        self._timing = self._base_timing
        #: Sends the notifications; the server starts and stops its thread.
        self.notifier = Notifier(
            merchant_no=self.merchant_no,
            sign_key=self._sign_key,
            platform_private=self._platform_private,
            settings=NotifySettings().updated(notify or {}),
            take_fault=self._take_notify_fault,
        )

    # -- state ---------------------------------------------------------------------------

    def add_refunds(self, specs: Iterable[Mapping[str, Any]]) -> int:
        """Add (or replace, by transNo) refunds from JSON specs; all or none on error."""
        now = dt.datetime.now(dt.UTC)
        refunds = [
            parse_refund_spec(spec, default_merchant_no=self.merchant_no, now=now) for spec in specs
        ]
        with self._lock:
            for refund in refunds:
                self._store(refund)
        return len(refunds)

    def _store(self, refund: SandboxRefund) -> None:
        self._refunds[refund.trans_no] = refund
        if refund.orig_trans_no:
            self._order_refunds.setdefault(refund.orig_trans_no, set()).add(refund.trans_no)

    def add_orders(self, specs: Iterable[Mapping[str, Any]]) -> int:
        """Declare (or replace, by origTransNo) original orders; all or none on error."""
        orders = [parse_order_spec(spec) for spec in specs]
        with self._lock:
            for order in orders:
                self._orders[order.orig_trans_no] = order
        return len(orders)

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.add(fault)

    def set_fault(
        self,
        name: str,
        *,
        trans_no: str | None = None,
        times: int | None = None,
        method: str | None = None,
        **params: Any,
    ) -> None:
        self.add_fault(make_fault(name, trans_no=trans_no, times=times, method=method, **params))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def configure_apply(self, changes: Mapping[str, Any]) -> dict[str, float]:
        """Change how long applied refunds stay PROCESSING (for refunds applied from now on)."""
        with self._lock:
            self._timing = self._timing.updated(changes)
            return self._timing.to_json()

    def apply_settings(self) -> dict[str, float]:
        with self._lock:
            return self._timing.to_json()

    def configure_notify(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change how notifications are sent (method, version, schedule, timeouts)."""
        return self.notifier.configure(changes).to_json()

    def notify_settings(self) -> dict[str, Any]:
        return self.notifier.settings.to_json()

    def query_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def query_times(self) -> list[float]:
        """When each query counted by :meth:`query_counts` arrived, as ``time.time()``
        (comparable between processes), oldest first; the last ``QUERY_TIMES_KEPT``."""
        with self._lock:
            return list(self._query_times)

    def application_counts(self) -> dict[str, dict[str, int]]:
        """Per transNo: applications ``received`` (refused ones included) and ``accepted``."""
        with self._lock:
            return {
                trans_no: {"received": received, "accepted": self._accepted[trans_no]}
                for trans_no, received in self._applications.items()
            }

    def notification_log(self) -> dict[str, list[dict[str, Any]]]:
        """Every notification attempt so far, per transNo (see :mod:`.notifications`)."""
        return self.notifier.log()

    def notifications_pending(self) -> int:
        return self.notifier.pending()

    def reset(self) -> None:
        """Forget refunds, orders, faults, counts and notifications; settings back to the base
        (the constructor's and the scenario's; the latency stays)."""
        with self._lock:
            self._refunds.clear()
            self._faults.clear()
            self._counts.clear()
            self._query_times.clear()
            self._orders.clear()
            self._order_refunds.clear()
            self._applications.clear()
            self._accepted.clear()
            self._timing = self._base_timing
        self.notifier.reset()

    def load_scenario(self, path: str | os.PathLike[str]) -> None:
        """Add what a scenario file holds, all or none: ``{"refunds": [...], "faults": [...],
        "orders": [...], "apply": {...}, "notify": {...}}`` (every key optional; ``apply`` and
        ``notify`` become the settings that :meth:`reset` returns to)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"scenario {str(path)!r}: cannot read it ({exc})") from None
        if not isinstance(data, dict) or set(data) - set(SCENARIO_KEYS):
            keys = ", ".join(repr(key) for key in SCENARIO_KEYS)
            raise ValueError(f"scenario {str(path)!r}: expected an object with only {keys}")
        try:
            faults = [parse_fault_spec(spec) for spec in _list(data.get("faults", []), "faults")]
            orders = [parse_order_spec(spec) for spec in _list(data.get("orders", []), "orders")]
            timing = self._base_timing.updated(data.get("apply", {}))
            notify = data.get("notify", {})
            self.notifier.settings.updated(notify)
            self.add_refunds(_list(data.get("refunds", []), "refunds"))
        except ValueError as exc:
            raise ValueError(f"scenario {str(path)!r}: {exc}") from None
        with self._lock:
            for order in orders:
                self._orders[order.orig_trans_no] = order
            for fault in faults:
                self._faults.add(fault)
            self._base_timing = self._timing = timing
        self.notifier.configure(notify, base=True)

    def _take_notify_fault(self, trans_no: str, name: str, use: bool) -> Fault | None:
        with self._lock:
            return self._faults.take_notify(trans_no, name, use=use)

    # -- HTTP ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> Reply:
        """Answer one HTTP request."""
        if path == API_PATH:
            if method != "POST":
                message = f"Request method '{method}' is not supported"
                return Reply(405, spring_error_body(405, path, message), summary="405")
            return self.answer_api(body)
        if path == CONTROL_PATH or path.startswith(CONTROL_PATH + "/"):
            return self.answer_control(method, path, body)
        return Reply(404, spring_error_body(404, path), summary="404")

    def answer_api(self, body: bytes) -> Reply:
        """Answer a form body posted to the gateway URL: dispatched on its ``method`` field."""
        fields = _parse_form(body)
        if fields is not None and fields.get("method") == APPLY:
            return self._answer_application(fields)
        return self._answer_query(fields)

    def answer_query(self, body: bytes) -> Reply:
        """Answer a ``POLYMERIZE_REFUND_QUERY`` form body, faults included."""
        return self._answer_query(_parse_form(body))

    def answer_application(self, body: bytes) -> Reply:
        """Answer a ``POLYMERIZE_REFUND`` form body, faults included."""
        return self._answer_application(_parse_form(body))

    def _answer_query(self, fields: dict[str, str] | None) -> Reply:
        trans_no = _read_trans_no(fields.get("signContent") if fields else None)
        with self._lock:
            if trans_no is not None:
                self._counts[trans_no] += 1
                self._query_times.append(time.time())
            latency, fault = self._faults.take(trans_no, QUERY)
            refund = self._refunds.get(trans_no) if trans_no is not None else None
        reply = self._answer(fields, trans_no, refund, fault)
        delay = self._latency + (latency.params["seconds"] if latency else 0.0)
        if delay:
            reply = dataclasses.replace(reply, delay=delay)
        logger.info("query transNo=%s answered %s", trans_no or "-", reply.summary)
        return reply

    def _answer(
        self,
        fields: dict[str, str] | None,
        trans_no: str | None,
        refund: SandboxRefund | None,
        fault: Fault | None,
    ) -> Reply:
        refusal = self._fault_reply(fault)
        if refusal is not None:
            return refusal
        error = self._request_error(fields, QUERY)
        if error is not None or trans_no is None:
            code, message = error or ("PARAM_ERROR", "业务参数有误: transNo")
            return self._failure_reply(code, message, fault)
        now = dt.datetime.now(dt.UTC)
        result = refund.result_at(now) if refund else not_found_result(self.merchant_no, trans_no)
        return self._success_reply(result, fault, now)

    def _answer_application(self, fields: dict[str, str] | None) -> Reply:
        sign_content = fields.get("signContent") if fields else None
        trans_no = _read_trans_no(sign_content)
        now = dt.datetime.now(dt.UTC)
        # The signature and the fields are checked outside the lock; the order's state inside.
        error = self._request_error(fields, APPLY)
        application = None
        if error is None and sign_content is not None:
            try:
                application = parse_application(read_business(sign_content), now)
            except ApplicationRefused as exc:
                error = (exc.code, exc.message)
        refund = None
        with self._lock:
            if trans_no is not None:
                self._applications[trans_no] += 1
            latency, fault = self._faults.take(trans_no, APPLY)
            if application is not None and (fault is None or fault.name not in _REFUSING_FAULTS):
                try:
                    refund = self._accept(application, now)
                except ApplicationRefused as exc:
                    error = (exc.code, exc.message)
        if refund is not None and application is not None and application.return_url:
            self.notifier.schedule(refund, application.return_url)
        reply = self._answer_applied(error, refund, fault, now)
        delay = self._latency + (latency.params["seconds"] if latency else 0.0)
        if fault is not None and fault.name == "accept_then_delay" and refund is not None:
            delay += fault.params["seconds"]
        if delay:
            reply = dataclasses.replace(reply, delay=delay)
        logger.info("apply transNo=%s answered %s", trans_no or "-", reply.summary)
        return reply

    def _accept(self, application: ReceivedApplication, now: dt.datetime) -> SandboxRefund:
        """Record an application as a refund, or refuse it (called under the lock)."""
        if application.trans_no in self._refunds:
            raise ApplicationRefused(*REPEAT_ORDER)
        order = self._orders.get(application.orig_trans_no)
        if order is None:
            order = Order(application.orig_trans_no, application.orig_amount)
            self._orders[order.orig_trans_no] = order
        elif order.amount != application.orig_amount:
            raise ApplicationRefused(*ORIG_AMOUNT_MISMATCH)
        if application.amount > order.amount - self._refunded(order.orig_trans_no, now):
            raise ApplicationRefused(*REFUND_AMOUNT_EXCEED)
        refund = SandboxRefund(
            trans_no=application.trans_no,
            amount=application.amount,
            orig_trans_no=application.orig_trans_no,
            extend=application.extend,
            merchant_no=self.merchant_no,
            trade_no=new_trade_no(now),
            created_at=now,
            timeline=self._timing.timeline(order.kind),
        )
        self._store(refund)
        self._accepted[refund.trans_no] += 1
        return refund

    def _refunded(self, orig_trans_no: str, now: dt.datetime) -> int:
        """What the order's refunds that are not FAIL take from it, in fen."""
        total = 0
        for trans_no in self._order_refunds.get(orig_trans_no, ()):
            refund = self._refunds.get(trans_no)
            if refund is not None and refund.orig_trans_no == orig_trans_no:
                if refund.status_at(now) != "FAIL":
                    total += refund.amount
        return total

    def _answer_applied(
        self,
        error: tuple[str, str] | None,
        refund: SandboxRefund | None,
        fault: Fault | None,
        now: dt.datetime,
    ) -> Reply:
        refusal = self._fault_reply(fault)
        if refusal is not None:
            return refusal
        if error is not None or refund is None:
            code, message = error or ("PARAM_ERROR", "请求参数格式有误")
            return self._failure_reply(code, message, fault)
        if fault is not None and fault.name == "accept_then_drop":
            return Reply(0, drop=True, summary="accepted, fault accept_then_drop (no answer)")
        full = refund.result_at(now)
        result = {name: full[name] for name in _APPLY_RESULT_FIELDS if name in full}
        return self._success_reply(result, fault, now, "accepted ")

    def _fault_reply(self, fault: Fault | None) -> Reply | None:
        """The answer of a fault that stands in for the gateway's (no answer, an HTTP error, an
        unexplained failure), or ``None``."""
        if fault is None or fault.name not in _REFUSING_FAULTS:
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
        return self._reply(envelope, fault, f"fault {name} errorCode={code}")

    def _request_error(self, fields: dict[str, str] | None, method: str) -> tuple[str, str] | None:
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

    def _failure_reply(self, code: str, message: str, fault: Fault | None) -> Reply:
        envelope = self._failure(code, message, signed=True)
        summary = f"failure errorCode={code}" + (f" fault {fault.name}" if fault else "")
        return self._reply(envelope, fault, summary)

    def _success_reply(
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
        return self._reply(envelope, fault, summary + (f" fault {name}" if name else ""))

    def _reply(self, envelope: dict[str, Any], fault: Fault | None, summary: str) -> Reply:
        """Encode an envelope, applying the faults that damage an otherwise valid answer."""
        name = fault.name if fault else ""
        if name == "bad_signature" and envelope.get("sign"):
            envelope["sign"] = _corrupt_hex(envelope["sign"])
        body = _json_bytes(envelope)
        if name == "malformed_json":
            body = body[: len(body) // 2]
        trickle = None
        if fault is not None and name == "trickle":
            params = fault.params
            trickle = (params["chunk"], float(params["interval"]), params["body_only"])
        return Reply(200, body, summary=summary, trickle=trickle)

    # -- control endpoint ----------------------------------------------------------------

    def answer_control(self, method: str, path: str, body: bytes) -> Reply:
        """The JSON control API that :class:`~hsq_refunds.sandbox.control.SandboxControl` calls."""
        action = path[len(CONTROL_PATH) :].strip("/")
        routes = {
            ("POST", "refunds"): self._control_add_refunds,
            ("POST", "orders"): self._control_add_orders,
            ("POST", "faults"): self._control_set_fault,
            ("DELETE", "faults"): lambda _data: self.clear_faults(),
            ("GET", "counts"): lambda _data: {
                "counts": self.query_counts(),
                "applications": self.application_counts(),
            },
            ("GET", "query-times"): lambda _data: {"times": self.query_times()},
            ("GET", "apply"): lambda _data: {"apply": self.apply_settings()},
            ("POST", "apply"): lambda data: {"apply": self.configure_apply(data or {})},
            ("GET", "notify"): lambda _data: {"notify": self.notify_settings()},
            ("POST", "notify"): lambda data: {"notify": self.configure_notify(data or {})},
            ("GET", "notifications"): lambda _data: {
                "notifications": self.notification_log(),
                "pending": self.notifications_pending(),
            },
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

    def _control_add_orders(self, data: Any) -> dict[str, int]:
        if not isinstance(data, dict) or not isinstance(data.get("orders"), list):
            raise ValueError('expected {"orders": [...]}')
        return {"added": self.add_orders(data["orders"])}

    def _control_set_fault(self, data: Any) -> None:
        self.add_fault(parse_fault_spec(data))


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
