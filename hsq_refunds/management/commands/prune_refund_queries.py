"""``manage.py prune_refund_queries``: delete old audit rows (``RefundQuery``).

Rows older than ``HSQ_REFUNDS["QUERY_LOG_RETENTION_DAYS"]`` (default 90) are deleted, in
batches; ``--days`` overrides the setting (at least 1: the audit rows are the evidence behind
every status, and deleting all of them at once is never what a typo should do). Run it daily
from cron, or schedule it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext, ngettext

from hsq_refunds.conf import get_settings
from hsq_refunds.models import RefundQuery


class Command(BaseCommand):
    @property
    def help(self) -> str:  # type: ignore[override]
        """Translated when the parser is built (argparse cannot format lazy text)."""
        return gettext("Delete refund query records older than the retention period.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            help=gettext('Keep this many days (default: HSQ_REFUNDS["QUERY_LOG_RETENTION_DAYS"]).'),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days is not None and days < 1:
            raise CommandError(
                gettext(
                    "--days must be at least 1 (got %(days)d): the audit rows are the evidence "
                    "behind each refund's status."
                )
                % {"days": days}
            )
        if days is None:
            days = get_settings().QUERY_LOG_RETENTION_DAYS
        if days is None:
            if options["verbosity"] >= 1:
                self.stdout.write(
                    gettext("QUERY_LOG_RETENTION_DAYS is None: refund queries are kept.")
                )
            return
        deleted = RefundQuery.objects.prune(timedelta(days=days))
        if options["verbosity"] >= 1:
            self.stdout.write(
                ngettext(
                    "Deleted %(count)d refund query older than %(days)d days.",
                    "Deleted %(count)d refund queries older than %(days)d days.",
                    deleted,
                )
                % {"count": deleted, "days": days}
            )
