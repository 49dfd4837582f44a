"""Applying for refunds (``POLYMERIZE_REFUND``): original orders, the checks, the timelines.

An application names an original order (``origTransNo``). Orders are declared in a scenario
(``"orders": [...]``), over the control endpoint, or with ``add_order``; an order never declared
is taken at the ``origOrderAmt`` first sent for it, paid from balance. Its *kind* decides the
timeline of every refund applied against it (the seconds are :class:`ApplyTiming`'s)::

    {"origTransNo": "P1", "amount": 1000, "kind": "balance"}   # PROCESSING ~2 s, then SUCCESS
    {"origTransNo": "P2", "amount": 1000, "kind": "card"}      # PROCESSING 1 h, then SUCCESS
    {"origTransNo": "P3", "amount": 1000, "kind": "refuse"}    # PROCESSING ~1 s, then FAIL

The checks of one application (:func:`parse_application`) raise :class:`ApplicationRefused`
with the gateway's error code and its (Chinese) message, which the sandbox answers signed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..gateway.errors import HsqError
from ..gateway.validation import (
    MAX_AMOUNT_FEN,
    TRANS_NO_MAX_LENGTH,
    check_base_url,
    has_forbidden_characters,
)
from .refunds import SHANGHAI, SandboxRefund, Step, is_seconds

__all__ = [
    "KINDS",
    "ApplicationRefused",
    "ApplyTiming",
    "Order",
    "ReceivedApplication",
    "applied_result",
    "parse_application",
    "parse_order_spec",
]

KINDS = ("balance", "card", "refuse")
#: How far ``requestDate`` may be from the sandbox's clock, as one public client notes of HSQ.
REQUEST_DATE_WINDOW = dt.timedelta(minutes=10)
REASON_MAX_LENGTH = 256
EXTEND_MAX_LENGTH = 512
RETURN_URL_MAX_LENGTH = 512

PARAM_ERROR = "PARAM_ERROR"
REPEAT_ORDER = ("REPEAT_ORDER", "订单号重复")
REFUND_AMOUNT_EXCEED = ("REFUND_AMOUNT_EXCEED", "退款金额超过可退金额")
ORIG_AMOUNT_MISMATCH = ("ORIG_ORDER_AMOUNT_ERROR", "原订单金额不符")
REQUEST_DATE_ERROR = ("REQUEST_DATE_ERROR", "请求时间与服务器时间相差超过10分钟")

_DIGITS = re.compile(r"[0-9]{1,20}")
_DATE = re.compile(r"[0-9]{14}")
_ORDER_KEYS = frozenset({"origTransNo", "amount", "kind"})
#: The fields of an accepted application's answer, from the refund's result.
_RESULT_FIELDS = (
    "merchantNo",
    "transNo",
    "tradeNo",
    "orderAmt",
    "orderStatus",
    "finishedDate",
    "respCode",
    "respMsg",
)


class ApplicationRefused(ValueError):
    """An application the gateway refuses, with its error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _param_error(name: str) -> ApplicationRefused:
    return ApplicationRefused(PARAM_ERROR, f"业务参数有误: {name}")


@dataclass(frozen=True, slots=True)
class Order:
    """An original (paid) order that refunds are applied against."""

    orig_trans_no: str
    amount: int
    kind: str = "balance"


@dataclass(frozen=True, slots=True)
class ReceivedApplication:
    """What the sandbox keeps of a refund application whose every field passed the checks."""

    trans_no: str
    orig_trans_no: str
    orig_amount: int
    amount: int
    return_url: str
    extend: str


