"""The rows: :class:`Refund` (one refund at HSQ and its sync bookkeeping) and
:class:`RefundQuery` (one audit row per query).

What an answer from HSQ may change lives in :mod:`hsq_refunds.rules` and its write in
:mod:`hsq_refunds.recording`; the engine that asks and writes is :mod:`hsq_refunds.sync`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q, sql
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .choices import FINAL_STATUSES, Application, AttentionReason, Outcome, Source, Status
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
)
from .conf import default_merchant_no, get_settings, merchant_numbers
from .gateway import InvalidRequestError, check_trans_no
from .gateway.validation import REFUND_REASON_MAX_LENGTH
from .money import fen_to_yuan

__all__ = [
    "Application",
    "AttentionReason",
    "Outcome",
    "PaidOrder",
    "Refund",
    "RefundQuery",
    "Source",
    "Status",
    "validate_trans_no",
]

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


def _updates_return_rows(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``UPDATE ... FROM`` and ``UPDATE ... RETURNING`` can be used on ``connection``."""
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version_info >= (3, 35)
    return False


class RefundQuerySet(models.QuerySet["Refund"]):
    """Selections of refunds, and the claims that keep two syncs from asking about one refund.

    A sync *claims* the refunds it is about to query: ``claim_token`` (unique to the run) and
    ``claimed_until`` (the lease) are set by one conditional ``UPDATE`` of the claimable rows, so
    that of two runs at once only one gets each refund. A claim is given back when the answer
    is written (:func:`~hsq_refunds.recording.write_answers`) or the run ends (:meth:`release`);
    a run that dies holds nothing longer than its lease.
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

    Written by :func:`hsq_refunds.runs.record_sync_run`; read by the health checks and the
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
