"""Applying to HSQ for refunds (``POLYMERIZE_REFUND``): exactly once, never beyond what was paid.

:func:`apply_refund` (also ``Refund.objects.apply``) is the one way the app starts a refund:

1. **Validate** every argument before anything is written or sent (a ``ValueError`` naming it).
2. **Guard the order's total.** In one transaction, the original order's
   :class:`~hsq_refunds.models.PaidOrder` row is locked (created with ``INSERT ... ON CONFLICT
   DO NOTHING`` at the order's first application, then locked, so that on PostgreSQL and
   SQLite alike a second application for the same order waits for the first to commit). What
   the order's refunds that are not ``FAIL`` take (each the larger of the amount asked and the
   amount HSQ reported), plus the new amount, may not exceed what was paid, and a refund of
   the order whose amount is not known yet blocks a new one
   (:class:`~hsq_refunds.exceptions.RefundRefused`); the paid amount must be the one given
   before for that order.
3. **Write first.** The refund row is written ``queued`` (``application="queued"``, nothing
   sent) and is the order's claim on the money: the next application for the order counts it.
4. **Send once, after commit.** Outside a transaction the row is committed at once and sent
   at once. Inside a caller's transaction (``atomic()``, ``ATOMIC_REQUESTS``) it is written in
   that transaction and sent only when it commits (``transaction.on_commit``): a rollback
   leaves nothing written and nothing sent. Before the request goes out, one conditional
   ``UPDATE`` moves the row from ``queued`` to ``sending`` and counts the send; only the
   writer whose ``UPDATE`` changed the row sends. A process that dies before that ``UPDATE``
   leaves a ``queued`` row, provably unsent, which the next sync run sends (once); one that
   dies after it leaves a ``sending`` row, which may have reached HSQ and is never sent again
   by the app: it is queried by transNo, and flagged ``not_received`` if HSQ still does not
   know it after ``NOT_FOUND_GRACE``, for a person to send again (:func:`send_again`).
5. **Record the answer** through the same rules (:func:`~hsq_refunds.rules.decide_application`)
   and the same locked write as a query's or a notification's. A timeout or any answer that
   cannot be verified leaves the outcome unknown (``unknown``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext, ngettext

from .choices import Application, Source, Status
from .clients import get_client
from .conf import HsqRefundsSettings, get_settings
from .exceptions import RefundRefused
from .gateway import (
    HsqClient,
    HsqError,
    InvalidRequestError,
    RefundApplyResult,
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
from .models import PaidOrder, Refund
from .models import _resolve_merchant as resolve_merchant
from .money import format_fen
from .recording import record_answer
from .rules import decide_application
from .signals import refund_applied

__all__ = ["OrderBalance", "apply_refund", "balance_of", "send_again"]

logger = logging.getLogger("hsq_refunds.apply")


class OrderBalance:
    """What one original order was paid, and what its refunds already take of it."""

    def __init__(self, paid: int | None, taken: int, unknown: tuple[str, ...] = ()) -> None:
        self.paid = paid  # None: the app has not applied against this order yet
        self.taken = taken  # refunds not FAIL: refunded, or in flight
        #: transNos of the order's refunds (not FAIL) whose amount is not known yet: until each
        #: is refreshed or given its amount, no new refund of the order can be applied for.
        self.unknown = unknown

    @property
    def left(self) -> int | None:
        """What can still be refunded; ``None`` while the paid amount or a refund's amount
        is not known."""
        if self.paid is None or self.unknown:
            return None
        return self.paid - self.taken

    def __repr__(self) -> str:
        return f"OrderBalance(paid={self.paid!r}, taken={self.taken!r}, unknown={self.unknown!r})"


def balance_of(merchant_no: str, orig_trans_no: str) -> OrderBalance:
    """The paid amount the app knows for this order, and what its refunds that are not
    ``FAIL`` take of it (see :func:`apply_refund`)."""
    order = PaidOrder.objects.filter(merchant_no=merchant_no, orig_trans_no=orig_trans_no).first()
    return OrderBalance(
        order.amount if order else None,
        _taken(merchant_no, orig_trans_no),
        _unknown_amounts(merchant_no, orig_trans_no),
    )


def _order_refunds(merchant_no: str, orig_trans_no: str) -> QuerySet[Refund]:
    return Refund.objects.filter(merchant_no=merchant_no, orig_trans_no=orig_trans_no).exclude(
        status=Status.FAIL
    )


def _taken(merchant_no: str, orig_trans_no: str) -> int:
    """Fen taken of the order: per refund that is not ``FAIL``, the larger of the amount asked
    and the amount HSQ reported (a refund HSQ paid more than asked takes what HSQ paid)."""
    total = 0
    for amount, reported in _order_refunds(merchant_no, orig_trans_no).values_list(
        "amount", "reported_amount"
    ):
        total += max(amount or 0, reported or 0)
    return total


def _unknown_amounts(merchant_no: str, orig_trans_no: str) -> tuple[str, ...]:
    rows = _order_refunds(merchant_no, orig_trans_no).filter(
        amount__isnull=True, reported_amount__isnull=True
    )
    return tuple(rows.order_by("applied_at", "pk").values_list("trans_no", flat=True)[:10])


def unknown_amounts_message(orig_trans_no: str, trans_nos: tuple[str, ...]) -> str:
    """Why a refund of the order cannot be applied for while these refunds' amounts are not
    known, and what to do (shown by :func:`apply_refund` and the admin alike)."""
    return ngettext(
        "Refund %(trans_nos)s of order %(order)s has no known amount yet, so what is left of "
        "the order cannot be known. Refresh it (HSQ reports its amount), or enter its amount "
        "on its page; then apply again.",
        "Refunds %(trans_nos)s of order %(order)s have no known amount yet, so what is left of "
        "the order cannot be known. Refresh them (HSQ reports their amounts), or enter their "
        "amounts on their pages; then apply again.",
        len(trans_nos),
    ) % {"trans_nos": ", ".join(trans_nos), "order": orig_trans_no}


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
    only configured merchant; ``refund_type`` to ``REFUND_TYPE``.

    Outside a transaction the application is sent at once and the refund returned as recorded
    after HSQ's answer: ``application`` says whether HSQ answered (``accepted``), refused
    (``refused``, ``status`` ``FAIL`` with HSQ's code and message) or could not be heard
    (``unknown``: it is queried like any refund). Inside a caller's transaction (``atomic()``,
    ``ATOMIC_REQUESTS``) the refund is written in that transaction and returned ``queued``
    (nothing sent yet); it is sent once the transaction commits, and nothing is sent if it
    rolls back. HSQ's answer is then recorded on the row (``refresh_from_db()`` shows it).

    Raises ``ValueError`` naming the argument for bad input, and
    :class:`~hsq_refunds.exceptions.RefundRefused` when the order's refunds would exceed what was
    paid, a refund of the order has no known amount yet, or ``orig_amount`` disagrees with the
    amount given before; in each case nothing is written or sent. ``refund_applied`` is sent
    once the answer is recorded.
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
    get_client(merchant_no)  # a configuration error raises before anything is written

    refund = _write_first(
        merchant_no=merchant_no,
        trans_no=trans_no,
        orig_trans_no=orig_trans_no,
        orig_amount=orig_amount,
        amount=amount,
        reason=reason,
        extend=extend,
        refund_type=refund_type,
    )
    if in_caller_transaction():
        pk = refund.pk
        transaction.on_commit(lambda: _send_committed(pk), robust=True)
        logger.info("transNo=%s written; sent when the caller's transaction commits", trans_no)
        return refund
    sent = _send_committed(refund.pk)
    return sent if sent is not None else Refund.objects.get(pk=refund.pk)


def send_again(
    refund: Refund, *, refund_type: int | None = None, confirmed_attempts: int | None = None
) -> Refund:
    """Send the same application again (same transNo), as a person decides to from the admin.

    Only for a refund the app applied for whose arrival HSQ never confirmed (``sending`` or
    ``unknown``, not final). ``confirmed_attempts`` is the number of applications sent that the
    person saw when confirming (default: ``refund.apply_attempts`` as given): it is sent only if
    that is still the count, in one conditional ``UPDATE``, so that of several confirmations
    of one page exactly one sends; the others get a ``ValueError`` saying it was sent already.
    A refusal of this second application is recorded but does not make the refund ``FAIL``:
    the first one may have arrived after all (HSQ's answer to a repeated transNo is not
    public), so its queries decide.

    Sends at once, so it refuses to run inside a transaction
    (``TransactionManagementError``): a rollback would undo the count of a send that happened.
    """
    refuse_caller_transaction("send_again()")
    policy = get_settings()
    expected = refund.apply_attempts if confirmed_attempts is None else confirmed_attempts
    client = get_client(refund.merchant_no)
    refund_type = policy.REFUND_TYPE if refund_type is None else refund_type
    refund_type = _checked(check_refund_type, refund_type, "refund_type")
    _before_count(refund)
    now = timezone.now()
    counted = (
        Refund.objects.filter(
            pk=refund.pk,
            apply_attempts=expected,
            application__in=(Application.SENDING, Application.UNKNOWN),
        )
        .exclude(status__in=(Status.SUCCESS, Status.FAIL))
        .update(
            apply_attempts=F("apply_attempts") + 1,
            version=F("version") + 1,
            updated_at=now,
        )
    )
    if not counted:
        current = Refund.objects.filter(pk=refund.pk).first()
        if current is not None and current.apply_attempts != expected:
            raise ValueError(
                gettext("The application of refund %(trans_no)s was just sent by someone else.")
                % {"trans_no": refund.trans_no}
            )
        raise ValueError(
            gettext("Refund %(trans_no)s is not waiting for its application to be confirmed.")
            % {"trans_no": refund.trans_no}
        )
    current = Refund.objects.get(pk=refund.pk)
    logger.warning("transNo=%s: application sent again by a person", current.trans_no)
    return _send(client, current, policy, refund_type=refund_type, first=False)


def send_queued(refunds: Q | None = None, *, limit: int | None = None) -> int:
    """Send the applications left ``queued`` (written, never sent: their process died between
    the caller's commit and the send), each once; returns how many this call sent.

    The sync run calls it first (``manage.py sync_refunds``, the admin, the django-q2 tasks).
    Sends at once, so it refuses to run inside a transaction (``TransactionManagementError``):
    the count of a send must be committed before the request goes out.
    """
    refuse_caller_transaction("send_queued()")
    rows = Refund.objects.filter(application=Application.QUEUED)
    if refunds is not None:
        rows = rows.filter(refunds)
    ids = list(rows.order_by("id").values_list("id", flat=True)[:limit])
    sent = 0
    for pk in ids:
        try:
            if _send_queued(pk) is not None:
                sent += 1
        except HsqError as exc:  # the merchant is no longer configured: left queued, said so
            logger.error("queued application %s not sent: %s", pk, exc.kind)
    if sent:
        logger.warning("sent %d queued applications left by an earlier process", sent)
    return sent


def in_caller_transaction() -> bool:
    """Whether the default database is inside a transaction of the caller's (``atomic()``,
    ``ATOMIC_REQUESTS``; a test case's own transaction does not count)."""
    connection = transaction.get_connection()
    return connection.in_atomic_block and any(
        not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks
    )


def refuse_caller_transaction(what: str) -> None:
    """Raise ``TransactionManagementError`` inside a caller's transaction, naming ``what`` and
    the fix: for the entry points that send to HSQ at once or must commit as they go."""
    if in_caller_transaction():
        raise transaction.TransactionManagementError(
            f"{what} cannot run inside a transaction (atomic() or ATOMIC_REQUESTS): what it "
            "sends to HSQ must be counted in a committed row first, or a rollback would undo "
            "the count of a request already sent. Call it outside the transaction, or mark "
            "the view @transaction.non_atomic_requests."
        )


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
    *,
    merchant_no: str,
    trans_no: str,
    orig_trans_no: str,
    orig_amount: int,
    amount: int,
    reason: str,
    extend: str,
    refund_type: int,
) -> Refund:
    """Write the refund row ``queued`` under the order's lock, or refuse; nothing is sent here.

    In its own transaction, or a savepoint of the caller's."""
    now = timezone.now()
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
            unknown = _unknown_amounts(merchant_no, orig_trans_no)
            if unknown:
                _refuse(
                    unknown_amounts_message(orig_trans_no, unknown),
                    merchant_no,
                    orig_trans_no,
                    paid=order.amount,
                    asked=amount,
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
                refund_type=refund_type,
                application=Application.QUEUED,
                applied_at=now,
                next_query_at=None,  # not asked about before it is sent
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

    Created with ``INSERT ... ON CONFLICT DO NOTHING`` (so that two first applications racing
    make no unique-constraint error, not even in PostgreSQL's log), then locked by an
    ``UPDATE`` (a row lock on PostgreSQL, the write lock on SQLite) before the order's refunds
    are added up, so that two applications for one order are decided one after the other.
    """
    now = timezone.now()
    orders = PaidOrder.objects.filter(merchant_no=merchant_no, orig_trans_no=orig_trans_no)
    if not orders.update(locked_at=now):
        PaidOrder.objects.bulk_create(
            [
                PaidOrder(
                    merchant_no=merchant_no,
                    orig_trans_no=orig_trans_no,
                    amount=orig_amount,
                    locked_at=now,
                )
            ],
            ignore_conflicts=True,
        )
        orders.update(locked_at=now)  # ours, or a concurrent application's: wait for its lock
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


def _committed(pk: int) -> None:
    """Runs once the queued row is committed, before it is counted as sent (a test seam)."""


def _before_count(refund: Refund) -> None:
    """Runs before the conditional ``UPDATE`` that counts a send again (a test seam)."""


def _before_send(refund: Refund) -> None:
    """Runs once the send is counted (``sending``) and before the request goes out (a test
    seam)."""


def _after_send(refund: Refund) -> None:
    """Runs after HSQ answered and before the answer is written (a test seam)."""


def _send_committed(pk: int) -> Refund | None:
    """What :func:`apply_refund` does once its row is committed (at once, or on the caller's
    commit): send it."""
    _committed(pk)
    return _send_queued(pk)


def _send_queued(pk: int) -> Refund | None:
    """Count the first send of a ``queued`` application and send it; ``None`` if another
    writer counted it first (a sync run, the commit hook of the same application)."""
    policy = get_settings()
    now = timezone.now()
    delay = policy.NOTIFY_FIRST_QUERY_DELAY if policy.NOTIFY_URL else policy.FIRST_QUERY_DELAY
    # The one conditional UPDATE that decides who sends: queued -> sending, counted.
    counted = Refund.objects.filter(pk=pk, application=Application.QUEUED, apply_attempts=0).update(
        application=Application.SENDING,
        apply_attempts=1,
        applied_at=now,
        next_query_at=now + timedelta(seconds=delay),
        updated_at=now,
        version=F("version") + 1,
    )
    if not counted:
        logger.info("queued application %s was sent by another writer", pk)
        return None
    refund = Refund.objects.get(pk=pk)
    client = get_client(refund.merchant_no)
    refund_type = policy.REFUND_TYPE if refund.refund_type is None else refund.refund_type
    return _send(client, refund, policy, refund_type=refund_type, first=True)


def _send(
    client: HsqClient, refund: Refund, policy: HsqRefundsSettings, *, refund_type: int, first: bool
) -> Refund:
    """Send an application whose send was counted, and record HSQ's answer."""
    _before_send(refund)
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
    recorded, decision = record_answer(
        refund,
        lambda current: decide_application(
            current, reply, now=timezone.now(), policy=policy, first=first
        ),
        source=Source.APPLICATION,
        at=sent_at,
    )
    _log(recorded, reply, decision.outcome if decision else "")
    transaction.on_commit(lambda: refund_applied.send_robust(sender=Refund, refund=recorded))
    return recorded


def _log(refund: Refund, reply: RefundApplyResult | BaseException, outcome: str) -> None:
    if outcome == "superseded":
        logger.info(
            "transNo=%s: the application's answer came after a newer one (%s); recorded only",
            refund.trans_no,
            refund.status,
        )
    elif isinstance(reply, RefundApplyResult):
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
