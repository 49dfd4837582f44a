"""The django-q2 schedule that syncs due refunds.

The schedule is one row of django-q2's ``Schedule`` table, named :data:`SCHEDULE_NAME`, that
calls :func:`hsq_refunds.tasks.sync_due_refunds` every ``SCHEDULE_MINUTES`` minutes. It is
installed by ``manage.py hsq_refunds_schedule`` after ``migrate``, not from
``AppConfig.ready()`` (which runs in every process, web workers included, possibly before the
table exists) nor from a data migration (which would tie this app's migrations to django-q2's
and could not follow a change of ``SCHEDULE_MINUTES``). Running the command again is safe: it
updates the row in place and removes duplicates that concurrent deploys may have created.
:mod:`hsq_refunds.checks` checks the task setup (``W020`` to ``W022``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import router, transaction
from django.utils import timezone

__all__ = [
    "SCHEDULE_FUNC",
    "SCHEDULE_NAME",
    "ScheduleAction",
    "ScheduleResult",
    "install_schedule",
    "remove_schedule",
]

logger = logging.getLogger("hsq_refunds.scheduling")

#: The name of the schedule row (django-q2 names are not unique; this app keeps one).
SCHEDULE_NAME = "hsq_refunds.sync_due_refunds"
#: What the schedule calls.
SCHEDULE_FUNC = "hsq_refunds.tasks.sync_due_refunds"
#: The most minutes ``Schedule.minutes`` (a PositiveSmallIntegerField) holds.
MAX_MINUTES = 32767

#: ``Q_CLUSTER["retry"]`` when it is not set (django-q2's own default).
DJANGO_Q_DEFAULT_RETRY = 60
#: How an empty ``args``/``kwargs``/``hook`` may be stored: ``schedule()`` writes ``()``/``{}``,
#: the admin leaves an empty string.
_EMPTY = ("", "()", "{}")


class ScheduleAction(StrEnum):
    """What :func:`install_schedule` or :func:`remove_schedule` did."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REMOVED = "removed"
    ABSENT = "absent"


@dataclass(frozen=True)
class ScheduleResult:
    """The outcome, and the schedule as it now is (``minutes``/``next_run`` unset if gone)."""

    action: ScheduleAction
    minutes: int | None = None
    next_run: datetime | None = None


def _require_django_q() -> None:
    if not apps.is_installed("django_q"):
        raise ImproperlyConfigured(
            "'django_q' is not in INSTALLED_APPS: add it (and run migrate) to schedule syncs"
        )


def install_schedule(minutes: int) -> ScheduleResult:
    """Create the schedule, or bring the existing one to ``minutes``; idempotent.

    A new schedule first runs one interval from now, not at once: installing it during a
    deploy must not start a sync while the old code may still be running. An existing one
    keeps its next run unless that is further away than the new interval.
    """
    _require_django_q()
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be between 1 and {MAX_MINUTES}, not {minutes}")
    from django_q.models import Schedule
    from django_q.tasks import schedule

    now = timezone.now()
    interval = timedelta(minutes=minutes)
    with transaction.atomic(using=router.db_for_write(Schedule)):
        rows = list(Schedule.objects.select_for_update().filter(name=SCHEDULE_NAME).order_by("pk"))
        if not rows:
            created = schedule(
                SCHEDULE_FUNC,
                name=SCHEDULE_NAME,
                schedule_type=Schedule.MINUTES,
                minutes=minutes,
                repeats=-1,
                next_run=now + interval,
            )
            logger.info("created schedule %s every %d minute(s)", SCHEDULE_NAME, minutes)
            return ScheduleResult(ScheduleAction.CREATED, minutes, created.next_run)
        row, duplicates = rows[0], rows[1:]
        for duplicate in duplicates:
            duplicate.delete()
        changed = _apply(row, Schedule, minutes, now + interval)
        if changed:
            row.full_clean()
            row.save()
        action = ScheduleAction.UPDATED if changed or duplicates else ScheduleAction.UNCHANGED
        if action is ScheduleAction.UPDATED:
            logger.info("updated schedule %s every %d minute(s)", SCHEDULE_NAME, minutes)
        return ScheduleResult(action, minutes, row.next_run)


def _apply(row: Any, schedule_model: Any, minutes: int, latest_next_run: datetime) -> bool:
    """Set what this app's schedule must be on ``row``; ``True`` if anything changed."""
    wanted: dict[str, Any] = {
        "func": SCHEDULE_FUNC,
        "schedule_type": schedule_model.MINUTES,
        "minutes": minutes,
        "repeats": -1,
        "cron": None,
        "args": None,
        "kwargs": None,
        "hook": None,
        "cluster": None,
    }
    changed = False
    for field, value in wanted.items():
        current = getattr(row, field)
        if current != value and not (value is None and current in _EMPTY):
            setattr(row, field, value)
            changed = True
    if row.next_run is None or row.next_run > latest_next_run:
        row.next_run = latest_next_run
        changed = True
    return changed


def remove_schedule() -> ScheduleResult:
    """Delete the schedule (every row of that name); ``ABSENT`` if there was none."""
    _require_django_q()
    from django_q.models import Schedule

    deleted, _ = Schedule.objects.filter(name=SCHEDULE_NAME).delete()
    if deleted:
        logger.info("removed schedule %s", SCHEDULE_NAME)
        return ScheduleResult(ScheduleAction.REMOVED)
    return ScheduleResult(ScheduleAction.ABSENT)
