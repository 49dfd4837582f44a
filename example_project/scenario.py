"""The refunds the demo and ``serve`` make up: one of each case a merchant meets.

Each :class:`ExampleRefund` is tracked in the database the way a merchant's checkout would, with
``Refund.objects.track()`` right after applying at HSQ, and placed at the sandbox gateway with a
*timeline*: what HSQ answers about it as time goes by. Some are deliberately wrong (unknown at
HSQ, past the query window, another amount) to show what the app flags for a person.

The demo uses :data:`QUICK` timelines (seconds, so one run shows refunds finishing); ``serve``
uses :data:`SLOW` ones (minutes, so a person can watch them move in the admin).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

__all__ = [
    "QUICK",
    "SLOW",
    "ExampleRefund",
    "Gateway",
    "Pace",
    "SandboxBook",
    "make_refunds",
    "place_at_gateway",
    "track",
]

BEIJING = ZoneInfo("Asia/Shanghai")


class Gateway(Protocol):
    """What the scenario needs of a sandbox: a ``SandboxServer`` or a ``SandboxControl``."""

    def add_refunds(self, specs: Iterable[dict[str, Any]]) -> int: ...


@dataclass(frozen=True)
class Pace:
    """How long things take at the sandbox."""

    balance: float
    """Seconds a balance refund stays PROCESSING before SUCCESS."""
    failure: float
    """Seconds before the refund that fails reports FAIL."""
    bank_card: float | None
    """Seconds a bank-card refund stays PROCESSING (``None``: for as long as the run lasts)."""


QUICK = Pace(balance=3, failure=3, bank_card=None)
SLOW = Pace(balance=150, failure=240, bank_card=3 * 86400)


@dataclass(frozen=True)
class ExampleRefund:
    """One made-up refund: what the merchant tracks, and what the sandbox will say about it.

    ``gateway_amount`` is the amount HSQ knows (usually ``amount``); ``timeline`` is ``None``
    for a refund the gateway has never heard of. ``expect_status`` and ``expect_attention``
    are where the app's rules should leave the refund once the timeline has run.
    """

    trans_no: str
    orig_trans_no: str
    amount: int
    case: str
    applied_at: datetime
    timeline: tuple[dict[str, Any], ...] | None
    gateway_amount: int | None = None
    expect_status: str = "SUCCESS"
    expect_attention: str = ""

    def spec(self) -> dict[str, Any] | None:
        """The sandbox's refund spec (``None``: the sandbox must not know this refund)."""
        if self.timeline is None:
            return None
        amount = self.amount if self.gateway_amount is None else self.gateway_amount
        return {
            "transNo": self.trans_no,
            "amount": amount,
            "origTransNo": self.orig_trans_no,
            "timeline": [dict(step) for step in self.timeline],
        }


def _processing_then(status: str, seconds: float | None) -> tuple[dict[str, Any], ...]:
    if seconds is None:
        return ({"status": "PROCESSING"},)
    return ({"status": "PROCESSING", "seconds": seconds}, {"status": status})


