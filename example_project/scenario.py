"""The refunds the demo and ``serve`` make up: one of each case a merchant meets.

Most are applied for through the app, ``Refund.objects.apply(...)``, against original orders that
the sandbox gateway is told of (their *kind* decides how HSQ settles them: ``balance`` in seconds
or minutes, ``card`` in days, ``refuse`` ends ``FAIL``). With ``NOTIFY_URL`` set, HSQ (the
sandbox) notifies the example project of each status change. One application asks for more than
its order has left, and the app refuses it before anything is written or sent.

The others were applied for elsewhere (another system, HSQ's console) and are only tracked, with
``Refund.objects.track()``; the sandbox is given a *timeline* for each, what HSQ answers about it
as time goes by. Some are deliberately wrong (unknown at HSQ, past the query window, another
amount) to show what the app flags for a person.

The demo uses :data:`QUICK` timings (seconds, so one run shows refunds finishing); ``serve``
uses :data:`SLOW` ones (a minute or so, so a person can watch them move in the admin).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

__all__ = [
    "QUICK",
    "SLOW",
    "Applied",
    "ExampleRefund",
    "Gateway",
    "Pace",
    "SandboxBook",
    "apply",
    "declare_orders",
    "make_refunds",
    "order_specs",
    "place_at_gateway",
    "track",
]

BEIJING = ZoneInfo("Asia/Shanghai")

#: How the demo's table names where a final status came from (``RefundQuery.source``).
BY_NOTIFICATION = "notification"
BY_QUERY = "query"

#: A bank-card refund that should not finish while the demo runs: thirty days.
_LONG = 30 * 86400.0


class Gateway(Protocol):
    """What the scenario needs of a sandbox: a ``SandboxServer`` or a ``SandboxControl``."""

    def add_refunds(self, specs: Iterable[dict[str, Any]]) -> int: ...

    def add_orders(self, specs: Iterable[Mapping[str, Any]]) -> int: ...

    def configure_apply(self, **settings: float) -> dict[str, float]: ...


@dataclass(frozen=True)
class Pace:
    """How long things take at the sandbox."""

    balance: float
    """Seconds a balance refund stays PROCESSING before SUCCESS."""
    failure: float
    """Seconds before the refund HSQ refuses reports FAIL."""
    bank_card: float | None
    """Seconds a bank-card refund stays PROCESSING (``None``: for as long as the run lasts)."""

    def apply_settings(self) -> dict[str, float]:
        """The sandbox's ``configure_apply`` settings for the refunds the app applies for."""
        return {
            "balance_seconds": self.balance,
            "card_seconds": _LONG if self.bank_card is None else self.bank_card,
            "refuse_seconds": self.failure,
        }

    def timeline(self, kind: str) -> tuple[dict[str, Any], ...]:
        """The sandbox timeline of a refund applied against an order of ``kind``."""
        settings = self.apply_settings()
        if kind == "card":
            return _processing_then("SUCCESS", settings["card_seconds"])
        if kind == "refuse":
            return _processing_then("FAIL", settings["refuse_seconds"])
        return _processing_then("SUCCESS", settings["balance_seconds"])


QUICK = Pace(balance=3, failure=3, bank_card=None)
SLOW = Pace(balance=45, failure=75, bank_card=3 * 86400)


@dataclass(frozen=True)
class ExampleRefund:
    """One made-up refund: what the merchant does with it, and what HSQ will say about it.

    A refund the app applies for has a ``kind`` (that of its original order at the sandbox)
    and ``orig_amount`` (what the order was paid); a refund applied for elsewhere has neither,
    and a ``timeline`` instead (``None``: the gateway has never heard of it). ``gateway_amount``
    is the amount HSQ knows when it is not ``amount``. ``expect_*`` are where the app's rules
    should leave the refund: its status, attention reason, and whether its final status came
    by ``"notification"`` or ``"query"`` (``""``: not final); ``expect_refused``: the app
    refuses the application itself (:class:`~hsq_refunds.exceptions.RefundRefused`).
    """

    trans_no: str
    orig_trans_no: str
    amount: int
    case: str
    applied_at: datetime
    timeline: tuple[dict[str, Any], ...] | None = None
    kind: str | None = None
    orig_amount: int | None = None
    reason: str = ""
    gateway_amount: int | None = None
    expect_status: str = "SUCCESS"
    expect_attention: str = ""
    expect_final_by: str = ""
    expect_refused: bool = False

    @property
    def applied_here(self) -> bool:
        """Applied for through the app (``Refund.objects.apply``), not only tracked."""
        return self.kind is not None

    def spec(self) -> dict[str, Any] | None:
        """The sandbox's refund spec of a tracked refund (``None``: the sandbox must not know
        it beforehand, because it was never sent, or is applied for by the app)."""
        if self.applied_here or self.timeline is None:
            return None
        amount = self.amount if self.gateway_amount is None else self.gateway_amount
        return {
            "transNo": self.trans_no,
            "amount": amount,
            "origTransNo": self.orig_trans_no,
            "timeline": [dict(step) for step in self.timeline],
        }

    def order_spec(self) -> dict[str, Any] | None:
        """The sandbox's spec of this refund's original order (applied refunds only)."""
        if not self.applied_here:
            return None
        return {"origTransNo": self.orig_trans_no, "amount": self.orig_amount, "kind": self.kind}


