"""The rows: :class:`Refund` (one refund at HSQ and its sync bookkeeping) and
:class:`RefundQuery` (one audit row per query).

What an answer from HSQ may change lives in :mod:`hsq_refunds.rules`; the engine that asks and
writes is :mod:`hsq_refunds.sync`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.db import connections, models, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q, sql
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .columns import (
    CODE_LENGTH,
    ERROR_CODE_LENGTH,
    ERROR_TYPE_LENGTH,
    MERCHANT_NO_LENGTH,
    REASON_LENGTH,
    RESP_MSG_LENGTH,
    STATUS_LENGTH,
    TOKEN_LENGTH,
    TRADE_NO_LENGTH,
    TRANS_NO_LENGTH,
    storable,
)
from .conf import default_merchant_no, get_settings, merchant_numbers
from .gateway import InvalidRequestError, check_trans_no
from .gateway.validation import REFUND_REASON_MAX_LENGTH
from .money import fen_to_yuan
from .rules import (
    FINAL_STATUSES,
    Application,
    AttentionReason,
    Decision,
    Outcome,
    Source,
    Status,
)
from .signals import send_refund_signals

__all__ = [
    "AnsweredRefund",
    "Application",
    "AttentionReason",
    "Outcome",
    "PaidOrder",
    "Refund",
    "RefundQuery",
    "Source",
    "Status",
    "record_answer",
    "validate_trans_no",
    "write_answers",
]

#: Kept for code that imported it from here; the width lives in :mod:`hsq_refunds.columns`.
TRANS_NO_MAX_LENGTH = TRANS_NO_LENGTH
_OPEN_STATUSES = [s for s in Status.values if s not in FINAL_STATUSES]
_PRUNE_BATCH = 10_000


def validate_trans_no(trans_no: object) -> str:
    """The one rule for a refund's transNo: what the gateway accepts (1 to 64 characters of
    text, no control characters), and no spaces around it, which no one could see in the admin.

    Returns it, or raises ``ValueError`` with a translated message. :func:`trans_no_validator`
    is the same rule as a model-field validator (the admin's forms use it).
    """
    if not isinstance(trans_no, str):
        raise ValueError(gettext("transNo must be text."))
    try:
        check_trans_no(trans_no)
    except InvalidRequestError:
        if not 1 <= len(trans_no) <= TRANS_NO_LENGTH:
            raise ValueError(
                gettext("transNo must be 1 to %(max)d characters.") % {"max": TRANS_NO_LENGTH}
            ) from None
        raise ValueError(_bad_characters(trans_no)) from None
    if trans_no != trans_no.strip():
        raise ValueError(_bad_characters(trans_no))
    return trans_no


def _bad_characters(trans_no: str) -> str:
    return gettext("transNo %(trans_no)r has surrounding spaces or control characters.") % {
        "trans_no": trans_no
    }


def trans_no_validator(value: object) -> None:
    """:func:`validate_trans_no` for model fields and forms."""
    try:
        validate_trans_no(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_trans_no") from None


def _resolve_merchant(merchant_no: str | None) -> str:
    configured = merchant_numbers()
    if merchant_no is None:
        default = default_merchant_no()
        if default is None:
            raise ValueError(
                gettext('No merchant is configured in HSQ_REFUNDS["MERCHANTS"].')
                if not configured
                else gettext("Several merchants are configured; give the merchant number.")
            )
        return default
    if merchant_no not in configured:
        raise ValueError(
            gettext('Merchant %(merchant_no)r is not configured in HSQ_REFUNDS["MERCHANTS"].')
            % {"merchant_no": merchant_no}
        )
    return merchant_no


class RefundQuerySet(models.QuerySet["Refund"]):
    """Selections of refunds, and the claims that keep two syncs from asking about one refund.

    A sync *claims* the refunds it is about to query: ``claim_token`` (unique to the run) and
    ``claimed_until`` (the lease) are set by one conditional ``UPDATE`` of the claimable rows, so
    that of two runs at once only one gets each refund. A claim is given back when the answer
    is written (:func:`write_answers`) or the run ends (:meth:`release`); a run that dies holds
    nothing longer than its lease.
    """

    def due(self, now: datetime | None = None) -> RefundQuerySet:
        """Refunds whose next query time has come (claims not considered)."""
        return self.filter(next_query_at__lte=now or timezone.now())

    def id_pages(self, size: int) -> Iterator[list[int]]:
        """The ids of these refunds in pages of ``size``, keyset-paginated on ``id`` (flat
        memory and constant cost per page at any table size)."""
        last = 0
        while True:
            page = list(self.filter(id__gt=last).order_by("id").values_list("id", flat=True)[:size])
            if page:
                yield page
            if len(page) < size:
                return
            last = page[-1]

    def final(self) -> RefundQuerySet:
        """Refunds in a final state (``SUCCESS`` or ``FAIL``)."""
        return self.filter(status__in=FINAL_STATUSES)

    def claimable(self, now: datetime) -> RefundQuerySet:
        """Refunds no run holds: never claimed, released, or whose lease ran out before ``now``."""
        return self.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))

    def claim(self, token: str, until: datetime) -> int:
        """Claim these refunds for ``token`` until ``until``; returns how many were claimed.

        Narrow the queryset with :meth:`claimable` first: the ``UPDATE`` re-evaluates the whole
        condition, so on PostgreSQL a second run waits for the first and then skips its rows.
        """
        return self.update(claimed_until=until, claim_token=token)

    def claim_and_fetch(self, token: str, until: datetime) -> list[Refund]:
        """:meth:`claim`, and return the refunds claimed as they are now (in no set order).

        One ``UPDATE ... RETURNING`` where the database has it (PostgreSQL, SQLite 3.35+),
        with the same condition as :meth:`claim`, so that two runs at once never both get a
        refund; elsewhere the ids are read first, then claimed, then the rows read back.
        """
        queryset = self.all()
        queryset._for_write = True  # type: ignore[attr-defined]  # as update() does
        using = queryset.db
        connection = connections[using]
        if not _updates_return_rows(connection):
            ids = list(queryset.values_list("pk", flat=True))
            if not ids:
                return []
            queryset.filter(pk__in=ids).claim(token, until)
            return list(Refund.objects.using(using).filter(pk__in=ids).held_by(token))
        query = cast(sql.UpdateQuery, queryset.query.chain(sql.UpdateQuery))
        query.add_update_values({"claimed_until": until, "claim_token": token})
        compiler = query.get_compiler(using)
        update_sql, params = compiler.as_sql()
        if not update_sql:
            return []
        fields = Refund._meta.concrete_fields
        quote = connection.ops.quote_name
        returning = ", ".join(quote(str(field.column)) for field in fields)
        with connection.cursor() as cursor:
            cursor.execute(f"{update_sql} RETURNING {returning}", params)
            rows = cursor.fetchall()
        table = Refund._meta.db_table
        converters = compiler.get_converters([field.get_col(table) for field in fields])
        if converters:
            rows = list(compiler.apply_converters(rows, converters))
        names = [field.attname for field in fields]
        return [Refund.from_db(using, names, row) for row in rows]

    def held_by(self, token: str) -> RefundQuerySet:
        """The refunds ``token`` holds."""
        return self.filter(claim_token=token)

    def release(self, token: str) -> int:
        """Give back what ``token`` holds of these refunds; returns how many."""
        return self.held_by(token).update(claimed_until=None, claim_token="")

    def delete_with_history(self) -> int:
        """Delete these refunds *and* their audit rows, deliberately; returns how many refunds.

        A plain ``delete()`` of a refund with audit rows is refused by the database
        (``PROTECT``): the audit trail is evidence and goes only when asked for by name.
        """
        with transaction.atomic(using=self.db):
            ids = list(self.values_list("pk", flat=True))
            RefundQuery.objects.using(self.db).filter(refund_id__in=ids).delete()
            return (
                Refund.objects.using(self.db)
                .filter(pk__in=ids)
                .delete()[1]
                .get(Refund._meta.label, 0)
            )

    def open(self) -> RefundQuerySet:
        """Refunds not yet in a final state."""
        return self.filter(status__in=_OPEN_STATUSES)

    def needing_attention(self) -> RefundQuerySet:
        return self.filter(needs_attention=True)

    def clear_attention(self) -> int:
        """Mark these refunds as seen by a person; returns how many were flagged."""
        return self.filter(needs_attention=True).update(
            needs_attention=False,
            attention_reason="",
            attention_detail="",
            updated_at=timezone.now(),
        )


class RefundManager(models.Manager.from_queryset(RefundQuerySet)):  # type: ignore[misc]
    def track(
        self,
        trans_no: str,
        merchant_no: str | None = None,
        orig_trans_no: str | None = None,
        amount: int | None = None,
        applied_at: datetime | None = None,
    ) -> Refund:
        """Start tracking a refund just applied for at HSQ; return its row.

        ``trans_no`` is the refund's own merchant order number (1 to 64 characters);
        ``merchant_no`` defaults to the only configured merchant; ``amount`` is the amount
        expected, in fen (HSQ's is taken when not given); ``applied_at`` defaults to now. The
        first query is due ``FIRST_QUERY_DELAY`` after ``applied_at``.

        Idempotent: an existing row for (merchant, transNo) is returned unchanged, also when two
        processes track the same refund at once. Raises ``ValueError`` with a clear message, and
        writes nothing, for an invalid transNo, amount or time or an unknown merchant (and
        :class:`~hsq_refunds.gateway.ConfigurationError` when ``HSQ_REFUNDS`` itself is invalid).
        """
        trans_no = validate_trans_no(trans_no)
        merchant_no = _resolve_merchant(merchant_no)
        if amount is not None and (
            not isinstance(amount, int) or isinstance(amount, bool) or amount < 0
        ):
            raise ValueError(gettext("amount must be a whole number of fen >= 0."))
        if orig_trans_no is not None and (
            not isinstance(orig_trans_no, str) or len(orig_trans_no) > TRANS_NO_LENGTH
        ):
            raise ValueError(
                gettext("origTransNo must be text of at most %(max)d characters.")
                % {"max": TRANS_NO_LENGTH}
            )
        if applied_at is None:
            applied_at = timezone.now()
        elif not isinstance(applied_at, datetime) or timezone.is_naive(applied_at):
            raise ValueError(gettext("applied_at must be a timezone-aware datetime."))
        delay = timedelta(seconds=get_settings().FIRST_QUERY_DELAY)
        refund, _created = self.get_or_create(
            merchant_no=merchant_no,
            trans_no=trans_no,
            defaults={
                "orig_trans_no": orig_trans_no or "",
                "amount": amount,
                "applied_at": applied_at,
                "next_query_at": applied_at + delay,
            },
        )
        return refund

    #: ``Refund.objects.apply(...)`` is :func:`hsq_refunds.apply.apply_refund`: applying is a
    #: service above the models (it imports them), so the app config attaches it on start-up.
    apply: Callable[..., Refund]


class Refund(models.Model):
    """One refund applied for at HSQ, as last verified, and when to ask about it next."""

    Status = Status
    AttentionReason = AttentionReason

    merchant_no = models.CharField(_("merchant number"), max_length=MERCHANT_NO_LENGTH)
    # db_index on the three numbers people search by: on PostgreSQL Django adds a
    # varchar_pattern_ops index beside each, which serves the admin's prefix search.
    trans_no = models.CharField(
        _("refund order number"),
        max_length=TRANS_NO_LENGTH,
        db_index=True,
        validators=[trans_no_validator],
        help_text=_("The transNo the refund was applied for with."),
    )
    orig_trans_no = models.CharField(
        _("original order number"), max_length=TRANS_NO_LENGTH, blank=True, db_index=True
    )
    trade_no = models.CharField(
        _("HSQ trade number"), max_length=TRADE_NO_LENGTH, blank=True, db_index=True
    )
    amount = models.BigIntegerField(
        _("amount (fen)"),
        null=True,
        blank=True,
        help_text=_("The amount expected, in fen; taken from HSQ's first answer when not given."),
    )
    orig_amount = models.BigIntegerField(
        _("paid amount of the original order (fen)"),
        null=True,
        blank=True,
        help_text=_("Given when the app applied for the refund."),
    )
    reason = models.CharField(_("refund reason"), max_length=REFUND_REASON_MAX_LENGTH, blank=True)
    application = models.CharField(
        _("application"),
        max_length=STATUS_LENGTH,
        choices=Application.choices,
        blank=True,
        default=Application.NONE,
        help_text=_("Where the app's own application stands; empty when applied elsewhere."),
    )
    refund_type = models.PositiveSmallIntegerField(
        _("refund type"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("The refundType the application is sent with (REFUND_TYPE when empty)."),
    )
    apply_attempts = models.PositiveSmallIntegerField(
        _("applications sent"),
        default=0,
        help_text=_("How often the application was sent: once, unless a person sent it again."),
    )
    reported_amount = models.BigIntegerField(
        _("amount reported by HSQ (fen)"),
        null=True,
        blank=True,
        help_text=_("Set only when HSQ reports an amount other than the expected one."),
    )
    status = models.CharField(
        _("status"), max_length=STATUS_LENGTH, choices=Status.choices, default=Status.UNKNOWN
    )
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    resp_code = models.CharField(_("response code"), max_length=CODE_LENGTH, blank=True)
    resp_msg = models.CharField(_("response message"), max_length=RESP_MSG_LENGTH, blank=True)
    extend = models.TextField(_("passthrough field"), blank=True)
    last_result = models.TextField(
        _("last verified result"),
        blank=True,
        help_text=_("The last verified answer from HSQ, exactly as signed."),
    )
    final_result = models.TextField(
        _("final verified result"),
        blank=True,
        editable=False,
        help_text=_("The verified answer that made the refund final, exactly as received."),
    )
    final_sign = models.TextField(
        _("final result signature"),
        blank=True,
        editable=False,
        help_text=_("HSQ's signature of the final result: the proof that HSQ said so."),
    )
    final_source = models.CharField(
        _("final result came by"),
        max_length=STATUS_LENGTH,
        blank=True,
        editable=False,
        help_text=_(
            "How the final answer came: a query's or an application's answer (its result "
            "text), or a notification (every field it was signed over, as JSON)."
        ),
    )

    applied_at = models.DateTimeField(_("applied at"), default=timezone.now)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    last_queried_at = models.DateTimeField(_("last queried at"), null=True, blank=True)
    next_query_at = models.DateTimeField(
        _("next query at"),
        null=True,
        blank=True,
        help_text=_("Empty: not asked about again."),
    )
    query_count = models.PositiveIntegerField(_("queries"), default=0)
    error_count = models.PositiveIntegerField(
        _("consecutive errors"), default=0, help_text=_("Failed queries in a row.")
    )
    last_error_type = models.CharField(
        _("last error type"), max_length=ERROR_TYPE_LENGTH, blank=True
    )
    last_error_code = models.CharField(
        _("last error code"), max_length=ERROR_CODE_LENGTH, blank=True
    )
    last_error_message = models.TextField(_("last error message"), blank=True)

    needs_attention = models.BooleanField(_("needs attention"), default=False)
    attention_reason = models.CharField(
        _("attention reason"),
        max_length=REASON_LENGTH,
        choices=AttentionReason.choices,
        blank=True,
    )
    attention_detail = models.TextField(_("attention detail"), blank=True)

    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True, editable=False)
    claim_token = models.CharField(
        _("claim token"), max_length=TOKEN_LENGTH, blank=True, editable=False
    )
    version = models.PositiveIntegerField(
        _("version"),
        default=0,
        editable=False,
        help_text=_("Raised by every write of an answer: writes are conditional on it."),
    )

    objects = RefundManager()

    class Meta:
        verbose_name = _("refund")
        verbose_name_plural = _("refunds")
        ordering = ["-applied_at"]
        permissions = [
            ("refresh_refund", _("Can refresh refund status from HSQ")),
            ("apply_refund", _("Can apply to HSQ for refunds")),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["merchant_no", "trans_no"], name="hsq_refund_merchant_trans_uniq"
            ),
            models.CheckConstraint(
                condition=Q(amount__isnull=True) | Q(amount__gte=0),
                name="hsq_refund_amount_not_negative",
            ),
        ]
        indexes = [
            # "What is due now": a range scan over the few rows that are still asked about,
            # in the order the engine pages through them (keyset on next_query_at, id).
            models.Index(
                fields=["next_query_at", "id"],
                condition=Q(next_query_at__isnull=False),
                name="hsq_refund_due_idx",
            ),
            # "Every unfinished refund" (sync --all) pages by id over the open rows only.
            models.Index(
                fields=["id"], condition=Q(status__in=_OPEN_STATUSES), name="hsq_refund_open_idx"
            ),
            models.Index(
                fields=["id"], condition=Q(error_count__gt=0), name="hsq_refund_errored_idx"
            ),
            models.Index(
                fields=["id"], condition=Q(needs_attention=True), name="hsq_refund_attention_idx"
            ),
            models.Index(fields=["-applied_at"], name="hsq_refund_applied_idx"),
            # Per status by time: the dashboard's counts and amounts per status for a period
            # and the unfinished refunds by age (index-only scans on PostgreSQL: the amount is
            # in the index too), the oldest unfinished refund of each status.
            models.Index(
                fields=["status", "applied_at", "amount"], name="hsq_refund_status_applied_idx"
            ),
            # Applications written in a caller's transaction and not sent yet: the few rows
            # every sync run looks for first.
            models.Index(
                fields=["id"],
                condition=Q(application="queued"),
                name="hsq_refund_queued_idx",
            ),
            # Claims still held: a few rows at any time, however large the table.
            models.Index(
                fields=["claimed_until"],
                condition=Q(claimed_until__isnull=False),
                name="hsq_refund_claimed_idx",
            ),
        ]

    def __str__(self) -> str:
        return self.trans_no

    @property
    def is_final(self) -> bool:
        """``SUCCESS`` or ``FAIL``: HSQ will not change it any more."""
        return self.status in FINAL_STATUSES

    @property
    def amount_yuan(self) -> Decimal | None:
        """The expected amount in yuan, two decimals (``Decimal("12.34")``)."""
        return fen_to_yuan(self.amount)

    @property
    def reported_amount_yuan(self) -> Decimal | None:
        return fen_to_yuan(self.reported_amount)


class PaidOrder(models.Model):
    """An original (paid) order the app applied for refunds against, and what it was paid.

    Its row is the lock that serializes applications for one order, so that the refunds of
    the order that are not ``FAIL`` never add up to more than ``amount``.
    """

    merchant_no = models.CharField(_("merchant number"), max_length=MERCHANT_NO_LENGTH)
    orig_trans_no = models.CharField(_("original order number"), max_length=TRANS_NO_LENGTH)
    amount = models.BigIntegerField(_("paid amount (fen)"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    locked_at = models.DateTimeField(_("last application"), null=True, blank=True)

    class Meta:
        verbose_name = _("paid order")
        verbose_name_plural = _("paid orders")
        constraints = [
            models.UniqueConstraint(
                fields=["merchant_no", "orig_trans_no"], name="hsq_paid_order_uniq"
            ),
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="hsq_paid_order_amount_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.orig_trans_no


class RefundQueryQuerySet(models.QuerySet["RefundQuery"]):
    def prune(self, older_than: timedelta | datetime | None = None) -> int:
        """Delete audit rows older than ``older_than`` (default ``QUERY_LOG_RETENTION_DAYS``).

        ``older_than`` is an age (``timedelta``) or a cutoff time. Deletes in batches so that a
        large table is never locked for long; returns how many rows were deleted (0 when the
        retention setting is ``None`` and no age is given).
        """
        if older_than is None:
            days = get_settings().QUERY_LOG_RETENTION_DAYS
            if days is None:
                return 0
            older_than = timedelta(days=days)
        return _delete_older(self, "queried_at", older_than)


def _delete_older(
    queryset: models.QuerySet[Any], field: str, older_than: timedelta | datetime
) -> int:
    """Delete the rows of ``queryset`` whose ``field`` is before ``older_than`` (an age or a
    cutoff time), :data:`_PRUNE_BATCH` at a time, so that no statement holds many rows
    locked; returns how many were deleted."""
    cutoff = timezone.now() - older_than if isinstance(older_than, timedelta) else older_than
    old = queryset.filter(**{f"{field}__lt": cutoff}).order_by()
    rows = queryset.model._default_manager.using(queryset.db)
    deleted = 0
    while True:
        ids = list(old.values_list("id", flat=True)[:_PRUNE_BATCH])
        if not ids:
            return deleted
        deleted += rows.filter(id__in=ids).delete()[0]


class RefundQuery(models.Model):
    """One query to HSQ about a refund and how it ended: the audit trail."""

    Outcome = Outcome

    refund = models.ForeignKey(
        Refund,
        # Evidence: a refund with audit rows is deleted only through delete_with_history().
        on_delete=models.PROTECT,
        related_name="queries",
        verbose_name=_("refund"),
        db_index=False,  # covered by the (refund, -queried_at) index
    )
    queried_at = models.DateTimeField(_("queried at"), default=timezone.now)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), null=True, blank=True)
    source = models.CharField(
        _("source"), max_length=STATUS_LENGTH, choices=Source.choices, default=Source.QUERY
    )
    outcome = models.CharField(_("outcome"), max_length=REASON_LENGTH, choices=Outcome.choices)
    error_type = models.CharField(_("error type"), max_length=ERROR_TYPE_LENGTH, blank=True)
    error_code = models.CharField(_("error code"), max_length=ERROR_CODE_LENGTH, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    resp_code = models.CharField(_("response code"), max_length=CODE_LENGTH, blank=True)
    status_seen = models.CharField(
        _("status reported"), max_length=STATUS_LENGTH, choices=Status.choices, blank=True
    )
    result = models.TextField(_("verified result"), blank=True)
    sign = models.TextField(_("signature"), blank=True, help_text=_("HSQ's signature of it."))

    objects = RefundQueryQuerySet.as_manager()

    class Meta:
        verbose_name = _("refund query")
        verbose_name_plural = _("refund queries")
        ordering = ["-queried_at", "-id"]
        indexes = [
            models.Index(fields=["refund", "-queried_at"], name="hsq_query_refund_idx"),
            models.Index(fields=["queried_at"], name="hsq_query_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.refund_id} {self.outcome} {self.queried_at:%Y-%m-%d %H:%M:%S}"


# --------------------------------------------------------------------------- the conditional write


@dataclass
class AnsweredRefund:
    """One refund, as it was read, with the decision the rules took on an answer about it."""

    refund: Refund
    decision: Decision
    source: str = Source.QUERY
    at: datetime | None = None
    duration_ms: int | None = None


def _text_widths(model: type[models.Model]) -> dict[str, int | None]:
    """The width of each text field of ``model`` by name (``None``: a text column), cached."""
    widths = _TEXT_WIDTHS.get(model)
    if widths is None:
        widths = {
            field.name: field.max_length
            for field in model._meta.concrete_fields
            if isinstance(field, models.CharField | models.TextField)
        }
        _TEXT_WIDTHS[model] = widths
    return widths


_TEXT_WIDTHS: dict[type[models.Model], dict[str, int | None]] = {}


def storable_changes(model: type[models.Model], changes: dict[str, Any]) -> dict[str, Any]:
    """Field values as the database can hold them: text made :func:`storable` and cut to its
    column (so no answer from the gateway can make a write fail)."""
    widths = _text_widths(model)
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if isinstance(value, str):
            width = widths.get(name)
            if value.isascii() and "\x00" not in value:  # nothing to replace: only cut
                value = value if width is None else value[:width]
            else:
                value = storable(value, width)
        out[name] = value
    return out


def write_answers(answers: Iterable[AnsweredRefund], *, claim_token: str | None = None) -> set[int]:
    """Write decisions to their refunds, each only onto the state it was decided from.

    Every answer comes through here, whether a query's, an application's or a notification's.
    Each refund is written only if its ``version`` is still the one the decision was taken on
    (every write raises it, so a decision taken on a state that changed since is written
    nowhere) and, with ``claim_token``, only if the claim is still the caller's (the write
    releases it); then one ``INSERT`` of the audit rows of the refunds written. One
    transaction: a refund's new state and its audit row are committed together or not at all,
    and the signals are sent after commit, for the refunds written. Returns the ids written.

    On PostgreSQL and SQLite 3.35+ the refunds that change the same fields are written by one
    ``UPDATE ... FROM <their rows> ... RETURNING`` (the rows one JSON parameter, see
    :func:`_rows_source`; the guard on version and claim applies to each row on its own), the
    audit rows by one ``INSERT``; elsewhere, and for a batch naming one refund twice, by one
    ``UPDATE`` per refund and ``bulk_create``. Only the instances of the refunds written are
    changed, and they are put back if the transaction does not commit.
    """
    items = list(answers)
    if not items:
        return set()
    using = router.db_for_write(Refund)
    connection = connections[using]
    planned = [(item, _planned_changes(item, claim_token)) for item in items]
    batched = _updates_return_rows(connection) and len({item.refund.pk for item in items}) == len(
        items
    )
    written: set[int] = set()
    previous: list[tuple[Refund, dict[str, Any]]] = []
    try:
        with transaction.atomic(using=using):
            if batched:
                written = _update_batched(connection, planned, claim_token)
            else:
                written = _update_one_by_one(using, planned, claim_token)
            audit: list[dict[str, Any]] = []
            for item, changes in planned:
                refund = item.refund
                if refund.pk not in written:
                    continue
                # The instance shows what was written (the signals carry it); put back below
                # if the transaction does not commit.
                previous.append((refund, {name: getattr(refund, name) for name in changes}))
                for name, value in changes.items():
                    setattr(refund, name, value)
                audit.append(_audit_values(item))
                send_refund_signals(refund, item.decision, using=using)
            if audit and batched:
                _insert_audit(connection, audit)
            elif audit:
                RefundQuery.objects.using(using).bulk_create(RefundQuery(**row) for row in audit)
    except BaseException:
        for refund, values in previous:
            for name, value in values.items():
                setattr(refund, name, value)
        raise
    return written


def _planned_changes(item: AnsweredRefund, claim_token: str | None) -> dict[str, Any]:
    """The field values one answer writes onto its refund (storable, version raised)."""
    changes = storable_changes(Refund, item.decision.changes)
    changes["version"] = item.refund.version + 1
    if "final_result" in changes:
        changes["final_source"] = item.source
    if claim_token is not None:
        changes.update(claimed_until=None, claim_token="")
    return changes


def _update_one_by_one(
    using: str, planned: list[tuple[AnsweredRefund, dict[str, Any]]], claim_token: str | None
) -> set[int]:
    written: set[int] = set()
    for item, changes in planned:
        refund = item.refund
        guard = Q(pk=refund.pk, version=refund.version)
        if claim_token is not None:
            guard &= Q(claim_token=claim_token)
        # Not written yet: a refund named twice is written at most once (its version moved).
        if refund.pk not in written and Refund.objects.using(using).filter(guard).update(**changes):
            written.add(refund.pk)
    return written


def _updates_return_rows(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``UPDATE ... FROM`` and ``UPDATE ... RETURNING`` can be used on ``connection``."""
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version_info >= (3, 35)
    return False


def _max_parameters(connection: BaseDatabaseWrapper) -> int:
    """How many parameters one statement may carry on ``connection``."""
    if connection.vendor == "sqlite":
        import sqlite3

        connection.ensure_connection()
        try:
            return int(connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
        except (AttributeError, sqlite3.Error):  # Python < 3.11's sqlite3 has no getlimit
            return 999
    return connection.features.max_query_params or 65535


def _update_batched(
    connection: BaseDatabaseWrapper,
    planned: list[tuple[AnsweredRefund, dict[str, Any]]],
    claim_token: str | None,
) -> set[int]:
    """One ``UPDATE`` per set of fields changed (and per statement's worth of parameters)."""
    groups: dict[tuple[str, ...], list[tuple[AnsweredRefund, dict[str, Any]]]] = {}
    for item, changes in planned:
        groups.setdefault(tuple(sorted(changes)), []).append((item, changes))
    room = _max_parameters(connection) - 1
    written: set[int] = set()
    for names, rows in groups.items():
        per_statement = len(rows) if _reads_json_rows(connection) else room // (len(names) + 2)
        per_statement = max(1, per_statement)
        for start in range(0, len(rows), per_statement):
            written |= _update_rows(
                connection, names, rows[start : start + per_statement], claim_token
            )
    return written


def _update_rows(
    connection: BaseDatabaseWrapper,
    names: tuple[str, ...],
    rows: list[tuple[AnsweredRefund, dict[str, Any]]],
    claim_token: str | None,
) -> set[int]:
    """``UPDATE refund SET <names> FROM <rows of (pk, version read, values...)>``, each row
    guarded by its own version (and the claim); returns the ids written."""
    meta = Refund._meta
    fields = [cast(models.Field, meta.get_field(name)) for name in names]
    quote = connection.ops.quote_name
    pk_column = quote(str(meta.pk.column))
    values = [
        (
            item.refund.pk,
            item.refund.version,
            *(_db_value(field, changes[field.name], connection) for field in fields),
        )
        for item, changes in rows
    ]
    columns = ["pk", "was", *(f"c{index}" for index in range(len(fields)))]
    types = [str(meta.pk.db_type(connection)), "integer"]
    types += [_cast_type(field, connection) for field in fields]
    source, refs, params = _rows_source(connection, columns, types, values)
    returning = f"r.{pk_column}" if connection.vendor == "postgresql" else pk_column
    assignments = ", ".join(
        f"{quote(str(field.column))} = {ref}" for field, ref in zip(fields, refs[2:], strict=True)
    )
    guard = f"r.{pk_column} = {refs[0]} AND r.{quote('version')} = {refs[1]}"
    if claim_token is not None:
        guard += f" AND r.{quote('claim_token')} = %s"
        params.append(claim_token)
    # Only the model's own quoted names are put into the text; every value is a parameter.
    statement = (
        f"UPDATE {quote(meta.db_table)} AS r SET {assignments} "  # noqa: S608
        f"FROM {source} WHERE {guard} RETURNING {returning}"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return {row[0] for row in cursor.fetchall()}


def _rows_source(
    connection: BaseDatabaseWrapper,
    columns: list[str],
    types: list[str],
    values: Sequence[Sequence[Any]],
) -> tuple[str, list[str], list[Any]]:
    """The rows ``values`` as a ``FROM`` source: its SQL, an expression per column, and its
    parameters.

    Where the database reads JSON, the rows are one JSON parameter: ``jsonb_to_recordset``
    with typed columns on PostgreSQL, ``json_each`` on SQLite. The statement's text then
    stays the same whatever the number of rows, which matters twice: psycopg parses a
    statement's placeholders (and would quote arrays element by element) in Python, caching
    that only for short statements; and SQLite's driver keeps the last 128 statements
    prepared, which for ``VALUES`` lists of every length grows to a hundred megabytes.
    Elsewhere, a ``VALUES`` list (SQLite names its columns column1, column2, ...).
    """
    if connection.vendor == "postgresql":
        definitions = ", ".join(f"{name} {kind}" for name, kind in zip(columns, types, strict=True))
        source = f"jsonb_to_recordset(%s::jsonb) AS v({definitions})"
        return source, [f"v.{name}" for name in columns], [_json_rows(columns, values)]
    if connection.features.supports_json_field:
        refs = [f"json_extract(v.value, '$.{name}')" for name in columns]
        return "json_each(%s) AS v", refs, [_json_rows(columns, values)]
    refs = [f"v.column{index + 1}" for index in range(len(columns))]
    placeholder = f"({', '.join(['%s'] * len(columns))})"
    source = f"(VALUES {', '.join([placeholder] * len(values))}) AS v"
    return source, refs, [value for row in values for value in row]


def _json_rows(columns: list[str], rows: Iterable[Sequence[Any]]) -> str:
    """``rows`` as a JSON array of objects keyed by ``columns``: times in ISO 8601 with their
    offset, which PostgreSQL reads back exactly. (Text reaching here is :func:`storable`:
    no NUL, which ``jsonb`` refuses.)"""
    return json.dumps(
        [dict(zip(columns, row, strict=True)) for row in rows],
        ensure_ascii=False,
        default=_json_time,
    )


def _json_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not written through JSON")


def _insert_audit(connection: BaseDatabaseWrapper, rows: list[dict[str, Any]]) -> None:
    """``INSERT`` the audit rows (field values by attribute name; the others take their
    defaults): one statement, or as many as a ``VALUES`` list's parameters need."""
    fields = [field for field in RefundQuery._meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    table = quote(RefundQuery._meta.db_table)
    columns = ", ".join(quote(str(field.column)) for field in fields)
    values = [
        [
            _db_value(field, row[field.attname], connection)
            if field.attname in row
            else field.get_db_prep_save(field.get_default(), connection=connection)
            for field in fields
        ]
        for row in rows
    ]
    names = [f"c{index}" for index in range(len(fields))]
    types = [_cast_type(field, connection) for field in fields]
    per_statement = len(values)
    if not _reads_json_rows(connection):
        per_statement = max(1, _max_parameters(connection) // len(fields))
    with connection.cursor() as cursor:
        for start in range(0, len(values), per_statement):
            source, refs, params = _rows_source(
                connection, names, types, values[start : start + per_statement]
            )
            # Only the model's own quoted names are put into the text; values are parameters.
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {', '.join(refs)} FROM {source}",  # noqa: S608
                params,
            )


def _reads_json_rows(connection: BaseDatabaseWrapper) -> bool:
    """Whether :func:`_rows_source` passes the rows as one JSON parameter."""
    return connection.vendor == "postgresql" or bool(connection.features.supports_json_field)


#: Fields whose database value is the Python value itself, for values of exactly this type
#: (and ``None``): what ``get_db_prep_save`` would return, without its cost per value.
_PLAIN_VALUES: dict[type, type] = {
    models.CharField: str,
    models.TextField: str,
    models.IntegerField: int,
    models.BigIntegerField: int,
    models.SmallIntegerField: int,
    models.PositiveIntegerField: int,
    models.PositiveBigIntegerField: int,
    models.PositiveSmallIntegerField: int,
    models.BooleanField: bool,
}


def _db_value(field: models.Field, value: Any, connection: BaseDatabaseWrapper) -> Any:
    """``field.get_db_prep_save(value)``, quick for plain text, numbers and flags."""
    kind = type(field)
    plain = _PLAIN_VALUES.get(kind)
    if plain is not None and (value is None or type(value) is plain):
        return value
    if kind is models.DateTimeField and isinstance(value, datetime) and value.tzinfo is not None:
        return connection.ops.adapt_datetimefield_value(value)
    return field.get_db_prep_save(value, connection=connection)


def _cast_type(field: models.Field, connection: BaseDatabaseWrapper) -> str:
    """The type a column's values are cast to on PostgreSQL: text for text (the column's own
    width is then checked on assignment, as by any write), else the column's type."""
    if isinstance(field, models.CharField | models.TextField):
        return "text"
    return str(field.db_type(connection))


def audit_row(item: AnsweredRefund, outcome: str | None = None) -> RefundQuery:
    """The audit row of one answer (``outcome`` overrides the decision's)."""
    return RefundQuery(**_audit_values(item, outcome))


def _audit_values(item: AnsweredRefund, outcome: str | None = None) -> dict[str, Any]:
    """The field values of :func:`audit_row`, by attribute name."""
    log = storable_changes(RefundQuery, item.decision.log)
    if outcome is not None:
        log["outcome"] = outcome
    return {
        "refund_id": item.refund.pk,
        "queried_at": item.at or timezone.now(),
        "duration_ms": item.duration_ms,
        "source": item.source,
        **log,
    }


def record_answer(
    refund: Refund,
    decide: Callable[[Refund], Decision | None],
    *,
    source: str,
    at: datetime | None = None,
) -> tuple[Refund, Decision | None]:
    """Decide on one answer about ``refund`` and write it, one writer of the refund at a time.

    For the answers that come to the app rather than from its own sync (an application's,
    a notification, a person's action): the refund is read again under a row lock
    (``SELECT ... FOR UPDATE``; on SQLite, whose locks are per database, the write lock taken
    by a first ``UPDATE``), ``decide`` is called with it, and its decision written in the same
    transaction. Concurrent writers of one refund are thus decided one after the other, each
    on the state the previous one left, never retried into an error. ``decide`` may return
    ``None``: nothing to write (a replay of an answer already recorded). Returns the refund as
    written and the decision.
    """
    using = router.db_for_write(Refund)
    with transaction.atomic(using=using):
        current = locked_refund(refund.pk, using=using)
        decision = decide(current)
        if decision is None:
            return current, None
        if not write_answers([AnsweredRefund(current, decision, source=source, at=at)]):
            raise RuntimeError(f"transNo={current.trans_no}: not written under its row lock")
    return current, decision


def locked_refund(pk: int, *, using: str | None = None) -> Refund:
    """The refund ``pk``, read under a lock held until the transaction ends (call it inside
    ``transaction.atomic()``): a row lock where the database has them, else (SQLite) the
    database's write lock, taken by an ``UPDATE`` that changes nothing."""
    using = using or router.db_for_write(Refund)
    rows = Refund.objects.using(using).filter(pk=pk)
    if connections[using].features.has_select_for_update:
        return rows.select_for_update().get()
    rows.update(version=models.F("version"))
    return rows.get()


# --------------------------------------------------------------------------- sync runs


class SyncTrigger(models.TextChoices):
    """What started a sync run."""

    COMMAND = "command", _("management command")
    ADMIN = "admin", _("admin")
    TASK = "task", _("django-q2 task")
    API = "api", _("Python call")


class SyncRunQuerySet(models.QuerySet["SyncRun"]):
    def prune(self, older_than: timedelta | datetime) -> int:
        """Delete runs that finished before ``older_than`` (an age or a cutoff time), in
        batches; returns how many were deleted."""
        return _delete_older(self, "finished_at", older_than)


class SyncRun(models.Model):
    """One (not dry) run of :func:`hsq_refunds.sync.sync_refunds` and how it ended.

    Written by :func:`hsq_refunds.health.record_sync_run`; read by the health checks and the
    admin dashboard. Older runs than ``HSQ_REFUNDS["HEALTH"]["RUN_RETENTION_DAYS"]`` are
    deleted as new ones are recorded.
    """

    Trigger = SyncTrigger

    started_at = models.DateTimeField(_("started at"))
    finished_at = models.DateTimeField(_("finished at"))
    trigger = models.CharField(_("started by"), max_length=16, choices=SyncTrigger.choices)
    selected = models.PositiveIntegerField(_("selected"), default=0)
    queried = models.PositiveIntegerField(_("queried"), default=0)
    error_count = models.PositiveIntegerField(_("errors"), default=0)
    errors_by_type = models.JSONField(
        _("errors by type"), default=dict, blank=True, help_text=_("Error type -> count.")
    )
    ok = models.BooleanField(_("without errors"), default=True)
    summary = models.TextField(_("summary"), blank=True)

    objects = SyncRunQuerySet.as_manager()

    class Meta:
        verbose_name = _("sync run")
        verbose_name_plural = _("sync runs")
        ordering = ["-finished_at", "-id"]
        indexes = [models.Index(fields=["finished_at"], name="hsq_syncrun_finished_idx")]

    def __str__(self) -> str:
        return f"{self.trigger} {self.finished_at:%Y-%m-%d %H:%M:%S} ok={self.ok}"
