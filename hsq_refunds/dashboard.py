"""The finance dashboard in the admin: refunds per status today and over the last 7 days, the
attention queue, the unfinished refunds by age, and the last sync runs with their errors.

:func:`dashboard_data` computes the figures (a few aggregate queries, each served by an index,
so the page stays fast at millions of refunds: see ``bench/dashboard.py``);
:class:`DashboardAdminMixin` adds the page to a ``ModelAdmin`` of
:class:`~hsq_refunds.models.Refund` at ``<changelist>/dashboard/`` (URL name
``admin:hsq_refunds_refund_dashboard``), for users with the view permission on refunds.

"Today" is the calendar day in the project's ``TIME_ZONE`` (Beijing for most merchants of
HSQ); "the last 7 days" are today and the six days before. Refunds count in the period they
were applied for in, by the status they have now. Amounts are yuan with two decimals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, Sum, Value
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .choices import FINAL_STATUSES, AttentionReason, Status
from .models import Refund, SyncRun, SyncTrigger
from .money import format_fen
from .report import error_label

__all__ = [
    "AGE_BUCKETS",
    "AgeBucket",
    "AttentionRow",
    "DashboardAdminMixin",
    "DashboardData",
    "Period",
    "RunRow",
    "StatusRow",
    "dashboard_data",
]

#: ``COUNT(1)`` rather than ``COUNT(id)``: the rows are counted from the index alone.
_ONE = Value(1)
#: How many sync runs the page lists.
RUNS_SHOWN = 10
OPEN_STATUSES = [status for status in Status.values if status not in FINAL_STATUSES]
#: ``(key, label, from age, to age)`` of the unfinished refunds' age buckets, in seconds.
AGE_BUCKETS: tuple[tuple[str, Any, int, int | None], ...] = (
    ("10m", _("under 10 minutes"), 0, 600),
    ("1h", _("10 to 60 minutes"), 600, 3600),
    ("6h", _("1 to 6 hours"), 3600, 6 * 3600),
    ("1d", _("6 to 24 hours"), 6 * 3600, 86400),
    ("3d", _("1 to 3 days"), 86400, 3 * 86400),
    ("7d", _("3 to 7 days"), 3 * 86400, 7 * 86400),
    ("old", _("7 days or more"), 7 * 86400, None),
)


class _InYuan:
    """``amount_display``: the figure's ``amount`` (fen) in yuan, as the admin shows money."""

    amount: int

    @property
    def amount_display(self) -> str:
        return format_fen(self.amount)


@dataclass(frozen=True)
class StatusRow(_InYuan):
    """Refunds of one status in a period; ``query`` filters the change list to them."""

    status: str
    label: str
    count: int
    amount: int
    query: str


@dataclass(frozen=True)
class Period(_InYuan):
    key: str
    title: str
    since: datetime
    until: datetime
    rows: list[StatusRow]
    query: str

    @property
    def count(self) -> int:
        return sum(row.count for row in self.rows)

    @property
    def amount(self) -> int:  # type: ignore[override]  # the sum of its rows, read-only
        return sum(row.amount for row in self.rows)


@dataclass(frozen=True)
class AttentionRow:
    reason: str
    label: str
    count: int
    query: str


@dataclass(frozen=True)
class AgeBucket(_InYuan):
    key: str
    label: str
    count: int
    amount: int
    query: str


@dataclass(frozen=True)
class RunRow:
    run: SyncRun
    trigger: str
    errors: list[tuple[str, int]]


@dataclass(frozen=True)
class DashboardData:
    now: datetime
    periods: list[Period]
    attention: list[AttentionRow]
    age_buckets: list[AgeBucket]
    runs: list[RunRow]
    run_errors: list[tuple[str, int]] = field(default_factory=list)

    @property
    def attention_total(self) -> int:
        return sum(row.count for row in self.attention)

    @property
    def unfinished_total(self) -> int:
        return sum(bucket.count for bucket in self.age_buckets)

    @property
    def unfinished_amount_display(self) -> str:
        return format_fen(sum(bucket.amount for bucket in self.age_buckets))


def _query(**params: Any) -> str:
    # Times as ``str()`` writes them, as the admin's date filter does: the list then shows
    # "Today" selected for today's figures.
    return urlencode({key: str(value) for key, value in params.items()})


