"""The sandbox gateway's behaviour, free of sockets: a request body in, a :class:`Reply` out.

It answers ``POLYMERIZE_REFUND_QUERY`` and ``POLYMERIZE_REFUND`` (dispatched on the form's
``method``) exactly as ``docs/protocol.md`` describes HSQ, worded and signed by
:class:`~hsq_refunds.sandbox.answers.Answers`. The same object holds the sandbox's state
(refunds, orders, faults, counts, the notifier) behind one lock, and answers the JSON control
endpoint under ``/sandbox``.
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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .answers import API_PATH, REFUSING_FAULTS, Answers, Reply, json_bytes, spring_error_body
from .applications import (
    ORIG_AMOUNT_MISMATCH,
    REFUND_AMOUNT_EXCEED,
    REPEAT_ORDER,
    ApplicationRefused,
    ApplyTiming,
    Order,
    ReceivedApplication,
    applied_result,
    parse_application,
    parse_order_spec,
)
from .control import SandboxCommands
from .credentials import Credentials, CredentialsError
from .faults import APPLY, QUERY, Fault, FaultBook, parse_fault_spec
from .notifications import Notifier, NotifySettings
from .refunds import SandboxRefund, bare_result, new_trade_no, parse_refund_spec

__all__ = ["CONTROL_PATH", "SandboxApp"]

logger = logging.getLogger("hsq_refunds.sandbox")

CONTROL_PATH = "/sandbox"
SCENARIO_KEYS = ("refunds", "faults", "orders", "apply", "notify")
#: How many arrival times of queries :meth:`SandboxApp.query_times` keeps.
QUERY_TIMES_KEPT = 100_000


class SandboxApp(SandboxCommands):
    """Keys parsed once, state behind a lock; every public method is thread-safe.
    :class:`~hsq_refunds.sandbox.server.SandboxServer` serves it over HTTP.

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
        self._latency = float(latency)
        self._answers = Answers(credentials)
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
            self._answers, NotifySettings().updated(notify or {}), self._take_notify_fault
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
        """Set a fault (see :mod:`.faults`), replacing one of the same name, target and method."""
        with self._lock:
            self._faults.add(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def configure_apply(self, /, **settings: float) -> dict[str, float]:
        """Set ``balance_seconds``, ``card_seconds``, ``refuse_seconds`` (until :meth:`reset`)
        for refunds applied from now on; returns the settings in force."""
        with self._lock:
            self._timing = self._timing.updated(settings)
            return self._timing.to_json()

    def configure_notify(self, /, **settings: Any) -> dict[str, Any]:
        """Set ``method``, ``version``, ``schedule``, ``connect_timeout``, ``read_timeout`` of
        the notifications (until :meth:`reset`); returns the settings in force."""
        return self.notifier.configure(settings).to_json()

    def query_counts(self) -> dict[str, int]:
        """Queries received per transNo (signature failures and faults included)."""
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
        """Notifications still to be delivered or retried."""
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

    def answer_control(self, method: str, path: str, body: bytes) -> Reply:
        """The JSON control API that :class:`~hsq_refunds.sandbox.control.SandboxControl` calls."""
        action = path[len(CONTROL_PATH) :].strip("/")
        routes: dict[tuple[str, str], Callable[[Any], Any]] = {
            ("POST", "refunds"): lambda data: {"added": self.add_refunds(_items(data, "refunds"))},
            ("POST", "orders"): lambda data: {"added": self.add_orders(_items(data, "orders"))},
            ("POST", "faults"): lambda data: self.add_fault(parse_fault_spec(data)),
            ("DELETE", "faults"): lambda _data: self.clear_faults(),
            ("GET", "counts"): lambda _data: {
                "counts": self.query_counts(),
                "applications": self.application_counts(),
            },
            ("GET", "query-times"): lambda _data: {"times": self.query_times()},
            ("GET", "apply"): lambda _data: {"apply": self.configure_apply()},
            ("POST", "apply"): lambda data: {
                "apply": self.configure_apply(**_settings(data, "apply"))
            },
            ("GET", "notify"): lambda _data: {"notify": self.configure_notify()},
            ("POST", "notify"): lambda data: {
                "notify": self.configure_notify(**_settings(data, "notify"))
            },
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
            return Reply(status, json_bytes({"error": f"no {method} {path}"}), summary="control")
        try:
            data = json.loads(body) if body.strip() else None
            answer = handler(data)
        except (ValueError, UnicodeDecodeError) as exc:
            return Reply(400, json_bytes({"error": str(exc)}), summary="control error")
        return Reply(200, json_bytes(answer if answer is not None else {"ok": True}))

    def _answer_query(self, fields: dict[str, str] | None) -> Reply:
        trans_no = _read_trans_no(fields.get("signContent") if fields else None)
        with self._lock:
            if trans_no is not None:
                self._counts[trans_no] += 1
                self._query_times.append(time.time())
            latency, fault = self._faults.take(trans_no, QUERY)
            refund = self._refunds.get(trans_no) if trans_no is not None else None
        reply = self._answers.refusal(fault)
        if reply is None:
            error = self._answers.request_error(fields, QUERY)
            if error is not None or trans_no is None:
                code, message = error or ("PARAM_ERROR", "业务参数有误: transNo")
                reply = self._answers.failure(code, message, fault)
            else:
                now = dt.datetime.now(dt.UTC)
                if refund is None:
                    result = bare_result(self.merchant_no, trans_no)
                else:
                    result = refund.result_at(now)
                reply = self._answers.success(result, fault, now)
        reply = self._delayed(reply, latency)
        logger.info("query transNo=%s answered %s", trans_no or "-", reply.summary)
        return reply

    def _answer_application(self, fields: dict[str, str] | None) -> Reply:
        sign_content = fields.get("signContent") if fields else None
        trans_no = _read_trans_no(sign_content)
        now = dt.datetime.now(dt.UTC)
        # The signature and the fields are checked outside the lock; the order's state inside.
        error = self._answers.request_error(fields, APPLY)
        application = None
        if error is None and sign_content is not None:
            try:
                application = parse_application(sign_content, now)
            except ApplicationRefused as exc:
                error = (exc.code, exc.message)
        refund = None
        with self._lock:
            if trans_no is not None:
                self._applications[trans_no] += 1
            latency, fault = self._faults.take(trans_no, APPLY)
            if application is not None and (fault is None or fault.name not in REFUSING_FAULTS):
                try:
                    refund = self._accept(application, now)
                except ApplicationRefused as exc:
                    error = (exc.code, exc.message)
        if refund is not None and application is not None and application.return_url:
            self.notifier.schedule(refund, application.return_url)
        reply = self._answers.refusal(fault)
        if reply is None:
            if error is not None or refund is None:
                code, message = error or ("PARAM_ERROR", "请求参数格式有误")
                reply = self._answers.failure(code, message, fault)
            elif fault is not None and fault.name == "accept_then_drop":
                reply = Reply(0, drop=True, summary="accepted, fault accept_then_drop (no answer)")
            else:
                reply = self._answers.success(applied_result(refund, now), fault, now, "accepted ")
        extra = 0.0
        if fault is not None and fault.name == "accept_then_delay" and refund is not None:
            extra = fault.params["seconds"]
        reply = self._delayed(reply, latency, extra)
        logger.info("apply transNo=%s answered %s", trans_no or "-", reply.summary)
        return reply

    def _accept(self, application: ReceivedApplication, now: dt.datetime) -> SandboxRefund:
        """Record an application as a refund, or refuse it (called under the lock)."""
        if application.trans_no in self._refunds:
            raise ApplicationRefused(*REPEAT_ORDER)
        order = self._orders.setdefault(
            application.orig_trans_no, Order(application.orig_trans_no, application.orig_amount)
        )
        if order.amount != application.orig_amount:
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

    def _delayed(self, reply: Reply, latency: Fault | None, extra: float = 0.0) -> Reply:
        """``reply``, sent after the sandbox's latency, a latency fault's and ``extra`` seconds."""
        delay = self._latency + (latency.params["seconds"] if latency else 0.0) + extra
        return dataclasses.replace(reply, delay=delay) if delay else reply


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


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list")
    return value


def _items(data: Any, key: str) -> list[Any]:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ValueError(f'expected {{"{key}": [...]}}')
    return data[key]


def _settings(data: Any, what: str) -> dict[str, Any]:
    if not data:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{what} settings must be a JSON object")
    return data
