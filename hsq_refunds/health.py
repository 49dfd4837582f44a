"""Is the refund sync healthy? Figures for ``manage.py hsq_refunds_health`` and for a merchant's
own health endpoint.

:func:`check_health` returns a :class:`HealthReport`: one :class:`HealthCheck` per figure, each
``ok``, ``warning`` or ``critical``, and the worst of them as the report's status::

    from django.http import JsonResponse
    from hsq_refunds.health import check_health

    def health(request):
        report = check_health()
        return JsonResponse(report.as_dict(), status=200 if report.status.is_ok else 503)

The checks:

==================== ============================================================================
``settings``         ``HSQ_REFUNDS`` has errors (``manage.py check`` lists them all)
``attention``        refunds needing attention, by reason
``unfinished``       the oldest unfinished refund of each status, and its age
``overdue``          refunds whose next query is long past: the scheduler or cron is not running
``stale_claims``     claims held past their lease: a sync run died half-way
``last_sync``        when the last sync run finished and how it ended
``failed_queries``   the share of failed queries in the last ``WINDOW``
``signature``        answers whose signature did not verify in the last ``WINDOW``: HSQ may have
                     changed its platform certificate
``schedule``         the django-q2 schedule, when django-q2 is installed
==================== ============================================================================

When the database cannot be read, the report holds the one check ``database``, critical.

Thresholds: ``HSQ_REFUNDS["HEALTH"]``, a dict of the keys of
:class:`~hsq_refunds.conf.HealthSettings` (durations in seconds or a ``timedelta``; ``None``
switches a threshold off)::

    HSQ_REFUNDS = {..., "HEALTH": {"OVERDUE_WARNING": 600, "UNFINISHED_WARNING": None}}

An unknown key or a bad value raises :class:`~hsq_refunds.gateway.ConfigurationError` naming
it (``HSQ_REFUNDS["HEALTH"]["OVERDUE_WARNING"]: ...``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from django.apps import apps
from django.db import DatabaseError, router, transaction
from django.db.models import Count, Max, Min
from django.utils import timezone
from django.utils.translation import gettext, ngettext, pgettext

from .choices import ERROR_OUTCOMES, FINAL_STATUSES, AttentionReason, Outcome, Status
from .conf import HealthSettings, inspect_settings, setting_path
from .gateway import ConfigurationError
from .models import Refund, RefundQuery, SyncRun, SyncTrigger

__all__ = [
    "HealthCheck",
    "HealthReport",
    "HealthStatus",
    "check_health",
    "health_settings",
]

logger = logging.getLogger("hsq_refunds.health")

_OPEN_STATUSES = [status for status in Status.values if status not in FINAL_STATUSES]


# --------------------------------------------------------------------------- thresholds


def health_settings() -> HealthSettings:
    """``HSQ_REFUNDS["HEALTH"]``; raises ``ConfigurationError`` naming a bad or unknown key
    (``manage.py check`` reports them too)."""
    parsed, problems = inspect_settings()
    for problem in problems:
        if problem.path.startswith(setting_path("HEALTH")):
            raise ConfigurationError(str(problem))
    return parsed.HEALTH


# --------------------------------------------------------------------------- the report


class HealthStatus(IntEnum):
    """A check's result; the values are the exit statuses of ``manage.py hsq_refunds_health``."""

    OK = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        """``ok``, ``warning``, ``critical``: for JSON."""
        return self.name.lower()

    @property
    def is_ok(self) -> bool:
        return self is HealthStatus.OK

    def display(self) -> str:
        """The status for people, in the active language."""
        return {
            HealthStatus.OK: pgettext("health status", "OK"),
            HealthStatus.WARNING: pgettext("health status", "WARNING"),
            HealthStatus.CRITICAL: pgettext("health status", "CRITICAL"),
        }[self]


@dataclass(frozen=True)
class HealthCheck:
    """One figure: its ``name`` (stable, for scripts), status, a sentence and the raw value."""

    name: str
    status: HealthStatus
    message: str
    value: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.label,
            "message": self.message,
            "value": self.value,
        }


