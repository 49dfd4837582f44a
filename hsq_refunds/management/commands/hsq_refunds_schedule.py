"""``manage.py hsq_refunds_schedule``: install, update or remove the scheduled sync.

Run it after ``migrate`` on every deploy; it is idempotent::

    python manage.py hsq_refunds_schedule              # every SCHEDULE_MINUTES (default 1)
    python manage.py hsq_refunds_schedule --minutes 5
    python manage.py hsq_refunds_schedule --remove

The schedule only says when to sync; ``manage.py qcluster`` processes do the work.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.translation import gettext, ngettext

from ...conf import get_settings
from ...gateway import ConfigurationError
from ...scheduling import (
    MAX_MINUTES,
    SCHEDULE_NAME,
    ScheduleAction,
    ScheduleResult,
    install_schedule,
    remove_schedule,
)


def _minutes(value: str) -> int:
    try:
        minutes = int(value)
    except ValueError:
        minutes = 0
    if not 1 <= minutes <= MAX_MINUTES:
        raise argparse.ArgumentTypeError(
            gettext("must be a whole number of minutes from 1 to %(max)d") % {"max": MAX_MINUTES}
        )
    return minutes


class Command(BaseCommand):
    @property
    def help(self) -> str:  # type: ignore[override]
        """Translated when the parser is built (argparse cannot format lazy text)."""
        return gettext(
            "Create or update the django-q2 schedule that syncs due refunds (idempotent; run it "
            "after migrate), or remove it with --remove."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--minutes",
            type=_minutes,
            default=None,
            help=gettext(
                'Minutes between syncs (default: HSQ_REFUNDS["SCHEDULE_MINUTES"], 1 unless set).'
            ),
        )
        group.add_argument(
            "--remove",
            action="store_true",
            help=gettext("Delete the schedule instead."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["remove"]:
                result = remove_schedule()
            else:
                minutes = options["minutes"] or get_settings().SCHEDULE_MINUTES
                result = install_schedule(minutes)
        except (ImproperlyConfigured, ConfigurationError) as exc:
            raise CommandError(str(exc)) from None
        if options["verbosity"] >= 1:
            self.stdout.write(self._describe(result))

    def _describe(self, result: ScheduleResult) -> str:
        values: dict[str, Any] = {"name": SCHEDULE_NAME}
        if result.minutes is not None:
            values["minutes"] = result.minutes
        if result.next_run is not None:
            values["next_run"] = timezone.localtime(result.next_run).isoformat(
                sep=" ", timespec="seconds"
            )
        if result.action is ScheduleAction.REMOVED:
            return gettext("Schedule “%(name)s” removed.") % values
        if result.action is ScheduleAction.ABSENT:
            return gettext("No schedule “%(name)s” to remove.") % values
        texts = {
            ScheduleAction.CREATED: ngettext(
                "Schedule “%(name)s” created: every %(minutes)d minute, first run at %(next_run)s.",
                "Schedule “%(name)s” created: every %(minutes)d minutes, first run at "
                "%(next_run)s.",
                result.minutes or 0,
            ),
            ScheduleAction.UPDATED: ngettext(
                "Schedule “%(name)s” updated: every %(minutes)d minute, next run at %(next_run)s.",
                "Schedule “%(name)s” updated: every %(minutes)d minutes, next run at %(next_run)s.",
                result.minutes or 0,
            ),
            ScheduleAction.UNCHANGED: ngettext(
                "Schedule “%(name)s” unchanged: every %(minutes)d minute, next run at "
                "%(next_run)s.",
                "Schedule “%(name)s” unchanged: every %(minutes)d minutes, next run at "
                "%(next_run)s.",
                result.minutes or 0,
            ),
        }
        return texts[result.action] % values