def _processing_then(status: str, seconds: float | None) -> tuple[dict[str, Any], ...]:
    if seconds is None:
        return ({"status": "PROCESSING"},)
    return ({"status": "PROCESSING", "seconds": seconds}, {"status": status})


def make_refunds(now: datetime, pace: Pace, *, not_found_grace: float) -> list[ExampleRefund]:
    """Eight applications through the app, then five refunds applied for elsewhere.

    The applications: two balance refunds, two bank-card ones (one partial), one HSQ refuses,
    and three against one order paid ¥300.00: ¥100.00, ¥150.00, and ¥80.00, which is more than
    is left of it. The tracked ones were applied for a couple of minutes before ``now`` (so their
    first query is due at once); one unknown at HSQ is older than ``not_found_grace``, the other
    younger, to show both sides of the rule for "order does not exist".
    """
    recent = now - timedelta(minutes=2)
    long_ago = now - timedelta(seconds=not_found_grace + 15 * 60)
    refunds: list[ExampleRefund] = []
    orders: dict[str, str] = {}

    def order_no(name: str, seq: int) -> str:
        if name not in orders:
            orders[name] = _order_no("DD", now - timedelta(days=3, hours=seq), seq)
        return orders[name]

    def applied(
        case: str,
        amount: int,
        kind: str,
        *,
        paid: int | None = None,
        order: str | None = None,
        status: str = "SUCCESS",
        final_by: str = BY_NOTIFICATION,
        refused: bool = False,
        reason: str = "顾客退货",
    ) -> None:
        seq = len(refunds) + 1
        refunds.append(
            ExampleRefund(
                trans_no=_order_no("RF", now, seq),
                orig_trans_no=order_no(order or f"order {seq}", seq),
                amount=amount,
                case=case,
                applied_at=now,
                kind=kind,
                orig_amount=amount if paid is None else paid,
                reason=reason,
                expect_status="" if refused else status,
                expect_final_by="" if refused else final_by,
                expect_refused=refused,
            )
        )

    def tracked(
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
        final = status in ("SUCCESS", "FAIL")
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
                expect_final_by=BY_QUERY if final else "",
            )
        )

    card_status, card_by = (
        ("PROCESSING", "") if pace.bank_card is None else ("SUCCESS", BY_NOTIFICATION)
    )
    applied("balance", 1234, "balance")
    applied("balance", 128800, "balance")
    applied("bank card", 239900, "card", status=card_status, final_by=card_by)
    applied("bank card, partial", 56000, "card", paid=89900, status=card_status, final_by=card_by)
    applied("refused by HSQ", 9990, "refuse", status="FAIL")
    applied("partial, 1st", 10000, "balance", paid=30000, order="partial", reason="部分退款")
    applied("partial, 2nd", 15000, "balance", paid=30000, order="partial", reason="部分退款")
    applied("more than is left", 8000, "balance", paid=30000, order="partial", refused=True)

    tracked("balance, already done", 5880, ({"status": "SUCCESS"},), status="SUCCESS")
    tracked("not at HSQ yet", 4500, None, status="UNKNOWN")
    tracked(
        "not at HSQ, old", 31600, None, status="UNKNOWN", attention="not_found", applied_at=long_ago
    )
    tracked(
        "past query window", 78000, ({"respCode": "200021"},), status="UNKNOWN", attention="expired"
    )
    tracked(
        "amount differs",
        15000,
        _processing_then("SUCCESS", pace.balance),
        status="SUCCESS",
        attention="amount_mismatch",
        gateway_amount=10500,
    )
    return refunds


def _order_no(prefix: str, when: datetime, seq: int) -> str:
    """A merchant order number shaped like most shops' (``RF`` + Beijing time + sequence)."""
    return f"{prefix}{when.astimezone(BEIJING):%Y%m%d%H%M%S}{seq:04d}"


def order_specs(refunds: Sequence[ExampleRefund]) -> list[dict[str, Any]]:
    """The sandbox specs of the orders the refunds are applied against, each once."""
    specs: dict[str, dict[str, Any]] = {}
    for refund in refunds:
        spec = refund.order_spec()
        if spec is not None:
            specs.setdefault(spec["origTransNo"], spec)
    return list(specs.values())


