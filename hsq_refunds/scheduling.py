"""The django-q2 schedule that syncs due refunds, and the system checks of the task setup.

The schedule is one row of django-q2's ``Schedule`` table, named :data:`SCHEDULE_NAME`, that
calls :func:`hsq_refunds.tasks.sync_due_refunds` every ``SCHEDULE_MINUTES`` minutes. It is
installed by ``manage.py hsq_refunds_schedule`` after ``migrate``, not from
``AppConfig.ready()`` (which runs in every process, web workers included, possibly before the
table exists) nor from a data migration (which would tie this app's migrations to django-q2's
and could not follow a change of ``SCHEDULE_MINUTES``). Running the command again is safe: it
updates the row in place and removes duplicates that concurrent deploys may have created.

The checks below are registered when this module is imported (the app config imports it),
under the tag ``hsq_refunds_tasks``:

``W020`` (:data:`~hsq_refunds.checks.W020_SCHEDULE_NOT_RUN`): the schedule is in the database
but ``django_q`` is not installed, so nothing runs it (a ``--database`` check: ``migrate`` runs
it); ``W021`` (:data:`~hsq_refunds.checks.W021_Q_TIMEOUT_RETRY`): ``Q_CLUSTER["timeout"]`` is
missing or not below ``["retry"]``; ``W022`` (:data:`~hsq_refunds.checks.W022_Q_BATCH_TIMEOUT`):
``Q_CLUSTER["timeout"]`` is shorter than a batch of ``TASK_BATCH_SIZE`` refunds may take when
every query runs to ``QUERY_DEADLINE``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, router, transaction
from django.utils import timezone

from .checks import W020_SCHEDULE_NOT_RUN, W021_Q_TIMEOUT_RETRY, W022_Q_BATCH_TIMEOUT

__all__ = [
    "CHECK_TAG",
    "SCHEDULE_FUNC",
    "SCHEDULE_NAME",
    "ScheduleAction",
    "ScheduleResult",
    "check_q_cluster",
    "check_schedule_runner",
    "install_schedule",
    "q_cluster_options",
    "remove_schedule",
]

logger = logging.getLogger("hsq_refunds.scheduling")

#: The name of the schedule row (django-q2 names are not unique; this app keeps one).
SCHEDULE_NAME = "hsq_refunds.sync_due_refunds"
#: What the schedule calls.
SCHEDULE_FUNC = "hsq_refunds.tasks.sync_due_refunds"
#: The tag of these checks: ``manage.py check --tag hsq_refunds_tasks`` runs them alone.
CHECK_TAG = "hsq_refunds_tasks"
#: The most minutes ``Schedule.minutes`` (a PositiveSmallIntegerField) holds.
MAX_MINUTES = 32767

#: ``Q_CLUSTER["retry"]`` when it is not set (django-q2's own default).
DJANGO_Q_DEFAULT_RETRY = 60
_SCHEDULE_TABLE = "django_q_schedule"
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


# --------------------------------------------------------------------------- checks


def q_cluster_options() -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``Q_CLUSTER`` and each of its ``ALT_CLUSTERS``, as django-q2 merges them.

    Yields ``(path, options)`` where ``path`` is how a message names the dict, e.g.
    ``Q_CLUSTER`` or ``Q_CLUSTER["ALT_CLUSTERS"]["long"]``.
    """
    conf = getattr(settings, "Q_CLUSTER", None)
    if not isinstance(conf, Mapping):
        return
    yield "Q_CLUSTER", conf
    alt = conf.get("ALT_CLUSTERS")
    if isinstance(alt, Mapping):
        for name, options in alt.items():
            if isinstance(options, Mapping):
                yield f'Q_CLUSTER["ALT_CLUSTERS"]["{name}"]', {**conf, **options}


