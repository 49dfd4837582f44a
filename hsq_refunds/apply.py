"""Applying to HSQ for refunds (``POLYMERIZE_REFUND``): exactly once, never beyond what was paid.

:func:`apply_refund` (also ``Refund.objects.apply``) is the one way the app starts a refund:

1. **Validate** every argument before anything is written or sent (a ``ValueError`` naming it).
2. **Guard the order's total.** In one transaction, the original order's
   :class:`~hsq_refunds.models.PaidOrder` row is locked (written first, so that on PostgreSQL and
   SQLite alike a second application for the same order waits for the first to commit); the
   refunds of the order that are not ``FAIL``, plus the new amount, may not exceed what was paid
   (:class:`~hsq_refunds.exceptions.RefundRefused`), and the paid amount must be the one given
   before for that order.
3. **Write first.** The refund row is committed with ``application="sending"`` before anything
   is sent, so a process that dies at any later point leaves a row, and the row is the order's
   claim on the money: the next application for the order counts it.
4. **Send once.** The request is sent once (the client never repeats an application, see
   :meth:`~hsq_refunds.gateway.HsqClient.apply_refund`), and the answer goes through the same
   rules and the same conditional write as a query's. A timeout or any answer that cannot be
   verified leaves the outcome unknown: the refund is queried by transNo like any tracked refund
   and is never sent again by the app. If HSQ still does not know it after ``NOT_FOUND_GRACE``,
   the refund is flagged (``not_received``) and a person may send the same application again
   (:func:`send_again`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone
from django.utils.translation import gettext

from .conf import HsqRefundsSettings, get_client, get_settings
from .exceptions import RefundRefused
from .gateway import (
    GatewayError,
    HsqClient,
    HsqError,
    InvalidRequestError,
    RefundApplyResult,
    RefundQueryResult,
    RefundStatus,
    check_trans_no,
    new_trans_no,
)
from .gateway.validation import (
    EXTEND_MAX_LENGTH,
    REFUND_REASON_MAX_LENGTH,
    check_amount,
    check_refund_type,
    check_text,
)
from .models import Application, PaidOrder, Refund, Source, record_answer
from .models import _resolve_merchant as resolve_merchant
from .money import format_fen
from .rules import Decision, Status, decide
from .signals import refund_applied

__all__ = ["OrderBalance", "apply_refund", "balance_of", "send_again"]

logger = logging.getLogger("hsq_refunds.apply")


class OrderBalance:
    """What one original order was paid, and what its refunds already take of it."""

    def __init__(self, paid: int | None, taken: int) -> None:
        self.paid = paid  # None: the app has not applied against this order yet
        self.taken = taken  # refunds not FAIL: refunded, or in flight

    @property
    def left(self) -> int | None:
        return None if self.paid is None else self.paid - self.taken

    def __repr__(self) -> str:
        return f"OrderBalance(paid={self.paid!r}, taken={self.taken!r})"


def balance_of(merchant_no: str, orig_trans_no: str) -> OrderBalance:
    """The paid amount the app knows for this order, and its refunds that are not ``FAIL``."""
    order = PaidOrder.objects.filter(merchant_no=merchant_no, orig_trans_no=orig_trans_no).first()
    return OrderBalance(order.amount if order else None, _taken(merchant_no, orig_trans_no))


def _taken(merchant_no: str, orig_trans_no: str) -> int:
    total = (
        Refund.objects.filter(merchant_no=merchant_no, orig_trans_no=orig_trans_no)
        .exclude(status=Status.FAIL)
        .aggregate(total=Sum("amount"))["total"]
    )
    return int(total or 0)


def apply_refund(
    *,
    orig_trans_no: str,
    orig_amount: int,
    amount: int,
    reason: str = "",
    trans_no: str | None = None,
    merchant_no: str | None = None,
    extend: str = "",
    refund_type: int | None = None,
) -> Refund:
    """Apply to HSQ for a refund of ``amount`` fen of the paid order ``orig_trans_no``.

    ``orig_amount`` is what the customer paid for that order (fen), ``amount`` what to refund
    now (partial refunds are fine); ``trans_no`` the refund's own order number (generated when
    ``None``: ``TRANS_NO_PREFIX``, Beijing time, random digits); ``merchant_no`` defaults to the
    only configured merchant; ``refund_type`` to ``REFUND_TYPE``. Returns the refund as recorded
    after HSQ's answer: ``application`` says whether HSQ answered (``accepted``), refused
    (``refused``, ``status`` ``FAIL`` with HSQ's code and message) or could not be heard
    (``unknown``: it is queried like any refund).

    Raises ``ValueError`` naming the argument for bad input, and
    :class:`~hsq_refunds.exceptions.RefundRefused` when the order's refunds would exceed what was
    paid or ``orig_amount`` disagrees with the amount given before; in both cases nothing is
    written or sent. ``refund_applied`` is sent once the answer is recorded.
    """
    policy = get_settings()
    merchant_no = resolve_merchant(merchant_no)
    orig_trans_no = _checked(check_trans_no, orig_trans_no, "orig_trans_no")
    trans_no = new_trans_no(policy.TRANS_NO_PREFIX) if trans_no is None else trans_no
    trans_no = _checked(check_trans_no, trans_no, "trans_no")
    orig_amount = _checked(check_amount, orig_amount, "orig_amount")
    amount = _checked(check_amount, amount, "amount")
    if amount > orig_amount:
        raise ValueError(f"amount ({amount} fen) must not exceed orig_amount ({orig_amount} fen)")
    reason = _checked(_text(REFUND_REASON_MAX_LENGTH), reason, "reason")
    extend = _checked(_text(EXTEND_MAX_LENGTH), extend, "extend")
    refund_type = policy.REFUND_TYPE if refund_type is None else refund_type
    refund_type = _checked(check_refund_type, refund_type, "refund_type")
    client = get_client(merchant_no)  # a configuration error raises before anything is written

    refund = _write_first(
        policy,
        merchant_no=merchant_no,
        trans_no=trans_no,
        orig_trans_no=orig_trans_no,
        orig_amount=orig_amount,
        amount=amount,
        reason=reason,
        extend=extend,
    )
    return _send(client, refund, policy, refund_type=refund_type, first=True)


def send_again(refund: Refund, *, refund_type: int | None = None) -> Refund:
    """Send the same application again (same transNo), as a person decides to from the admin.

    Only for a refund the app applied for whose arrival HSQ never confirmed (``sending`` or
    ``unknown``, not final). A refusal of this second application is recorded but does not make
    the refund ``FAIL``: the first one may have arrived after all (HSQ's answer to a repeated
    transNo is not public), so its queries decide.
    """
    policy = get_settings()
    refund = Refund.objects.get(pk=refund.pk)
    if refund.application not in (Application.SENDING, Application.UNKNOWN) or refund.is_final:
        raise ValueError(
            gettext("Refund %(trans_no)s is not waiting for its application to be confirmed.")
            % {"trans_no": refund.trans_no}
        )
    client = get_client(refund.merchant_no)
    refund_type = policy.REFUND_TYPE if refund_type is None else refund_type
    logger.warning("transNo=%s: application sent again by a person", refund.trans_no)
    return _send(client, refund, policy, refund_type=refund_type, first=False)


# --------------------------------------------------------------------------- the steps


_T = TypeVar("_T")


def _checked(check: Callable[[object, str], _T], value: object, name: str) -> _T:
    """The gateway's own check of an argument; its error is the caller's ``ValueError``."""
    try:
        return check(value, name)
    except InvalidRequestError as exc:
        raise ValueError(exc.message) from None


def _text(max_length: int) -> Callable[[object, str], str]:
    return lambda value, name: check_text(value, name, max_length=max_length)


def _write_first(
    policy: HsqRefundsSettings,
    *,
    merchant_no: str,
    trans_no: str,
    orig_trans_no: str,
    orig_amount: int,
    amount: int,
    reason: str,
    extend: str,
) -> Refund:
    """Commit the refund row under the order's lock, or refuse; nothing is sent here."""
    now = timezone.now()
    notify = bool(policy.NOTIFY_URL)
    delay = policy.NOTIFY_FIRST_QUERY_DELAY if notify else policy.FIRST_QUERY_DELAY
    try:
        with transaction.atomic():
            order = _lock_order(merchant_no, orig_trans_no, orig_amount)
            if order.amount != orig_amount:
                _refuse(
                    gettext(
                        "Order %(order)s was paid %(paid)s as given before, not %(given)s; no "
                        "refund was applied for."
                    )
                    % {
                        "order": orig_trans_no,
                        "paid": format_fen(order.amount),
                        "given": format_fen(orig_amount),
                    },
                    merchant_no,
                    orig_trans_no,
                )
            taken = _taken(merchant_no, orig_trans_no)
            if taken + amount > order.amount:
                _refuse(
                    gettext(
                        "Order %(order)s was paid %(paid)s; %(taken)s of it is already refunded "
                        "or in flight, so %(asked)s more cannot be refunded."
                    )
                    % {
                        "order": orig_trans_no,
                        "paid": format_fen(order.amount),
                        "taken": format_fen(taken),
                        "asked": format_fen(amount),
                    },
                    merchant_no,
                    orig_trans_no,
                    paid=order.amount,
                    taken=taken,
                    asked=amount,
                )
            return Refund.objects.create(
                merchant_no=merchant_no,
                trans_no=trans_no,
                orig_trans_no=orig_trans_no,
                orig_amount=orig_amount,
                amount=amount,
                reason=reason,
                extend=extend,
                application=Application.SENDING,
                applied_at=now,
                next_query_at=now + timedelta(seconds=delay),
            )
    except IntegrityError:
        if Refund.objects.filter(merchant_no=merchant_no, trans_no=trans_no).exists():
            raise ValueError(
                gettext("A refund with transNo %(trans_no)s already exists.")
                % {"trans_no": trans_no}
            ) from None
        raise


def _lock_order(merchant_no: str, orig_trans_no: str, orig_amount: int) -> PaidOrder:
    """The order's row, created at the first application, locked until the transaction ends.

    An ``UPDATE`` takes the lock (a row lock on PostgreSQL, the write lock on SQLite) before the
    order's refunds are added up, so two applications for one order are decided one after
    the other.
    """
    orders = PaidOrder.objects.filter(merchant_no=merchant_no, orig_trans_no=orig_trans_no)
    if not orders.update(locked_at=timezone.now()):
        try:
            with transaction.atomic():
                PaidOrder.objects.create(
                    merchant_no=merchant_no,
                    orig_trans_no=orig_trans_no,
                    amount=orig_amount,
                    locked_at=timezone.now(),
                )
        except IntegrityError:  # created by a concurrent application: wait for its lock
            orders.update(locked_at=timezone.now())
    return orders.select_for_update().get()


def _refuse(
    message: str,
    merchant_no: str,
    orig_trans_no: str,
    *,
    paid: int | None = None,
    taken: int | None = None,
    asked: int | None = None,
) -> None:
    logger.warning(
        "refund refused before sending: merchantNo=%s origTransNo=%s paid=%s taken=%s asked=%s",
        merchant_no,
        orig_trans_no,
        paid,
        taken,
        asked,
    )
    raise RefundRefused(message, orig_trans_no=orig_trans_no, paid=paid, taken=taken, asked=asked)


def _before_send(refund: Refund) -> None:
    """Runs after the row is committed and before the request goes out (a test seam)."""


def _after_send(refund: Refund) -> None:
    """Runs after HSQ answered and before the answer is written (a test seam)."""


def _send(
    client: HsqClient, refund: Refund, policy: HsqRefundsSettings, *, refund_type: int, first: bool
) -> Refund:
    _before_send(refund)
    # Counting the send is its guard: of two requests that read the same count (two clicks on
    # "send again"), only one gets to send.
    counted = Refund.objects.filter(pk=refund.pk, apply_attempts=refund.apply_attempts).update(
        apply_attempts=F("apply_attempts") + 1
    )
    if not counted:
        raise ValueError(
            gettext("The application of refund %(trans_no)s was just sent by someone else.")
            % {"trans_no": refund.trans_no}
        )
    refund.apply_attempts += 1
    sent_at = timezone.now()
    try:
        reply: RefundApplyResult | BaseException = client.apply_refund(
            trans_no=refund.trans_no,
            orig_trans_no=refund.orig_trans_no,
            orig_amount=refund.orig_amount or refund.amount or 0,
            amount=refund.amount or 0,
            reason=refund.reason,
            refund_type=refund_type,
            return_url=policy.NOTIFY_URL or None,
            extend=refund.extend,
        )
    except HsqError as exc:
        reply = exc
    _after_send(refund)
    refund, _decision = record_answer(
        refund,
        lambda current: _decide(current, reply, policy, first=first),
        source=Source.APPLICATION,
        at=sent_at,
    )
    _log(refund, reply)
    transaction.on_commit(lambda: refund_applied.send_robust(sender=Refund, refund=refund))
    return refund


def _decide(
    refund: Refund,
    reply: RefundApplyResult | BaseException,
    policy: HsqRefundsSettings,
    *,
    first: bool,
) -> Decision:
    """The application's answer through the query's rules, and what it says of the application."""
    now = timezone.now()
    if isinstance(reply, RefundApplyResult):
        decision = decide(refund, _as_query_result(refund, reply), now=now, policy=policy)
        application = Application.ACCEPTED
    elif isinstance(reply, GatewayError) and reply.signed and first:
        return _refused(refund, reply, now)
    else:
        # Unknown outcome: the refund is asked about by transNo, the application never resent.
        decision = decide(refund, reply, now=now, policy=policy)
        application = Application.UNKNOWN
    _not_sooner(decision, refund)
    if refund.application in (Application.SENDING, Application.UNKNOWN):
        decision.changes.setdefault("application", application)
    decision.changes.pop("last_queried_at", None)
    decision.changes.pop("query_count", None)
    return decision


def _not_sooner(decision: Decision, refund: Refund) -> None:
    """The first query waits ``FIRST_QUERY_DELAY`` (``NOTIFY_FIRST_QUERY_DELAY`` with a
    ``returnUrl``) whatever the application's answer says, so that a notification can come
    first; a final answer still ends the queries."""
    scheduled = decision.changes.get("next_query_at")
    if scheduled is not None and refund.next_query_at is not None:
        decision.changes["next_query_at"] = max(scheduled, refund.next_query_at)


def _refused(refund: Refund, error: GatewayError, now: datetime) -> Decision:
    """A signed refusal of the first application: the refund failed, with HSQ's words."""
    changes = {
        "updated_at": now,
        "status": Status.FAIL,
        "application": Application.REFUSED,
        "resp_code": error.code,
        "resp_msg": error.error_msg,
        "finished_at": now,
        "next_query_at": None,
    }
    return Decision(
        outcome="gateway_error",
        old_status=refund.status,
        new_status=Status.FAIL,
        changes=changes,
        log={
            "outcome": "gateway_error",
            "error_type": error.kind,
            "error_code": error.code,
            "error_message": error.error_msg,
        },
        queried=False,
    )


def _as_query_result(refund: Refund, result: RefundApplyResult) -> RefundQueryResult:
    """The application's verified result in the shape of a query's (it has no origTransNo nor
    extend: the refund's own are kept)."""
    return RefundQueryResult(
        merchant_no=result.merchant_no,
        trans_no=result.trans_no,
        status=RefundStatus(result.status) if result.status else None,
        resp_code=result.resp_code,
        resp_msg=result.resp_msg,
        orig_trans_no=refund.orig_trans_no,
        trade_no=result.trade_no,
        amount=result.amount,
        finished_at=result.finished_at,
        extend=refund.extend,
        raw_result=result.raw_result,
        sign=result.sign,
    )


def _log(refund: Refund, reply: RefundApplyResult | BaseException) -> None:
    if isinstance(reply, RefundApplyResult):
        logger.info(
            "transNo=%s applied: status=%s respCode=%s",
            refund.trans_no,
            refund.status,
            reply.resp_code,
        )
    elif refund.application == Application.REFUSED:
        logger.warning("transNo=%s refused by HSQ: %s", refund.trans_no, refund.resp_code)
    else:
        logger.warning(
            "transNo=%s: application outcome unknown (%s); it is queried, not sent again",
            refund.trans_no,
            getattr(reply, "kind", type(reply).__name__),
        )
