"""Typed, immutable results of HSQ's methods, and the verified answer they are read from."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["RefundApplyResult", "RefundQueryResult", "RefundStatus", "RespCode", "SignedResult"]

_DATE_FORMAT = "%Y%m%d%H%M%S"


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
    gateway sent it and as its signature was verified, kept for audit; ``sign`` is that
    signature, hex exactly as received, so that a stored final status can be verified again
    later (:func:`~hsq_refunds.gateway.verify_result`). From a notification, ``raw_result`` is
    its ``signContent`` and ``sign`` the notification's own signature (see
    :func:`~hsq_refunds.gateway.verify_notification`).
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
    sign: str = field(default="", repr=False)

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
            "finishedDate": self.finished_at.strftime(_DATE_FORMAT) if self.finished_at else "",
            "respCode": self.resp_code,
            "respMsg": self.resp_msg,
            "extend": self.extend,
        }


@dataclass(frozen=True, slots=True)
class RefundApplyResult:
    """The verified business result of one ``POLYMERIZE_REFUND`` (an application for a refund).

    The gateway accepted the application for ``trans_no`` and reports where it stands:
    ``status`` is usually ``PROCESSING`` (or already ``SUCCESS``); ``None`` when the answer
    carries no ``orderStatus``. Which statuses mean "accepted" is not public (public clients
    differ): the refund's own queries decide. ``raw_result`` and ``sign`` are the verified
    ``result`` string and its signature, exactly as received.
    """

    merchant_no: str
    trans_no: str
    trade_no: str
    amount: int | None
    status: RefundStatus | None
    finished_at: datetime | None
    resp_code: str
    resp_msg: str
    raw_result: str = ""
    sign: str = field(default="", repr=False)

    @property
    def is_final(self) -> bool:
        return self.status is not None and self.status.is_final

    def as_gateway_dict(self) -> dict[str, Any]:
        """The business fields under the gateway's own names (as the CLI prints them)."""
        return {
            "merchantNo": self.merchant_no,
            "transNo": self.trans_no,
            "tradeNo": self.trade_no,
            "orderAmt": self.amount,
            "orderStatus": self.status.value if self.status else "",
            "finishedDate": self.finished_at.strftime(_DATE_FORMAT) if self.finished_at else "",
            "respCode": self.resp_code,
            "respMsg": self.resp_msg,
        }


@dataclass(frozen=True, slots=True)
class SignedResult:
    """A success answer whose signature verified: what every method's result is read from.

    ``raw_result`` is the ``result`` string exactly as received (what the signature covers),
    ``fields`` the JSON object parsed from it, ``sign`` the signature's hex exactly as received.
    """

    raw_result: str
    fields: dict[str, Any]
    sign: str = field(repr=False)