@dataclass(frozen=True)
class HealthReport:
    """Every check, and the worst status among them."""

    checked_at: datetime
    checks: list[HealthCheck] = field(default_factory=list)

    @property
    def status(self) -> HealthStatus:
        return max((check.status for check in self.checks), default=HealthStatus.OK)

    def check(self, name: str) -> HealthCheck:
        """The check called ``name``; ``KeyError`` if there is none."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"status": "warning", "checked_at": "...", "checks": [...]}``."""
        return {
            "status": self.status.label,
            "checked_at": self.checked_at.isoformat(),
            "checks": [check.as_dict() for check in self.checks],
        }


def _level(value: float | None, warning: float | None, critical: float | None) -> HealthStatus:
    if value is None:
        return HealthStatus.OK
    if critical is not None and value >= critical:
        return HealthStatus.CRITICAL
    if warning is not None and value >= warning:
        return HealthStatus.WARNING
    return HealthStatus.OK


def _age(seconds: float) -> str:
    """``3 days``, ``5 hours``, ``12 minutes``, ``40 seconds``: the largest whole unit."""
    seconds = max(int(seconds), 0)
    if seconds >= 86400:
        days = seconds // 86400
        return ngettext("%(count)d day", "%(count)d days", days) % {"count": days}
    if seconds >= 3600:
        hours = seconds // 3600
        return ngettext("%(count)d hour", "%(count)d hours", hours) % {"count": hours}
    if seconds >= 60:
        minutes = seconds // 60
        return ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes}
    return ngettext("%(count)d second", "%(count)d seconds", seconds) % {"count": seconds}