def make_refunds(now: datetime, pace: Pace, *, not_found_grace: float) -> list[ExampleRefund]:
    """Ten refunds, one per case, applied for a couple of minutes before ``now``.

    Applied in the past so the first query is already due (HSQ advises querying about a
    minute after applying). One refund unknown at HSQ is older than ``not_found_grace``, the
    other younger, to show both sides of the rule for "order does not exist".
    """
    recent = now - timedelta(minutes=2)
    long_ago = now - timedelta(seconds=not_found_grace + 15 * 60)
    balance = _processing_then("SUCCESS", pace.balance)
    bank_card = _processing_then("SUCCESS", pace.bank_card)
    refunds: list[ExampleRefund] = []

    def add(
        case: str,
        amount: int,
        timeline: tuple[dict[str, Any], ...] | None,
        *,
        status: str,
        attention: str = "",
        applied_at: datetime = recent,
        gateway_amount: int | None = None,
    ) -> None:
        seq = len(refunds) + 1
        refunds.append(
            ExampleRefund(
                trans_no=_order_no("RF", applied_at, seq),
                orig_trans_no=_order_no("DD", applied_at - timedelta(days=3, hours=seq), seq),
                amount=amount,
                case=case,
                applied_at=applied_at,
                timeline=timeline,
                gateway_amount=gateway_amount,
                expect_status=status,
                expect_attention=attention,
            )
        )

    bank_card_status = "PROCESSING" if pace.bank_card is None else "SUCCESS"
    add("balance", 1234, balance, status="SUCCESS")
    add("balance", 128800, balance, status="SUCCESS")
    add("balance, already done", 5880, ({"status": "SUCCESS"},), status="SUCCESS")
    add("bank card", 239900, bank_card, status=bank_card_status)
    add(
        "bank card, accepted",
        56000,
        ({"status": "INIT", "seconds": pace.balance}, *bank_card),
        status=bank_card_status,
    )
    add("refused by the bank", 9990, _processing_then("FAIL", pace.failure), status="FAIL")
    add("not at HSQ yet", 4500, None, status="UNKNOWN")
    add(
        "not at HSQ, old", 31600, None, status="UNKNOWN", attention="not_found", applied_at=long_ago
    )
    add(
        "past query window", 78000, ({"respCode": "200021"},), status="UNKNOWN", attention="expired"
    )
    add(
        "amount differs",
        15000,
        balance,
        status="SUCCESS",
        attention="amount_mismatch",
        gateway_amount=10500,
    )
    return refunds


def _order_no(prefix: str, when: datetime, seq: int) -> str:
    """A merchant order number shaped like most shops' (``RF`` + Beijing time + sequence)."""
    return f"{prefix}{when.astimezone(BEIJING):%Y%m%d%H%M%S}{seq:04d}"


def place_at_gateway(gateway: Gateway, refunds: Sequence[ExampleRefund]) -> int:
    """Tell the sandbox about every refund it should know; returns how many."""
    specs = [spec for spec in (refund.spec() for refund in refunds) if spec is not None]
    return gateway.add_refunds(specs) if specs else 0


def track(refunds: Sequence[ExampleRefund]) -> None:
    """Record the refunds as the merchant's checkout does: ``Refund.objects.track(...)``."""
    from hsq_refunds.models import Refund

    for refund in refunds:
        Refund.objects.track(
            refund.trans_no,
            orig_trans_no=refund.orig_trans_no,
            amount=refund.amount,
            applied_at=refund.applied_at,
        )


class SandboxBook:
    """The refunds placed at ``serve``'s sandbox, kept in a JSON file across restarts.

    The sandbox keeps its refunds in memory; a restarted ``serve`` reads them back from here,
    with the time each was created, so every timeline carries on where it was (a refund that was
    PROCESSING for a minute before a restart an hour ago is SUCCESS now).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[dict[str, Any]]:
        """The stored specs (none if the file is missing or unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        refunds = data.get("refunds") if isinstance(data, dict) else None
        return [spec for spec in refunds or [] if isinstance(spec, dict)]

    def save(self, specs: Iterable[dict[str, Any]]) -> None:
        """Replace the stored specs (atomically: a crash leaves the old file or the new one)."""
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        staging.write_text(
            json.dumps({"refunds": list(specs)}, ensure_ascii=False, indent=1) + "\n",
            encoding="utf-8",
        )
        staging.replace(self.path)

    @staticmethod
    def stamped(refunds: Sequence[ExampleRefund], created_at: datetime) -> list[dict[str, Any]]:
        """The refunds' specs with their creation time, so a reload continues their timelines."""
        specs = []
        for refund in refunds:
            spec = refund.spec()
            if spec is not None:
                specs.append({**spec, "createdAt": created_at.isoformat()})
        return specs
