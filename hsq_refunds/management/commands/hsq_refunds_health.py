"""``manage.py hsq_refunds_health [--json]``: the health of the refund sync, for monitoring.

Prints one line per check (see :mod:`hsq_refunds.health`) after a first line with the overall
status, in the active language; ``--json`` prints :meth:`HealthReport.as_dict` instead.

Exit status, as monitoring plugins (Nagios, Icinga, Zabbix) expect: 0 every check is ok,
1 a warning, 2 something is critical (the database cannot be read included), 3 the check
itself cannot run (``HSQ_REFUNDS["HEALTH"]`` is invalid).

System checks are not run first: a broken setting must show as a figure, not stop the check.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext

from hsq_refunds.gateway import ConfigurationError
from hsq_refunds.gateway.text import printable
from hsq_refunds.health import HealthReport, HealthStatus, check_health

#: The exit status when the thresholds themselves are invalid ("UNKNOWN" to monitoring).
EXIT_UNKNOWN = 3


class Command(BaseCommand):
    requires_system_checks: list[str] = []

    @property
    def help(self) -> str:  # type: ignore[override]
        """Translated when the parser is built (argparse cannot format lazy text)."""
        return gettext(
            "Check the health of the refund sync. Exit status: 0 ok, 1 warning, 2 critical, "
            '3 HSQ_REFUNDS["HEALTH"] is invalid.'
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help=gettext("Print the checks as JSON on stdout."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = check_health()
        except ConfigurationError as exc:
            raise CommandError(
                gettext("Configuration error: %(error)s") % {"error": exc.message},
                returncode=EXIT_UNKNOWN,
            ) from None
        if options["as_json"]:
            self.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False, default=str))
        else:
            self.output(report)
        if report.status is not HealthStatus.OK:
            raise SystemExit(int(report.status))

    def output(self, report: HealthReport) -> None:
        styles = {
            HealthStatus.OK: self.style.SUCCESS,
            HealthStatus.WARNING: self.style.WARNING,
            HealthStatus.CRITICAL: self.style.ERROR,
        }
        status = report.status
        self.stdout.write(
            styles[status](gettext("HSQ refunds: %(status)s") % {"status": status.display()})
        )
        for check in report.checks:
            line = f"[{check.status.display()}] {check.name}: {printable(check.message)}"
            self.stdout.write(styles[check.status](line) if check.status else line)