def _when(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %z")


# --------------------------------------------------------------------------- the checks


def check_health(now: datetime | None = None) -> HealthReport:
    """Every health figure as of ``now`` (default: now).

    Raises :class:`~hsq_refunds.gateway.ConfigurationError` when ``HSQ_REFUNDS["HEALTH"]`` is
    invalid; other mistakes in ``HSQ_REFUNDS`` are the ``settings`` check.
    """
    now = now or timezone.now()
    limits = health_settings()
    try:
        # In a savepoint of its own, so that a failed read leaves a caller's transaction usable.
        with transaction.atomic(using=router.db_for_read(Refund)):
            checks = _checks(now, limits)
    except DatabaseError as exc:
        logger.exception("health check: the database could not be read")
        first_line = (str(exc).strip().splitlines() or [""])[0]
        message = gettext("The database could not be read: %(error)s") % {
            "error": f"{type(exc).__name__}: {first_line}".rstrip(": ")
        }
        checks = [HealthCheck("database", HealthStatus.CRITICAL, message, None)]
    return HealthReport(checked_at=now, checks=checks)


def _checks(now: datetime, limits: HealthSettings) -> list[HealthCheck]:
    return [
        _check_settings(),
        _check_attention(limits),
        _check_unfinished(now, limits),
        _check_overdue(now, limits),
        _check_stale_claims(now),
        _check_last_sync(now, limits),
        *_check_queries(now, limits),
        _check_schedule(now, limits),
    ]


def _check_settings() -> HealthCheck:
    _parsed, problems = inspect_settings()
    errors = [problem for problem in problems if problem.level == "error"]
    if not errors:
        return HealthCheck("settings", HealthStatus.OK, gettext("HSQ_REFUNDS has no errors."), 0)
    message = ngettext(
        "HSQ_REFUNDS has %(count)d error (run “manage.py check”): %(first)s",
        "HSQ_REFUNDS has %(count)d errors (run “manage.py check”): %(first)s",
        len(errors),
    ) % {"count": len(errors), "first": errors[0]}
    return HealthCheck("settings", HealthStatus.CRITICAL, message, len(errors))


def _check_attention(limits: HealthSettings) -> HealthCheck:
    rows = (
        Refund.objects.filter(needs_attention=True)
        .order_by()
        .values_list("attention_reason")
        .annotate(count=Count("id"))
    )
    by_reason = {reason or "": count for reason, count in rows}
    total = sum(by_reason.values())
    status = _level(total, limits.ATTENTION_WARNING, limits.ATTENTION_CRITICAL)
    if not total:
        message = gettext("No refund needs attention.")
    else:
        labels = {**dict(AttentionReason.choices), "": gettext("(no reason given)")}
        details = pgettext("health list separator", ", ").join(
            f"{count} {labels.get(reason, reason)}"
            for reason, count in sorted(by_reason.items(), key=lambda item: -item[1])
        )
        message = ngettext(
            "%(count)d refund needs attention: %(details)s.",
            "%(count)d refunds need attention: %(details)s.",
            total,
        ) % {"count": total, "details": details}
    return HealthCheck("attention", status, message, {"total": total, "by_reason": by_reason})


def _check_unfinished(now: datetime, limits: HealthSettings) -> HealthCheck:
    oldest: dict[str, dict[str, Any]] = {}
    for status in _OPEN_STATUSES:
        row = (
            Refund.objects.filter(status=status)
            .order_by("applied_at", "id")
            .values_list("trans_no", "applied_at")
            .first()
        )
        if row is not None:
            trans_no, applied_at = row
            oldest[status] = {
                "trans_no": trans_no,
                "applied_at": applied_at.isoformat(),
                "age_seconds": int((now - applied_at).total_seconds()),
            }
    if not oldest:
        return HealthCheck("unfinished", HealthStatus.OK, gettext("No unfinished refund."), {})
    worst = max(item["age_seconds"] for item in oldest.values())
    level = _level(worst, limits.UNFINISHED_WARNING, limits.UNFINISHED_CRITICAL)
    labels = dict(Status.choices)
    details = pgettext("health list separator", ", ").join(
        gettext("%(status)s %(trans_no)s (%(age)s)")
        % {"status": labels[name], "trans_no": item["trans_no"], "age": _age(item["age_seconds"])}
        for name, item in oldest.items()
    )
    message = gettext("Oldest unfinished refund per status: %(details)s.") % {"details": details}
    return HealthCheck("unfinished", level, message, oldest)


def _check_overdue(now: datetime, limits: HealthSettings) -> HealthCheck:
    threshold = limits.OVERDUE_WARNING or limits.OVERDUE_CRITICAL
    if threshold is None:
        return HealthCheck("overdue", HealthStatus.OK, gettext("Not checked."), None)
    figures = Refund.objects.filter(next_query_at__lt=now - timedelta(seconds=threshold)).aggregate(
        count=Count("id"), oldest=Min("next_query_at")
    )
    count = figures["count"]
    if not count:
        message = gettext("No refund is overdue for a query by more than %(age)s.") % {
            "age": _age(threshold)
        }
        return HealthCheck("overdue", HealthStatus.OK, message, {"count": 0})
    late = (now - figures["oldest"]).total_seconds()
    status = _level(late, limits.OVERDUE_WARNING, limits.OVERDUE_CRITICAL)
    message = ngettext(
        "%(count)d refund is overdue for a query by more than %(threshold)s (the longest by "
        "%(age)s): is the django-q2 cluster or the cron job running “manage.py sync_refunds”?",
        "%(count)d refunds are overdue for a query by more than %(threshold)s (the longest by "
        "%(age)s): is the django-q2 cluster or the cron job running “manage.py sync_refunds”?",
        count,
    ) % {"count": count, "threshold": _age(threshold), "age": _age(late)}
    value = {"count": count, "oldest_due_at": figures["oldest"].isoformat(), "late_seconds": late}
    return HealthCheck("overdue", status, message, value)


def _check_stale_claims(now: datetime) -> HealthCheck:
    figures = (
        Refund.objects.filter(claimed_until__isnull=False, claimed_until__lt=now)
        .exclude(claim_token="")
        .aggregate(count=Count("id"), oldest=Min("claimed_until"))
    )
    count = figures["count"]
    if not count:
        return HealthCheck(
            "stale_claims",
            HealthStatus.OK,
            gettext("No claim is held past its lease."),
            {"count": 0},
        )
    message = ngettext(
        "%(count)d refund is claimed past its lease (for %(age)s): a sync run stopped half-way. "
        "The next run takes it over; if this keeps happening, look for sync runs that are "
        'killed or that take longer than HSQ_REFUNDS["CLAIM_LEASE"].',
        "%(count)d refunds are claimed past their lease (the oldest for %(age)s): a sync run "
        "stopped half-way. The next run takes them over; if this keeps happening, look for sync "
        'runs that are killed or that take longer than HSQ_REFUNDS["CLAIM_LEASE"].',
        count,
    ) % {"count": count, "age": _age((now - figures["oldest"]).total_seconds())}
    value = {"count": count, "oldest_claimed_until": figures["oldest"].isoformat()}
    return HealthCheck("stale_claims", HealthStatus.WARNING, message, value)


def _check_last_sync(now: datetime, limits: HealthSettings) -> HealthCheck:
    run = SyncRun.objects.order_by("-finished_at", "-id").first()
    if run is None:
        return HealthCheck(
            "last_sync",
            HealthStatus.WARNING,
            gettext(
                "No sync has run yet: schedule “manage.py sync_refunds” in cron, or run "
                "“manage.py hsq_refunds_schedule” and a django-q2 cluster."
            ),
            None,
        )
    age = max((now - run.finished_at).total_seconds(), 0.0)
    status = _level(age, limits.LAST_SYNC_WARNING, limits.LAST_SYNC_CRITICAL)
    trigger = SyncTrigger(run.trigger).label if run.trigger in SyncTrigger.values else run.trigger
    if run.ok:
        message = gettext(
            "The last sync (%(trigger)s) finished %(age)s ago without errors: %(summary)s"
        )
    else:
        status = max(status, HealthStatus.WARNING)
        message = gettext(
            "The last sync (%(trigger)s) finished %(age)s ago with errors: %(summary)s"
        )
    message %= {"trigger": trigger, "age": _age(age), "summary": run.summary}
    value = {
        "finished_at": run.finished_at.isoformat(),
        "age_seconds": int(age),
        "trigger": run.trigger,
        "ok": run.ok,
        "selected": run.selected,
        "queried": run.queried,
        "errors": run.error_count,
        "errors_by_type": run.errors_by_type,
    }
    return HealthCheck("last_sync", status, message, value)


def _check_queries(now: datetime, limits: HealthSettings) -> list[HealthCheck]:
    since = now - timedelta(seconds=limits.WINDOW)
    recent = RefundQuery.objects.filter(queried_at__gte=since, queried_at__lte=now)
    rows = recent.order_by().values("outcome").annotate(count=Count("id"))
    outcomes = {row["outcome"]: row["count"] for row in rows}
    total = sum(outcomes.values())
    failed = sum(count for outcome, count in outcomes.items() if outcome in ERROR_OUTCOMES)
    window = _age(limits.WINDOW)
    share = failed / total if total else 0.0
    value = {"queries": total, "failed": failed, "share": round(share, 4), "by_outcome": outcomes}
    if not total:
        failed_check = HealthCheck(
            "failed_queries",
            HealthStatus.OK,
            gettext("No queries in the last %(window)s.") % {"window": window},
            value,
        )
    else:
        status = _level(share, limits.FAILED_SHARE_WARNING, limits.FAILED_SHARE_CRITICAL)
        if total < limits.FAILED_MIN_QUERIES:
            status = min(status, HealthStatus.WARNING)
        failed_check = HealthCheck(
            "failed_queries",
            status,
            ngettext(
                "%(failed)d of %(total)d query failed in the last %(window)s (%(share).0f%%).",
                "%(failed)d of %(total)d queries failed in the last %(window)s (%(share).0f%%).",
                total,
            )
            % {"failed": failed, "total": total, "window": window, "share": share * 100},
            value,
        )
    return [failed_check, _check_signatures(recent, window)]


def _check_signatures(recent: Any, window: str) -> HealthCheck:
    rows = (
        recent.filter(outcome=Outcome.SIGNATURE_ERROR)
        .order_by()
        .values_list("refund__merchant_no")
        .annotate(count=Count("id"), last=Max("queried_at"))
    )
    by_merchant = {merchant: {"count": count, "last": last} for merchant, count, last in rows}
    if not by_merchant:
        message = gettext("No signature failures in the last %(window)s.") % {"window": window}
        return HealthCheck("signature", HealthStatus.OK, message, {})
    sentences = []
    for merchant, figures in sorted(by_merchant.items()):
        sentences.append(
            ngettext(
                "Merchant %(merchant)s: %(count)d answer in the last %(window)s had a signature "
                "that does not verify (the last at %(last)s). HSQ may have changed its platform "
                "certificate: fetch the new MANDAO_%(merchant)s_pub.cer from HSQ and update "
                "%(setting)s.",
                "Merchant %(merchant)s: %(count)d answers in the last %(window)s had a signature "
                "that does not verify (the last at %(last)s). HSQ may have changed its platform "
                "certificate: fetch the new MANDAO_%(merchant)s_pub.cer from HSQ and update "
                "%(setting)s.",
                figures["count"],
            )
            % {
                "merchant": merchant,
                "count": figures["count"],
                "window": window,
                "last": _when(figures["last"]),
                "setting": setting_path("MERCHANTS", merchant, "PLATFORM_CERT"),
            }
        )
    value = {
        merchant: {"count": figures["count"], "last": figures["last"].isoformat()}
        for merchant, figures in by_merchant.items()
    }
    return HealthCheck("signature", HealthStatus.CRITICAL, " ".join(sentences), value)


def _check_schedule(now: datetime, limits: HealthSettings) -> HealthCheck:
    from .scheduling import SCHEDULE_NAME

    if not apps.is_installed("django_q"):
        return HealthCheck(
            "schedule",
            HealthStatus.OK,
            gettext("django-q2 is not installed: syncs are expected from cron."),
            None,
        )
    from django_q.models import Schedule

    try:
        row = (
            Schedule.objects.filter(name=SCHEDULE_NAME)
            .order_by("pk")
            .values("minutes", "next_run")
            .first()
        )
    except DatabaseError:
        logger.warning("could not read the django-q2 schedule", exc_info=True)
        return HealthCheck(
            "schedule",
            HealthStatus.WARNING,
            gettext("The django-q2 schedule could not be read (has “manage.py migrate” run?)."),
            None,
        )
    if row is None:
        return HealthCheck(
            "schedule",
            HealthStatus.WARNING,
            gettext(
                "django-q2 is installed but the sync schedule %(name)s is not: run "
                "“manage.py hsq_refunds_schedule” (or sync from cron instead)."
            )
            % {"name": SCHEDULE_NAME},
            None,
        )
    next_run = row["next_run"]
    value = {"minutes": row["minutes"], "next_run": next_run.isoformat() if next_run else None}
    late = (now - next_run).total_seconds() if next_run else 0.0
    status = _level(late, limits.LAST_SYNC_WARNING, limits.LAST_SYNC_CRITICAL)
    if status.is_ok:
        message = ngettext(
            "The sync schedule runs every %(minutes)d minute.",
            "The sync schedule runs every %(minutes)d minutes.",
            row["minutes"] or 0,
        ) % {"minutes": row["minutes"] or 0}
    else:
        message = gettext(
            "The sync schedule should have run %(age)s ago: is “manage.py qcluster” running?"
        ) % {"age": _age(late)}
    return HealthCheck("schedule", status, message, value)