def declare_orders(gateway: Gateway, refunds: Sequence[ExampleRefund], pace: Pace) -> int:
    """Tell the sandbox how long applied refunds take, and of the orders they are applied
    against (HSQ knows the merchant's paid orders; the sandbox must be told); returns how many."""
    gateway.configure_apply(**pace.apply_settings())
    specs = order_specs(refunds)
    return gateway.add_orders(specs) if specs else 0


def place_at_gateway(gateway: Gateway, refunds: Sequence[ExampleRefund]) -> int:
    """Tell the sandbox about every tracked refund it should know; returns how many."""
    specs = [spec for spec in (refund.spec() for refund in refunds) if spec is not None]
    return gateway.add_refunds(specs) if specs else 0


def track(refunds: Sequence[ExampleRefund]) -> None:
    """Record the refunds applied for elsewhere: ``Refund.objects.track(...)``."""
    from hsq_refunds.models import Refund

    for refund in refunds:
        if not refund.applied_here:
            Refund.objects.track(
                refund.trans_no,
                orig_trans_no=refund.orig_trans_no,
                amount=refund.amount,
                applied_at=refund.applied_at,
            )


@dataclass(frozen=True)
class Applied:
    """One application through the app: the refund as recorded, or the app's refusal."""

    refund: ExampleRefund
    row: Any = None
    """The :class:`~hsq_refunds.models.Refund` after HSQ's answer (``None`` when refused)."""
    refused: Exception | None = None
    """The :class:`~hsq_refunds.exceptions.RefundRefused` the app raised, if it did."""


def apply(refunds: Sequence[ExampleRefund]) -> list[Applied]:
    """Apply for each refund through the app, in order: ``Refund.objects.apply(...)``.

    With ``NOTIFY_URL`` set, each application carries it as ``returnUrl``. An application that
    the app refuses (more than the order has left) is returned with its ``RefundRefused``.
    """
    from hsq_refunds.exceptions import RefundRefused
    from hsq_refunds.models import Refund

    results = []
    for refund in refunds:
        if not refund.applied_here:
            continue
        try:
            row = Refund.objects.apply(
                orig_trans_no=refund.orig_trans_no,
                orig_amount=refund.orig_amount,
                amount=refund.amount,
                reason=refund.reason,
                trans_no=refund.trans_no,
            )
        except RefundRefused as exc:
            results.append(Applied(refund, refused=exc))
        else:
            results.append(Applied(refund, row=row))
    return results


class SandboxBook:
    """The refunds and orders placed at ``serve``'s sandbox, kept in a JSON file across restarts.

    The sandbox keeps its refunds in memory; a restarted ``serve`` reads them back from here,
    with the time each was created, so every timeline carries on where it was (a refund that was
    PROCESSING for a minute before a restart an hour ago is SUCCESS now). Refunds the app
    applied for are kept as the same kind of spec, created when they were applied for.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _data(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def load(self) -> list[dict[str, Any]]:
        """The stored refund specs (none if the file is missing or unreadable)."""
        refunds = self._data().get("refunds")
        return [spec for spec in refunds or [] if isinstance(spec, dict)]

    def load_orders(self) -> list[dict[str, Any]]:
        """The stored order specs (none if the file is missing or unreadable)."""
        orders = self._data().get("orders")
        return [spec for spec in orders or [] if isinstance(spec, dict)]

    def save(self, specs: Iterable[dict[str, Any]], orders: Iterable[dict[str, Any]] = ()) -> None:
        """Replace the stored specs (atomically: a crash leaves the old file or the new one)."""
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        staging.write_text(
            json.dumps(
                {"refunds": list(specs), "orders": list(orders)}, ensure_ascii=False, indent=1
            )
            + "\n",
            encoding="utf-8",
        )
        staging.replace(self.path)

    @staticmethod
    def stamped(refunds: Sequence[ExampleRefund], created_at: datetime) -> list[dict[str, Any]]:
        """The tracked refunds' specs with their creation time, so a reload continues their
        timelines."""
        specs = []
        for refund in refunds:
            spec = refund.spec()
            if spec is not None:
                specs.append({**spec, "createdAt": created_at.isoformat()})
        return specs

    @staticmethod
    def applied(results: Sequence[Applied], pace: Pace) -> list[dict[str, Any]]:
        """The specs of the refunds the app applied for, as the sandbox took them: their
        order's timeline from the moment they were applied for, and HSQ's trade number."""
        specs = []
        for result in results:
            row, refund = result.row, result.refund
            if row is None or refund.kind is None:
                continue
            spec = {
                "transNo": row.trans_no,
                "amount": row.amount,
                "origTransNo": row.orig_trans_no,
                "createdAt": row.applied_at.isoformat(),
                "timeline": [dict(step) for step in pace.timeline(refund.kind)],
            }
            if row.trade_no:
                spec["tradeNo"] = row.trade_no
            specs.append(spec)
        return specs