@dataclass(frozen=True, slots=True)
class ApplyTiming:
    """How long applied refunds stay PROCESSING, per order kind (seconds)."""

    balance_seconds: float = 2.0
    card_seconds: float = 3600.0
    refuse_seconds: float = 1.0

    def timeline(self, kind: str) -> tuple[Step, ...]:
        if kind == "card":
            return (Step("PROCESSING", None, self.card_seconds), Step("SUCCESS", None, None))
        if kind == "refuse":
            return (Step("PROCESSING", None, self.refuse_seconds), Step("FAIL", None, None))
        return (Step("PROCESSING", None, self.balance_seconds), Step("SUCCESS", None, None))

    def updated(self, changes: Mapping[str, Any]) -> ApplyTiming:
        """A copy with ``changes`` (the JSON form's keys); :class:`ValueError` names a bad one."""
        if not isinstance(changes, Mapping):
            raise ValueError("apply settings must be a JSON object")
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(
                f"apply settings: unknown key(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        for key, value in changes.items():
            if not is_seconds(value):
                raise ValueError(f"apply settings: {key} must be a finite number >= 0")
        return dataclasses.replace(self, **{k: float(v) for k, v in changes.items()})

    def to_json(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def parse_order_spec(spec: Any) -> Order:
    """Validate an order's JSON spec; :class:`ValueError` names what is wrong."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"an order spec must be a JSON object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - _ORDER_KEYS)
    if unknown:
        raise ValueError(f"order spec: unknown key(s) {', '.join(unknown)}")
    orig_trans_no = spec.get("origTransNo")
    if not _order_number(orig_trans_no):
        raise ValueError(
            f"order spec: origTransNo must be 1-{TRANS_NO_MAX_LENGTH} printable characters"
        )
    where = f"order {orig_trans_no!r}"
    amount = spec.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= MAX_AMOUNT_FEN:
        raise ValueError(f"{where}: amount must be a whole number of fen, 1 to {MAX_AMOUNT_FEN}")
    kind = spec.get("kind", "balance")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}")
    return Order(str(orig_trans_no), amount, kind)


def _order_number(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= TRANS_NO_MAX_LENGTH
        and value.isprintable()
        and value == value.strip()
    )


def parse_application(sign_content: str, now: dt.datetime) -> ReceivedApplication:
    """Check every field of an application's business JSON against the gateway's rules."""
    try:
        business = json.loads(sign_content)
    except ValueError:
        raise _param_error("signContent") from None
    if not isinstance(business, dict):
        raise _param_error("signContent")
    trans_no = business.get("transNo")
    if not _order_number(trans_no):
        raise _param_error("transNo")
    orig_trans_no = business.get("origTransNo")
    if not _order_number(orig_trans_no):
        raise _param_error("origTransNo")
    _whole(business.get("refundType"), "refundType", minimum=0)
    orig_amount = _whole(business.get("origOrderAmt"), "origOrderAmt", minimum=1)
    amount = _whole(business.get("orderAmt"), "orderAmt", minimum=1)
    if amount > orig_amount:
        raise ApplicationRefused(*REFUND_AMOUNT_EXCEED)
    _check_request_date(business.get("requestDate"), now)
    _text(business.get("refundReason"), "refundReason", REASON_MAX_LENGTH, True)
    extend = _text(business.get("extend"), "extend", EXTEND_MAX_LENGTH, False)
    return_url = _text(business.get("returnUrl"), "returnUrl", RETURN_URL_MAX_LENGTH, False)
    if return_url:
        try:
            check_base_url(return_url)
        except HsqError:
            raise _param_error("returnUrl") from None
    return ReceivedApplication(
        trans_no=str(trans_no),
        orig_trans_no=str(orig_trans_no),
        orig_amount=orig_amount,
        amount=amount,
        return_url=return_url,
        extend=extend,
    )


def applied_result(refund: SandboxRefund, now: dt.datetime) -> dict[str, str]:
    """The result the answer to an accepted application holds."""
    result = refund.result_at(now)
    return {name: result[name] for name in _RESULT_FIELDS if name in result}


def _whole(value: Any, name: str, *, minimum: int) -> int:
    """A whole number sent as a JSON number or a string of digits."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise _param_error(name)
    if not minimum <= number <= MAX_AMOUNT_FEN:
        raise _param_error(name)
    return number


def _check_request_date(value: Any, now: dt.datetime) -> None:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise _param_error("requestDate")
    try:
        date = dt.datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=SHANGHAI)
    except ValueError:
        raise _param_error("requestDate") from None
    if abs(now - date) > REQUEST_DATE_WINDOW:
        raise ApplicationRefused(*REQUEST_DATE_ERROR)


def _text(value: Any, name: str, max_length: int, required: bool) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > max_length or has_forbidden_characters(value):
        raise _param_error(name)
    return value
