"""Sandbox refunds: their specification, their timeline, and the business result they answer.

A refund is described by a JSON-shaped *spec* (the format of ``add_refunds``, the control
endpoint and scenario files)::

    {"transNo": "R1", "amount": 100, "origTransNo": "P1", "extend": "",
     "merchantNo": "...", "tradeNo": "...", "createdAt": "2024-05-01T10:00:00+08:00",
     "timeline": [{"status": "PROCESSING", "seconds": 30}, {"status": "SUCCESS"}]}

Timeline steps follow one another from the refund's creation; the last one lasts forever. A step
is either an ``orderStatus`` (``{"status": ...}``) or a bare business response code
(``{"respCode": "200021"}``: wrong order or past the query window; ``200008``: query failed;
``200004``/``200009``: not (yet) visible), answered without ``orderStatus``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_TIMELINE",
    "SandboxRefund",
    "Step",
    "bare_result",
    "is_seconds",
    "new_trade_no",
    "parse_refund_spec",
]

#: Beijing time has had no daylight saving since 1991: a fixed offset needs no tz database.
SHANGHAI = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")

DEFAULT_TIMELINE: tuple[dict[str, Any], ...] = (
    {"status": "PROCESSING", "seconds": 30},
    {"status": "SUCCESS"},
)

STATUSES = ("INIT", "PROCESSING", "SUCCESS", "FAIL")
FINAL_STATUSES = ("SUCCESS", "FAIL")

#: Codes a step may answer without an ``orderStatus``, with the gateway's own texts.
RESP_CODE_MESSAGES = {
    "200004": "订单不存在",
    "200008": "查询失败",
    "200009": "查询结果集为空",
    "200021": "订单号有误或超过查询期限!",
}
QUERY_OK = ("200007", "查询成功")
PROCESSING = ("100201", "交易处理中,请稍后查询")

_SPEC_KEYS = frozenset(
    {"transNo", "amount", "origTransNo", "extend", "merchantNo", "tradeNo", "timeline", "createdAt"}
)
_trade_sequence = itertools.count(secrets.randbelow(10**11))


@dataclass(frozen=True, slots=True)
class Step:
    """One timeline step: an ``orderStatus`` or a bare ``respCode``, for ``seconds`` or forever."""

    status: str | None
    resp_code: str | None
    seconds: float | None


@dataclass(frozen=True, slots=True)
class SandboxRefund:
    """A refund the sandbox knows about."""

    trans_no: str
    amount: int
    orig_trans_no: str
    extend: str
    merchant_no: str
    trade_no: str
    created_at: dt.datetime
    timeline: tuple[Step, ...]

    def step_at(self, now: dt.datetime) -> tuple[Step, dt.datetime] | None:
        """The step in force at ``now`` and when it began; ``None`` before creation."""
        elapsed = (now - self.created_at).total_seconds()
        if elapsed < 0:
            return None
        offset = 0.0
        for step in self.timeline:
            lasts = math.inf if step.seconds is None else step.seconds
            if elapsed < offset + lasts:
                break
            offset += lasts
        return step, self.created_at + dt.timedelta(seconds=offset)

    def result_at(self, now: dt.datetime) -> dict[str, str]:
        """The business result of a query at ``now``, as the gateway would word it."""
        found = self.step_at(now)
        if found is None:
            return bare_result(self.merchant_no, self.trans_no)
        return self.result_of(*found)

    def status_at(self, now: dt.datetime) -> str | None:
        """The ``orderStatus`` at ``now`` (``None`` before creation or in a respCode step)."""
        found = self.step_at(now)
        return found[0].status if found is not None else None

    def status_changes(self) -> list[tuple[float, Step]]:
        """Each status step with the seconds from creation to its start; steps that last no
        time are left out (nobody could see them)."""
        changes: list[tuple[float, Step]] = []
        offset = 0.0
        for step in self.timeline:
            if step.status is not None and step.seconds != 0:
                changes.append((offset, step))
            offset += step.seconds or 0.0
        return changes

    def result_of(self, step: Step, began: dt.datetime) -> dict[str, str]:
        """The business result while ``step`` (which began at ``began``) is in force."""
        if step.status is None:
            return bare_result(self.merchant_no, self.trans_no, step.resp_code or "200004")
        code, message = PROCESSING if step.status == "PROCESSING" else QUERY_OK
        finished = began.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")
        return {
            "extend": self.extend,
            "finishedDate": finished if step.status in FINAL_STATUSES else "",
            "merchantNo": self.merchant_no,
            "orderAmt": str(self.amount),
            "orderStatus": step.status,
            "origTransNo": self.orig_trans_no,
            "respCode": code,
            "respMsg": message,
            "tradeNo": self.trade_no,
            "transNo": self.trans_no,
        }


def bare_result(merchant_no: str, trans_no: str, resp_code: str = "200004") -> dict[str, str]:
    """A result with a bare business code and no ``orderStatus`` (``200004``: a transNo the
    gateway does not know)."""
    return {
        "merchantNo": merchant_no,
        "transNo": trans_no,
        "respCode": resp_code,
        "respMsg": RESP_CODE_MESSAGES[resp_code],
    }


def parse_refund_spec(spec: Any, *, default_merchant_no: str, now: dt.datetime) -> SandboxRefund:
    """Validate a JSON spec and build the refund; :class:`ValueError` names what is wrong."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"a refund spec must be a JSON object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ValueError(f"refund spec: unknown key(s) {', '.join(unknown)}")
    trans_no = spec.get("transNo")
    if not isinstance(trans_no, str) or not 0 < len(trans_no) <= 64:
        raise ValueError("refund spec: transNo must be a string of 1-64 characters")
    where = f"refund {trans_no!r}"
    amount = spec.get("amount", 100)
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"{where}: amount must be a non-negative integer number of fen")
    texts = {}
    for key in ("origTransNo", "extend", "merchantNo", "tradeNo"):
        value = spec.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: {key} must be a string")
        texts[key] = value
    created_at = _parse_created_at(spec.get("createdAt"), where) or now
    return SandboxRefund(
        trans_no=trans_no,
        amount=amount,
        orig_trans_no=texts["origTransNo"] or "",
        extend=texts["extend"] or "",
        merchant_no=texts["merchantNo"] or default_merchant_no,
        trade_no=texts["tradeNo"] or new_trade_no(created_at),
        created_at=created_at,
        timeline=_parse_timeline(spec.get("timeline", DEFAULT_TIMELINE), where),
    )