def _seconds(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@register(CHECK_TAG)
def check_q_cluster(app_configs: Iterable[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """``Q_CLUSTER`` timings that would run a sync task twice, or cut batches short."""
    if not apps.is_installed("django_q"):
        return []
    messages: list[CheckMessage] = []
    for path, options in q_cluster_options():
        messages.extend(_check_timeout_retry(path, options))
        messages.extend(_check_batch_time(path, options))
    return messages


def _check_timeout_retry(path: str, options: Mapping[str, Any]) -> list[CheckMessage]:
    timeout = _seconds(options.get("timeout"))
    retry = _seconds(options.get("retry", DJANGO_Q_DEFAULT_RETRY))
    if timeout is not None and retry is not None and timeout < retry:
        return []
    if timeout is None:
        problem = f'{path}["timeout"] is not set: a stuck sync task is never stopped'
    else:
        shown_retry = options.get("retry", f"{DJANGO_Q_DEFAULT_RETRY} (the default)")
        problem = (
            f'{path}["timeout"] ({options.get("timeout")}) is not below {path}["retry"] '
            f"({shown_retry}): the broker hands a task that is still running to another "
            "worker, which then syncs the same refunds again"
        )
    return [
        Warning(
            problem,
            hint=(
                f'Set {path}["timeout"] to the longest a sync task may run (e.g. 240) and '
                f'{path}["retry"] above it (e.g. 300).'
            ),
            id=W021_Q_TIMEOUT_RETRY,
        )
    ]


def _check_batch_time(path: str, options: Mapping[str, Any]) -> list[CheckMessage]:
    """A batch task must be able to finish when every query in it runs to its deadline.

    A batch of ``TASK_BATCH_SIZE`` refunds is queried ``CONCURRENCY`` at a time, so in
    ``ceil(TASK_BATCH_SIZE / CONCURRENCY)`` rounds; a round lasts as long as its slowest query,
    at most ``QUERY_DEADLINE`` (by default every attempt's connect and read timeouts and the
    waits between retries).
    """
    from .conf import inspect_settings, setting_path

    timeout = _seconds(options.get("timeout"))
    if timeout is None:
        return []
    policy = inspect_settings()[0]
    rounds = math.ceil(policy.TASK_BATCH_SIZE / policy.CONCURRENCY)
    needed = rounds * policy.QUERY_DEADLINE
    if timeout >= needed:
        return []
    return [
        Warning(
            f'{path}["timeout"] ({options["timeout"]}) is shorter than a sync batch may need: '
            f"{setting_path('TASK_BATCH_SIZE')} ({policy.TASK_BATCH_SIZE}) refunds, "
            f"{setting_path('CONCURRENCY')} ({policy.CONCURRENCY}) at a time, take up to "
            f"{needed:g} s when every query runs to {setting_path('QUERY_DEADLINE')} "
            f"({policy.QUERY_DEADLINE:g} s: connect timeouts, reads and retries, "
            f"{setting_path('CONNECT_TIMEOUT')} {policy.CONNECT_TIMEOUT:g} s, "
            f"{setting_path('READ_TIMEOUT')} {policy.READ_TIMEOUT:g} s, "
            f"{setting_path('RETRIES')} {policy.RETRIES}); the rest of a batch that is cut off "
            "waits for a later cycle",
            hint=(
                f'Raise {path}["timeout"] to {needed:g} or more (and "retry" above it), or lower '
                'HSQ_REFUNDS["TASK_BATCH_SIZE"], HSQ_REFUNDS["QUERY_DEADLINE"] or the timeouts '
                "and retries it is computed from."
            ),
            id=W022_Q_BATCH_TIMEOUT,
        )
    ]


@register(Tags.database, CHECK_TAG)
def check_schedule_runner(
    app_configs: Iterable[Any] | None = None,
    databases: Iterable[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """The schedule is installed but ``django_q`` is not: nothing will ever run it.

    A database check (``migrate``, or ``check --database default``). Without ``django_q`` in
    ``INSTALLED_APPS`` its models cannot be used, so the table is looked up and read directly,
    and a database that cannot answer is skipped rather than reported.
    """
    if databases is None or apps.is_installed("django_q"):
        return []
    messages: list[CheckMessage] = []
    for alias in databases:
        if _schedule_row_exists(alias):
            messages.append(
                Warning(
                    f"the django-q2 schedule {SCHEDULE_NAME!r} is in database {alias!r}, but "
                    "'django_q' is not in INSTALLED_APPS: no scheduled sync will run",
                    hint=(
                        "Add 'django_q' to INSTALLED_APPS and run 'manage.py qcluster'; or, "
                        "to stop scheduled syncs, run 'manage.py hsq_refunds_schedule --remove' "
                        "while django_q is still installed, or delete that row from "
                        f"{_SCHEDULE_TABLE}. Use cron with 'manage.py sync_refunds' instead."
                    ),
                    id=W020_SCHEDULE_NOT_RUN,
                )
            )
    return messages


def _schedule_row_exists(alias: str) -> bool:
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            if _SCHEDULE_TABLE not in connection.introspection.table_names(cursor):
                return False
            table = connection.ops.quote_name(_SCHEDULE_TABLE)
            cursor.execute(
                f"SELECT 1 FROM {table} WHERE name = %s OR func = %s",  # noqa: S608
                [SCHEDULE_NAME, SCHEDULE_FUNC],
            )
            return cursor.fetchone() is not None
    except DatabaseError:
        logger.debug("could not look for the schedule in database %r", alias, exc_info=True)
        return False
