"""``manage.py export_refunds``: refunds as CSV for reconciliation, e.g. from cron each morning.

    manage.py export_refunds [--since DATE] [--until DATE] [--by applied|finished]
                             [--status S ...] [--merchant NO] [-o FILE]

The columns are those of the admin's "Export CSV" (:data:`hsq_refunds.export.COLUMNS`), with
headers in the active language (``LANGUAGE_CODE``); UTF-8 with a byte-order mark. Dates are
Beijing days: ``--since 2026-12-01 --until 2026-12-01`` is the whole of 1 December in Beijing.
``--by finished`` selects by the time HSQ finished the refund instead of when it was applied
for. Without ``-o`` the file goes to stdout. Rows are streamed: memory stays flat at any size.
"""

from __future__ import annotations

import sys
from datetime import date, datetime, time, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext, ngettext

from hsq_refunds.choices import Status
from hsq_refunds.export import BEIJING, CsvExport
from hsq_refunds.models import Refund


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(
            gettext("%(value)r is not a date (YYYY-MM-DD).") % {"value": value}
        ) from None


class Command(BaseCommand):
    requires_system_checks: list[str] = []

    @property
    def help(self) -> str:  # type: ignore[override]
        """Translated when the parser is built (argparse cannot format lazy text)."""
        return gettext(
            "Export refunds as CSV (UTF-8 with BOM; amounts in yuan and fen; Beijing times)."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since", metavar="DATE", help=gettext("From this Beijing day on (YYYY-MM-DD).")
        )
        parser.add_argument(
            "--until",
            metavar="DATE",
            help=gettext("Up to and including this Beijing day (YYYY-MM-DD)."),
        )
        parser.add_argument(
            "--by",
            choices=("applied", "finished"),
            default="applied",
            help=gettext(
                "Which time --since and --until apply to: when the refund was applied for "
                "(default) or when HSQ finished it."
            ),
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=Status.values,
            help=gettext("Only refunds with this status (may be given several times)."),
        )
        parser.add_argument("--merchant", help=gettext("Only this merchant number's refunds."))
        parser.add_argument(
            "-o", "--output", metavar="FILE", help=gettext("Write to FILE instead of stdout.")
        )

    def handle(self, *args: Any, **options: Any) -> None:
        export = CsvExport(self.selection(options))
        output = options["output"]
        if output:
            try:
                with open(output, "wb") as handle:
                    for piece in export:
                        handle.write(piece)
            except OSError as exc:
                raise CommandError(
                    gettext("Cannot write %(file)s: %(error)s")
                    % {"file": output, "error": exc.strerror or exc}
                ) from None
            if options["verbosity"] >= 1:
                self.stderr.write(
                    ngettext(
                        "%(count)d refund exported to %(file)s.",
                        "%(count)d refunds exported to %(file)s.",
                        export.rows,
                    )
                    % {"count": export.rows, "file": output}
                )
            return
        out = getattr(self.stdout, "_out", sys.stdout)
        binary = getattr(out, "buffer", None)
        if binary is None:  # a text stream (``call_command(stdout=StringIO())``)
            for piece in export:
                out.write(piece.decode("utf-8"))
            return
        out.flush()
        for piece in export:
            binary.write(piece)
        binary.flush()

    def selection(self, options: dict[str, Any]) -> Any:
        field = "applied_at" if options["by"] == "applied" else "finished_at"
        queryset = Refund.objects.all()
        since = _day(options["since"]) if options["since"] else None
        until = _day(options["until"]) if options["until"] else None
        if since and until and until < since:
            raise CommandError(gettext("--until is before --since."))
        if since:
            queryset = queryset.filter(
                **{f"{field}__gte": datetime.combine(since, time(), BEIJING)}
            )
        if until:
            end = datetime.combine(until + timedelta(days=1), time(), BEIJING)
            queryset = queryset.filter(**{f"{field}__lt": end})
        if options["status"]:
            queryset = queryset.filter(status__in=options["status"])
        if options["merchant"]:
            queryset = queryset.filter(merchant_no=options["merchant"])
        return queryset.order_by(field, "id")