def _parse_created_at(value: Any, where: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: createdAt must be an ISO 8601 string")
    try:
        created_at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where}: createdAt {value!r} is not ISO 8601") from None
    if created_at.tzinfo is None:
        raise ValueError(f"{where}: createdAt must carry a UTC offset")
    return created_at


def _parse_timeline(value: Any, where: str) -> tuple[Step, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise ValueError(f"{where}: timeline must be a non-empty list of steps")
    return tuple(
        _parse_step(raw, where, last=index == len(value) - 1) for index, raw in enumerate(value)
    )


def _parse_step(raw: Any, where: str, *, last: bool) -> Step:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a timeline step must be a JSON object")
    unknown = sorted(set(raw) - {"status", "respCode", "seconds"})
    if unknown:
        raise ValueError(f"{where}: unknown timeline step key(s) {', '.join(unknown)}")
    status, resp_code = raw.get("status"), raw.get("respCode")
    if (status is None) == (resp_code is None):
        raise ValueError(f"{where}: a timeline step has either status or respCode")
    if status is not None and status not in STATUSES:
        raise ValueError(f"{where}: status must be one of {', '.join(STATUSES)}")
    if resp_code is not None and resp_code not in RESP_CODE_MESSAGES:
        raise ValueError(f"{where}: respCode must be one of {', '.join(RESP_CODE_MESSAGES)}")
    seconds = raw.get("seconds")
    if seconds is None:
        if not last:
            raise ValueError(f"{where}: every timeline step but the last needs seconds")
        return Step(status, resp_code, None)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"{where}: seconds must be a number")
    if not is_seconds(seconds):
        raise ValueError(f"{where}: seconds must be a finite number >= 0")
    # The last step lasts forever, whatever its seconds say.
    return Step(status, resp_code, None if last else float(seconds))


def is_seconds(value: Any) -> bool:
    """A finite number of seconds, >= 0 (``True`` and ``False`` are not numbers)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value >= 0
    )


def new_trade_no(created_at: dt.datetime) -> str:
    """A 32-digit trade number shaped like HSQ's (``120000`` + time + sequence)."""
    stamp = created_at.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")
    return f"120000{stamp}{next(_trade_sequence) % 10**12:012d}"
