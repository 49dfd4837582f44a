"""Engine test fixtures: the app pointed at the sandbox gateway, refunds on both sides."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from hsq_refunds import signals
from hsq_refunds.models import Refund


@pytest.fixture
def refunds(sandbox, merchant_no) -> Callable[..., list[Refund]]:
    """``refunds(specs)``: tracked refunds, and their counterparts at the sandbox gateway.

    A spec is ``{"transNo", "timeline"?, "amount"?, "hsq_amount"?, "known"?, "applied_ago"?,
    "status"?, "due"?}``: ``known=False`` leaves the refund out of the gateway (200004);
    ``hsq_amount`` is what the gateway reports when it differs from ``amount``; ``due=False``
    puts the next query in the future; other keys are Refund fields.
    """

    def create(specs: Iterable[Mapping[str, Any]]) -> list[Refund]:
        now = timezone.now()
        gateway_specs = []
        rows = []
        for spec in specs:
            spec = dict(spec)
            trans_no = spec.pop("transNo")
            amount = spec.pop("amount", 1500)
            hsq_amount = spec.pop("hsq_amount", amount)
            timeline = spec.pop("timeline", [{"status": "SUCCESS"}])
            applied_at: datetime = now - spec.pop("applied_ago", timedelta(minutes=2))
            due = spec.pop("due", True)
            if spec.pop("known", True):
                gateway_specs.append(
                    {"transNo": trans_no, "amount": hsq_amount or 0, "timeline": timeline}
                )
            fields = {
                "merchant_no": merchant_no,
                "trans_no": trans_no,
                "amount": amount,
                "applied_at": applied_at,
                "next_query_at": now - timedelta(seconds=1) if due else now + timedelta(hours=1),
                **spec,
            }
            rows.append(Refund(**fields))
        if gateway_specs:
            sandbox.add_refunds(gateway_specs)
        Refund.objects.bulk_create(rows)
        return list(Refund.objects.filter(trans_no__in=[r.trans_no for r in rows]).order_by("id"))

    return create


@pytest.fixture
def received(request):
    """Every refund signal, as (signal name, trans_no, kwargs)."""
    log: list[tuple[str, str, dict]] = []
    hooks = []
    for name in (
        "refund_status_changed",
        "refund_succeeded",
        "refund_failed",
        "refund_needs_attention",
    ):
        signal = getattr(signals, name)

        def receiver(sender, refund, _name=name, **kwargs):
            assert sender is Refund and isinstance(refund, Refund)
            kwargs.pop("signal")
            log.append((_name, refund.trans_no, kwargs))

        signal.connect(receiver, weak=False)
        hooks.append((signal, receiver))
    yield log
    for signal, receiver in hooks:
        signal.disconnect(receiver)
