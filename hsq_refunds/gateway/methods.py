"""The typed requests of HSQ's refund methods: what each sends, and how its result is read.

Each request is checked when it is made (an :class:`~hsq_refunds.gateway.InvalidRequestError`
naming the argument, before anything is sent), gives its business parameters in the gateway's
order (:meth:`business`), and reads its verified result (:meth:`result`). The
:class:`~hsq_refunds.gateway.HsqClient` signs, sends and verifies. See ``docs/protocol.md``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from .errors import InvalidRequestError
from .response import beijing, refund_apply_result, refund_query_result
from .results import RefundApplyResult, RefundQueryResult, SignedResult
from .validation import (
    EXTEND_MAX_LENGTH,
    REFUND_REASON_MAX_LENGTH,
    check_amount,
    check_aware_datetime,
    check_refund_type,
    check_return_url,
    check_text,
    check_trans_no,
)

__all__ = [
    "READ_ONLY_METHODS",
    "REFUND_APPLY_METHOD",
    "REFUND_QUERY_METHOD",
    "RefundApplyRequest",
    "RefundQueryRequest",
    "beijing_timestamp",
    "new_trans_no",
]

REFUND_QUERY_METHOD = "POLYMERIZE_REFUND_QUERY"
REFUND_APPLY_METHOD = "POLYMERIZE_REFUND"
#: Methods that only read: safe to send again when an answer was lost. Every other method (an
#: application above all) is sent at most once per call.
READ_ONLY_METHODS = frozenset({REFUND_QUERY_METHOD, "POLYMERIZE_QUERY", "QUERY_TRADE_FILE"})

_PREFIX = re.compile("[A-Za-z0-9]{1,16}")
_SUFFIX_DIGITS = 8


@dataclass(frozen=True, slots=True)
class RefundQueryRequest:
    """``POLYMERIZE_REFUND_QUERY``: where does the refund ``trans_no`` stand?"""

    method: ClassVar[str] = REFUND_QUERY_METHOD

    trans_no: str

    def __post_init__(self) -> None:
        check_trans_no(self.trans_no)

    def business(self) -> dict[str, Any]:
        return {"transNo": self.trans_no}

    def result(self, signed: SignedResult, *, merchant_no: str) -> RefundQueryResult:
        return refund_query_result(signed, merchant_no=merchant_no, trans_no=self.trans_no)


@dataclass(frozen=True, slots=True)
class RefundApplyRequest:
    """``POLYMERIZE_REFUND``: refund ``amount`` fen of the paid order ``orig_trans_no``.

    ``trans_no`` is the new refund's own merchant order number (unique: every later query and
    notification is about it); ``orig_amount`` what the original order was paid, in fen;
    ``refund_type`` the gateway's ``refundType`` (its meaning is not public); ``request_date``
    a timezone-aware time, sent in Beijing time (the gateway is said to refuse one more than
    about 10 minutes from its clock); ``return_url`` where HSQ notifies the outcome (left out
    when empty); ``extend`` the passthrough field (left out when empty).
    """

    method: ClassVar[str] = REFUND_APPLY_METHOD

    trans_no: str
    orig_trans_no: str
    orig_amount: int
    amount: int
    request_date: datetime
    reason: str = ""
    refund_type: int = 2
    return_url: str | None = None
    extend: str = ""

    def __post_init__(self) -> None:
        check_trans_no(self.trans_no, "trans_no")
        check_trans_no(self.orig_trans_no, "orig_trans_no")
        check_amount(self.orig_amount, "orig_amount")
        check_amount(self.amount, "amount")
        if self.amount > self.orig_amount:
            raise InvalidRequestError(
                f"amount ({self.amount} fen) must not exceed orig_amount ({self.orig_amount} fen)"
            )
        check_refund_type(self.refund_type)
        check_text(self.reason, "reason", max_length=REFUND_REASON_MAX_LENGTH)
        check_text(self.extend, "extend", max_length=EXTEND_MAX_LENGTH)
        if self.return_url is not None and self.return_url != "":
            check_return_url(self.return_url)
        check_aware_datetime(self.request_date, "request_date")
        try:
            self.request_date_text  # noqa: B018 - a time Beijing's clock cannot show raises
        except OverflowError:
            raise InvalidRequestError("request_date is out of range") from None

    @property
    def request_date_text(self) -> str:
        """``requestDate`` as sent: ``yyyyMMddHHmmss`` in Beijing time."""
        return beijing_timestamp(self.request_date)

    def business(self) -> dict[str, Any]:
        """The business fields in the order of the gateway's own example: numbers as JSON
        numbers, ``returnUrl`` and ``extend`` only when they hold something."""
        fields: dict[str, Any] = {
            "transNo": self.trans_no,
            "refundType": self.refund_type,
            "origTransNo": self.orig_trans_no,
            "origOrderAmt": self.orig_amount,
            "orderAmt": self.amount,
            "requestDate": self.request_date_text,
            "refundReason": self.reason,
        }
        if self.return_url:
            fields["returnUrl"] = self.return_url
        if self.extend:
            fields["extend"] = self.extend
        return fields

    def result(self, signed: SignedResult, *, merchant_no: str) -> RefundApplyResult:
        return refund_apply_result(signed, merchant_no=merchant_no, trans_no=self.trans_no)


def new_trans_no(prefix: str = "RF", *, now: datetime | None = None) -> str:
    """A fresh merchant order number for a refund: ``prefix``, the Beijing time as
    ``yyyyMMddHHmmss``, and 8 random digits (``RF20240101120000`` + ``04718253``).

    ``prefix`` is 1 to 16 ASCII letters and digits; the result is at most 38 characters (of
    the 64 a ``transNo`` may have). Unique in practice, not by construction: what the gateway
    does with a repeated one is not public, so a caller that must be sure keeps its own
    record of the numbers it used.
    """
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise InvalidRequestError("prefix must be 1 to 16 ASCII letters and digits")
    moment = datetime.now(beijing()) if now is None else check_aware_datetime(now, "now")
    try:
        stamp = beijing_timestamp(moment)
    except OverflowError:
        raise InvalidRequestError("now is out of range") from None
    suffix = f"{secrets.randbelow(10**_SUFFIX_DIGITS):0{_SUFFIX_DIGITS}d}"
    return f"{prefix}{stamp}{suffix}"


def beijing_timestamp(moment: datetime) -> str:
    """An aware time as ``yyyyMMddHHmmss`` in Beijing time (the year always four digits)."""
    local = moment.astimezone(beijing())
    return (
        f"{local.year:04d}{local.month:02d}{local.day:02d}"
        f"{local.hour:02d}{local.minute:02d}{local.second:02d}"
    )
