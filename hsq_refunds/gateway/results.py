"""Typed, immutable results of HSQ queries."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["RefundQueryResult", "RefundStatus", "RespCode"]


class RefundStatus(enum.StrEnum):
    """``orderStatus`` of a refund as HSQ reports it (``str()`` gives the gateway's value)."""

    INIT = "INIT"
    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    FAIL = "FAIL"

    @property
    def is_final(self) -> bool:
        """``SUCCESS`` and ``FAIL`` never change again."""
        return self in (RefundStatus.SUCCESS, RefundStatus.FAIL)


class RespCode:
    """Business response codes documented on the gateway's refund-query page."""

    QUERY_OK = "200007"
    NOT_FOUND = "200004"
    QUERY_FAILED = "200008"
    EMPTY_RESULT = "200009"
    WRONG_OR_EXPIRED = "200021"
    PROCESSING = "100201"

    NOT_FOUND_CODES = frozenset({NOT_FOUND, EMPTY_RESULT})


@dataclass(frozen=True, slots=True)
class RefundQueryResult:
    """The verified business result of one ``POLYMERIZE_REFUND_QUERY``.

    ``status`` is ``None`` only when the gateway reported no ``orderStatus`` (for example
    with respCode 200004 "order does not exist"); ``amount`` is in fen; ``finished_at`` is
    timezone-aware (Asia/Shanghai). ``raw_result`` is the ``result`` string exactly as the
    gateway sent it and as its signature was verified, kept for audit.
    """

    merchant_no: str
    trans_no: str
    status: RefundStatus | None
    resp_code: str
    resp_msg: str
    orig_trans_no: str = ""
    trade_no: str = ""
    amount: int | None = None
    finished_at: datetime | None = None
    extend: str = ""
    raw_result: str = ""

    @property
    def is_final(self) -> bool:
        return self.status is not None and self.status.is_final

    def as_gateway_dict(self) -> dict[str, Any]:
        """The business fields under the gateway's own names (as the CLI prints them)."""
        return {
            "merchantNo": self.merchant_no,
            "transNo": self.trans_no,
            "origTransNo": self.orig_trans_no,
            "tradeNo": self.trade_no,
            "orderAmt": self.amount,
            "orderStatus": self.status.value if self.status else "",
            "finishedDate": self.finished_at.strftime("%Y%m%d%H%M%S") if self.finished_at else "",
            "respCode": self.resp_code,
            "respMsg": self.resp_msg,
            "extend": self.extend,
        }
