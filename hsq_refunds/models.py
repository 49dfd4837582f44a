"""The rows: :class:`Refund` (one refund at HSQ and its sync bookkeeping) and
:class:`RefundQuery` (one audit row per query).

What an answer from HSQ may change lives in :mod:`hsq_refunds.rules`; the engine that asks and
writes is :mod:`hsq_refunds.sync`.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .conf import default_merchant_no, get_settings, merchant_numbers
from .money import fen_to_yuan
from .rules import FINAL_STATUSES, AttentionReason, Outcome, Status

__all__ = ["AttentionReason", "Outcome", "Refund", "RefundQuery", "Status"]

TRANS_NO_MAX_LENGTH = 64
_OPEN_STATUSES = [s for s in Status.values if s not in FINAL_STATUSES]
_PRUNE_BATCH = 10_000


def _validate_trans_no(trans_no: object) -> str:
    if not isinstance(trans_no, str):
        raise ValueError(gettext("transNo must be text."))
    if not 1 <= len(trans_no) <= TRANS_NO_MAX_LENGTH:
        raise ValueError(
            gettext("transNo must be 1 to %(max)d characters.") % {"max": TRANS_NO_MAX_LENGTH}
        )
    if trans_no != trans_no.strip() or any(
        unicodedata.category(char) in ("Cc", "Cs") for char in trans_no
    ):
        raise ValueError(
            gettext("transNo %(trans_no)r has surrounding spaces or control characters.")
            % {"trans_no": trans_no}
        )
    return trans_no


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
    def due(self, now: datetime | None = None) -> RefundQuerySet:
        """Refunds whose next query time has come (claims not considered)."""
        return self.filter(next_query_at__lte=now or timezone.now())

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
        trans_no = _validate_trans_no(trans_no)
        merchant_no = _resolve_merchant(merchant_no)
        if amount is not None and (
            not isinstance(amount, int) or isinstance(amount, bool) or amount < 0
        ):
            raise ValueError(gettext("amount must be a whole number of fen >= 0."))
        if orig_trans_no is not None and (
            not isinstance(orig_trans_no, str) or len(orig_trans_no) > TRANS_NO_MAX_LENGTH
        ):
            raise ValueError(
                gettext("origTransNo must be text of at most %(max)d characters.")
                % {"max": TRANS_NO_MAX_LENGTH}
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


class Refund(models.Model):
    """One refund applied for at HSQ, as last verified, and when to ask about it next."""

    Status = Status
    AttentionReason = AttentionReason

    merchant_no = models.CharField(_("merchant number"), max_length=16)
    trans_no = models.CharField(
        _("refund order number"),
        max_length=TRANS_NO_MAX_LENGTH,
        help_text=_("The transNo the refund was applied for with."),
    )
    orig_trans_no = models.CharField(
        _("original order number"), max_length=TRANS_NO_MAX_LENGTH, blank=True
    )
    trade_no = models.CharField(_("HSQ trade number"), max_length=64, blank=True)
    amount = models.BigIntegerField(
        _("amount (fen)"),
        null=True,
        blank=True,
        help_text=_("The amount expected, in fen; taken from HSQ's first answer when not given."),
    )
    reported_amount = models.BigIntegerField(
        _("amount reported by HSQ (fen)"),
        null=True,
        blank=True,
        help_text=_("Set only when HSQ reports an amount other than the expected one."),
    )
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.UNKNOWN
    )
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    resp_code = models.CharField(_("response code"), max_length=16, blank=True)
    resp_msg = models.CharField(_("response message"), max_length=255, blank=True)
    extend = models.TextField(_("passthrough field"), blank=True)
    last_result = models.TextField(
        _("last verified result"),
        blank=True,
        help_text=_("The last verified answer from HSQ, exactly as signed."),
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
    last_error_type = models.CharField(_("last error type"), max_length=32, blank=True)
    last_error_code = models.CharField(_("last error code"), max_length=64, blank=True)
    last_error_message = models.TextField(_("last error message"), blank=True)

    needs_attention = models.BooleanField(_("needs attention"), default=False)
    attention_reason = models.CharField(
        _("attention reason"), max_length=32, choices=AttentionReason.choices, blank=True
    )
    attention_detail = models.TextField(_("attention detail"), blank=True)

    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True, editable=False)
    claim_token = models.CharField(_("claim token"), max_length=32, blank=True, editable=False)

    objects = RefundManager()

    class Meta:
        verbose_name = _("refund")
        verbose_name_plural = _("refunds")
        ordering = ["-applied_at"]
        permissions = [("refresh_refund", _("Can refresh refund status from HSQ"))]
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
            models.Index(fields=["trans_no"], name="hsq_refund_trans_no_idx"),
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
        cutoff = timezone.now() - older_than if isinstance(older_than, timedelta) else older_than
        deleted = 0
        old = self.filter(queried_at__lt=cutoff)
        while True:
            ids = list(old.order_by().values_list("id", flat=True)[:_PRUNE_BATCH])
            if not ids:
                return deleted
            deleted += RefundQuery.objects.using(self.db).filter(id__in=ids).delete()[0]


class RefundQuery(models.Model):
    """One query to HSQ about a refund and how it ended: the audit trail."""

    Outcome = Outcome

    refund = models.ForeignKey(
        Refund,
        on_delete=models.CASCADE,
        related_name="queries",
        verbose_name=_("refund"),
        db_index=False,  # covered by the (refund, -queried_at) index
    )
    queried_at = models.DateTimeField(_("queried at"), default=timezone.now)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), null=True, blank=True)
    outcome = models.CharField(_("outcome"), max_length=32, choices=Outcome.choices)
    error_type = models.CharField(_("error type"), max_length=32, blank=True)
    error_code = models.CharField(_("error code"), max_length=64, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    resp_code = models.CharField(_("response code"), max_length=16, blank=True)
    status_seen = models.CharField(
        _("status reported"), max_length=16, choices=Status.choices, blank=True
    )
    result = models.TextField(_("verified result"), blank=True)

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
        cutoff = timezone.now() - older_than if isinstance(older_than, timedelta) else older_than
        deleted = 0
        old = self.filter(finished_at__lt=cutoff)
        while True:
            ids = list(old.order_by().values_list("id", flat=True)[:_PRUNE_BATCH])
            if not ids:
                return deleted
            deleted += SyncRun.objects.using(self.db).filter(id__in=ids).delete()[0]


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


# Indexes that the health checks and the admin dashboard read (migration 0002), declared after
# the model so that they live with this section; they belong in ``Refund.Meta.indexes``.
Refund._meta.indexes.extend(
    [
        # Per status by time: the dashboard's counts and amounts per status for a period and
        # the unfinished refunds by age (index-only scans on PostgreSQL: the amount is in the
        # index too), the oldest unfinished refund of each status.
        models.Index(
            fields=["status", "applied_at", "amount"], name="hsq_refund_status_applied_idx"
        ),
        # Claims still held: a few rows at any time, however large the table.
        models.Index(
            fields=["claimed_until"],
            condition=Q(claimed_until__isnull=False),
            name="hsq_refund_claimed_idx",
        ),
    ]
)