def _errors(counts: dict[str, int]) -> list[tuple[str, int]]:
    return [
        (error_label(kind), count)
        for kind, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def dashboard_data(now: datetime | None = None, *, runs: int = RUNS_SHOWN) -> DashboardData:
    """Every figure of the dashboard as of ``now`` (default: now)."""
    now = now or timezone.now()
    local = timezone.localtime(now, timezone.get_default_timezone())
    today = local.replace(hour=0, minute=0, second=0, microsecond=0)
    # Wall-clock arithmetic: midnight of the next day, whatever the offset then is.
    tomorrow = today + timedelta(days=1)
    week = today - timedelta(days=6)
    return DashboardData(
        now=now,
        periods=_periods(today, week, tomorrow),
        attention=_attention(),
        age_buckets=_age_buckets(now),
        runs=(recent := _runs(runs)),
        run_errors=_errors(_sum_errors(row.run for row in recent)),
    )


def _periods(today: datetime, week: datetime, tomorrow: datetime) -> list[Period]:
    in_today = Q(applied_at__gte=today)
    rows = (
        # ``status IN (every status)`` lets the database read the (status, applied_at, amount)
        # index as one short range per status; with ``COUNT(1)`` it needs nothing but that
        # index (an index-only scan).
        Refund.objects.filter(
            status__in=Status.values, applied_at__gte=week, applied_at__lt=tomorrow
        )
        .order_by()
        .values("status")
        .annotate(
            week_count=Count(_ONE),
            week_amount=Sum("amount"),
            today_count=Count(_ONE, filter=in_today),
            today_amount=Sum("amount", filter=in_today),
        )
    )
    figures = {row["status"]: row for row in rows}
    labels = dict(Status.choices)
    periods = []
    for key, title, since, prefix in (
        ("today", gettext("Applied for today"), today, "today"),
        ("week", gettext("Applied for in the last 7 days"), week, "week"),
    ):
        status_rows = []
        for status in Status.values:
            row = figures.get(status, {})
            status_rows.append(
                StatusRow(
                    status=status,
                    label=str(labels[status]),
                    count=row.get(f"{prefix}_count") or 0,
                    amount=row.get(f"{prefix}_amount") or 0,
                    query=_query(
                        status__exact=status, applied_at__gte=since, applied_at__lt=tomorrow
                    ),
                )
            )
        periods.append(
            Period(
                key=key,
                title=title,
                since=since,
                until=tomorrow,
                rows=status_rows,
                query=_query(applied_at__gte=since, applied_at__lt=tomorrow),
            )
        )
    return periods


def _attention() -> list[AttentionRow]:
    rows = (
        Refund.objects.filter(needs_attention=True)
        .order_by()
        .values_list("attention_reason")
        .annotate(count=Count("id"))
    )
    counts = dict(rows)
    labels = dict(AttentionReason.choices)
    order = [*AttentionReason.values, *sorted(set(counts) - set(AttentionReason.values))]
    return [
        AttentionRow(
            reason=reason,
            label=str(labels[reason]) if reason in labels else gettext("(no reason given)"),
            count=counts[reason],
            query=_query(needs_attention__exact=1, attention_reason__exact=reason),
        )
        for reason in order
        if counts.get(reason)
    ]


def _age_buckets(now: datetime) -> list[AgeBucket]:
    limits: dict[str, dict[str, datetime]] = {}
    aggregates: dict[str, Any] = {}
    for key, _label, low, high in AGE_BUCKETS:
        # Younger than ``low`` means applied after now - low; a refund applied "in the future"
        # (a clock ahead) counts as the youngest. The same limits filter the change list.
        bounds = limits[key] = {}
        if low:
            bounds["applied_at__lte"] = now - timedelta(seconds=low)
        if high is not None:
            bounds["applied_at__gt"] = now - timedelta(seconds=high)
        condition = Q(**bounds)
        aggregates[f"{key}_count"] = Count(_ONE, filter=condition) if bounds else Count(_ONE)
        aggregates[f"{key}_amount"] = Sum("amount", filter=condition) if bounds else Sum("amount")
    figures = Refund.objects.filter(status__in=OPEN_STATUSES).aggregate(**aggregates)
    return [
        AgeBucket(
            key=key,
            label=str(label),
            count=figures[f"{key}_count"] or 0,
            amount=figures[f"{key}_amount"] or 0,
            query=_query(status__in=",".join(OPEN_STATUSES), **limits[key]),
        )
        for key, label, _low, _high in AGE_BUCKETS
    ]


def _runs(limit: int) -> list[RunRow]:
    labels = dict(SyncTrigger.choices)
    return [
        RunRow(
            run=run,
            trigger=str(labels.get(run.trigger, run.trigger)),
            errors=_errors(run.errors_by_type or {}),
        )
        for run in SyncRun.objects.order_by("-finished_at", "-id")[:limit]
    ]


def _sum_errors(runs: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for run in runs:
        for kind, count in (run.errors_by_type or {}).items():
            total[kind] = total.get(kind, 0) + int(count)
    return total


class DashboardAdminMixin:
    """For a ``ModelAdmin`` of :class:`~hsq_refunds.models.Refund`: the dashboard page."""

    dashboard_template = "admin/hsq_refunds/refund/dashboard.html"

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts  # type: ignore[attr-defined]
        dashboard = path(
            "dashboard/",
            self.admin_site.admin_view(self.dashboard_view),  # type: ignore[attr-defined]
            name=f"{opts.app_label}_{opts.model_name}_dashboard",
        )
        return [dashboard, *super().get_urls()]  # type: ignore[misc]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        admin_self: Any = self
        if not admin_self.has_view_permission(request):
            raise PermissionDenied
        opts = admin_self.opts
        site = admin_self.admin_site
        context = {
            **site.each_context(request),
            "title": gettext("Refund dashboard"),
            "opts": opts,
            "data": dashboard_data(),
            "changelist_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_changelist", current_app=site.name
            ),
            "time_zone": timezone.get_default_timezone_name(),
        }
        request.current_app = site.name
        return TemplateResponse(request, self.dashboard_template, context)
