"""``manage.py sync_refunds``: ask HSQ about refunds and record the answers, for cron.

By default the refunds that are due are synced. Give transNos to query those refunds now
(whether due or not), ``--all`` for every unfinished refund, ``--errored-only`` to retry those
whose last query failed, without waiting for their backoff.

Output: the errors (one line each) and a one-line summary on stdout; ``--json`` prints the
report as JSON instead; ``-v 0`` prints the summary alone. A progress bar goes to stderr when
it is a terminal, plain progress lines otherwise.

System checks are not run first (a configuration error must exit with 2, not with Django's 1);
run ``manage.py check`` after deploying.

Exit status: 0 when every refund was queried without error; 1 when any query failed or a
given transNo is not tracked; 2 for configuration errors (``HSQ_REFUNDS`` invalid, an unknown
``--merchant``, a refund whose merchant is not configured or whose keys cannot be loaded).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext, ngettext

from hsq_refunds.gateway import ConfigurationError
from hsq_refunds.gateway.text import printable
from hsq_refunds.management.progress import Progress, quiet_unless_logged
from hsq_refunds.models import SyncTrigger
from hsq_refunds.sync import SyncReport, sync_refunds

EXIT_FAILED = 1
EXIT_CONFIGURATION = 2


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(gettext("must be at least 1"))
    return number


def _not_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(gettext("must be at least 0"))
    return number


class Command(BaseCommand):
    # The settings are checked by the sync itself, so that a configuration error exits with 2
    # (Django's own checks would exit with 1); ``manage.py check`` reports them all.
    requires_system_checks: list[str] = []

    @property
    def help(self) -> str:  # type: ignore[override]
        """Translated when the parser is built (argparse cannot format lazy text)."""
        return gettext(
            "Ask HSQ about the refunds that are due (or the given transNos) and record the "
            "answers. Exit status: 0 all queried without error, 1 some failed, 2 configuration "
            "error."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "trans_nos",
            nargs="*",
            metavar="TRANS_NO",
            help=gettext("Query these refunds now, whether due or not."),
        )
        parser.add_argument(
            "--all",
            action="store_true",
            dest="all_open",
            help=gettext("Every unfinished refund, regardless of its schedule."),
        )
        parser.add_argument(
            "--include-final",
            action="store_true",
            help=gettext("With --all, also refunds that already succeeded or failed."),
        )
        parser.add_argument(
            "--errored-only",
            action="store_true",
            help=gettext(
                "Only refunds whose last query failed, now rather than after their backoff."
            ),
        )
        parser.add_argument("--merchant", help=gettext("Only this merchant number's refunds."))
        parser.add_argument(
            "--limit", type=_not_negative, help=gettext("Query at most this many refunds.")
        )
        parser.add_argument(
            "--concurrency",
            type=_positive,
            help=gettext('Queries in flight at once (default: HSQ_REFUNDS["CONCURRENCY"]).'),
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help=gettext("Query HSQ and report, but write nothing."),
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help=gettext("Print the report as JSON on stdout."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        trans_nos = options["trans_nos"]
        verbosity = options["verbosity"]
        stream = getattr(self.stderr, "_out", sys.stderr)
        progress = Progress(stream, bar=self.stderr.isatty()) if verbosity >= 1 else None
        try:
            with quiet_unless_logged(verbosity):
                report = sync_refunds(
                    trans_nos=list(trans_nos) or None,
                    merchant_no=options["merchant"],
                    due_only=not (options["all_open"] or options["errored_only"]),
                    include_final=options["include_final"],
                    errored_only=options["errored_only"],
                    limit=options["limit"],
                    concurrency=options["concurrency"],
                    dry_run=options["dry_run"],
                    progress=progress,
                    trigger=SyncTrigger.COMMAND,
                )
        except ConfigurationError as exc:
            raise CommandError(
                gettext("Configuration error: %(error)s") % {"error": exc.message},
                returncode=EXIT_CONFIGURATION,
            ) from None
        finally:
            if progress is not None:
                progress.close()
        self.output(report, as_json=options["as_json"], verbosity=verbosity)
        self.exit(report)

    def output(self, report: SyncReport, *, as_json: bool, verbosity: int) -> None:
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False, sort_keys=True))
            return
        if verbosity >= 1:
            for error in report.errors:
                code = f" {error.code}" if error.code else ""
                line = (
                    f"{error.trans_no} [{error.merchant_no or '-'}]: "
                    f"{error.error_type}{code} {error.message}"
                )
                self.stdout.write(printable(line))
        style = self.style.SUCCESS if report.ok else self.style.ERROR
        self.stdout.write(style(report.summary()))

    def exit(self, report: SyncReport) -> None:
        if report.configuration_errors:
            raise CommandError(
                gettext(
                    "Some refunds could not be queried because of the configuration; run "
                    "“manage.py check”."
                ),
                returncode=EXIT_CONFIGURATION,
            )
        if not report.ok:
            count = len(report.errors)
            raise CommandError(
                ngettext(
                    "%(count)d refund could not be synced.",
                    "%(count)d refunds could not be synced.",
                    count,
                )
                % {"count": count},
                returncode=EXIT_FAILED,
            )
