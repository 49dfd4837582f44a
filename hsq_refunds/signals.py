"""Signals about refunds, sent by the sync engine once the change is committed.

Every signal is sent with ``sender=Refund`` and ``refund=<the Refund instance, as written>``,
through ``transaction.on_commit``: a receiver never sees a change that was rolled back, and a
sync run inside a caller's transaction signals only when that transaction commits.

``refund_status_changed(refund, old_status, new_status)``
    A verified answer moved the refund to another status.
``refund_succeeded(refund)`` / ``refund_failed(refund)``
    The refund reached ``SUCCESS`` / ``FAIL`` (sent after ``refund_status_changed``).
    ``refund_succeeded`` is sent only when HSQ paid the amount expected (or none was expected):
    a ``SUCCESS`` for another amount sends ``refund_needs_attention`` with
    ``reason="amount_mismatch"`` instead, so a receiver that marks the order refunded never does
    so for money HSQ did not pay.
``refund_applied(refund)``
    The app applied for the refund and recorded HSQ's answer (``refund.application`` says
    whether HSQ answered, refused, or could not be heard); sent once per application.
``refund_needs_attention(refund, reason)``
    The refund was flagged for a person; ``reason`` is an
    :class:`~hsq_refunds.choices.AttentionReason` value. Sent once per reason.

Receivers run in the process that synced; keep them quick, or hand the work to a task queue.
An exception in a receiver is logged and does not stop the sync.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import transaction
from django.dispatch import Signal

from .choices import Status

if TYPE_CHECKING:
    from .models import Refund
    from .rules import Decision

__all__ = [
    "refund_applied",
    "refund_failed",
    "refund_needs_attention",
    "refund_status_changed",
    "refund_succeeded",
    "send_refund_signals",
]

logger = logging.getLogger("hsq_refunds.signals")

refund_applied = Signal()
refund_status_changed = Signal()
refund_succeeded = Signal()
refund_failed = Signal()
refund_needs_attention = Signal()


def send_refund_signals(refund: Refund, decision: Decision, *, using: str | None = None) -> None:
    """Queue the signals one decision calls for, to be sent when the transaction commits."""
    old_status, new_status, attention = decision.old_status, decision.new_status, decision.attention
    if old_status == new_status and attention is None:
        return

    def send() -> None:
        sender = type(refund)
        if old_status != new_status:
            _send(
                refund_status_changed, sender, refund, old_status=old_status, new_status=new_status
            )
            if new_status == Status.SUCCESS and not decision.amount_mismatch:
                _send(refund_succeeded, sender, refund)
            elif new_status == Status.FAIL:
                _send(refund_failed, sender, refund)
        if attention is not None:
            _send(refund_needs_attention, sender, refund, reason=attention)

    transaction.on_commit(send, using=using)


def _send(signal: Signal, sender: type, refund: Refund, **kwargs: object) -> None:
    for receiver, result in signal.send_robust(sender=sender, refund=refund, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "signal receiver %r failed for transNo=%s: %s",
                receiver,
                refund.trans_no,
                result,
                exc_info=result,
                extra={"trans_no": refund.trans_no},
            )
