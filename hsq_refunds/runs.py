"""The record of each sync run: one :class:`~hsq_refunds.models.SyncRun` per run that is not a
dry run, which the health checks and the admin dashboard read."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings as django_settings
from django.db import router, transaction
from django.utils import translation

from .conf import get_settings
from .models import SyncRun, SyncTrigger
from .report import SyncReport

__all__ = ["record_sync_run"]

logger = logging.getLogger("hsq_refunds.sync")


def record_sync_run(
    report: SyncReport, *, started_at: datetime, finished_at: datetime, trigger: str
) -> None:
    """Record a finished sync run; dry runs are not.

    The row is written when the caller's transaction commits (at once outside one), so a run
    rolled back with its caller's transaction leaves no record, and recording cannot break that
    transaction. Runs older than ``RUN_RETENTION_DAYS`` are deleted at the same time. Never
    raises: a failure is logged and the caller goes on.
    """
    try:
        if report.dry_run:
            return
        errors = Counter(error.error_type for error in report.errors)
        # Stored in the site's language, whichever language the run was started in.
        with translation.override(django_settings.LANGUAGE_CODE):
            summary = str(report.summary())
        run = SyncRun(
            started_at=started_at,
            finished_at=finished_at,
            trigger=trigger if trigger in SyncTrigger.values else SyncTrigger.API,
            selected=report.selected,
            queried=report.queried,
            error_count=len(report.errors),
            errors_by_type=dict(errors),
            ok=bool(report.ok),
            summary=summary,
        )
        using = router.db_for_write(SyncRun)
        transaction.on_commit(lambda: _save_run(run, using), using=using)
    except Exception:
        logger.exception("could not record the sync run")


def _save_run(run: SyncRun, using: str) -> None:
    # Each write in a transaction (a savepoint, should a transaction be open) of its own: a
    # failure leaves nothing half-done behind.
    try:
        with transaction.atomic(using=using):
            run.save(using=using)
    except Exception:
        logger.exception("could not record the sync run that finished at %s", run.finished_at)
        return
    try:
        days = get_settings().HEALTH.RUN_RETENTION_DAYS
        if days is not None:
            with transaction.atomic(using=using):
                SyncRun.objects.using(using).prune(timedelta(days=days))
    except Exception:
        logger.exception("could not delete old sync runs")
