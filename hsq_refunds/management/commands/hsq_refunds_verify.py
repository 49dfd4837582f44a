"""``manage.py hsq_refunds_verify``: show that HSQ said so, for every final refund.

Re-verifies the answer that made each refund final (kept on the refund as received, see
:mod:`hsq_refunds.proof`) against the configured platform certificates and sign keys, and checks
that it agrees with the row. All final refunds by default, read in pages; give transNos or
``--merchant`` to narrow it. Prints each refund whose proof does not hold, and a summary;
``--json`` prints the result as JSON.

Refunds that became final before proofs were kept have none; they are counted and, with
``--require-proof``, fail the run too.

Exit status: 0 every proof holds; 1 some proof does not; 2 configuration error.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext, ngettext

from hsq_refunds.conf import get_settings
from hsq_refunds.gateway import ConfigurationError
from hsq_refunds.gateway.text import printable
from hsq_refunds.management.progress import Progress, verified
from hsq_refunds.models import Refund
from hsq_refunds.proof import ProofFailure, ProofKeys, check_proof

EXIT_FAILED = 1
EXIT_CONFIGURATION = 2


class Command(BaseCommand):
    requires_system_checks: list[str] = []

    @property
    def help(self) -> str:  # type: ignore[override]
        return gettext(
            "Re-verify HSQ's signed answers behind every final refund. Exit status: 0 all "
            "verify, 1 some do not, 2 configuration error."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "trans_nos", nargs="*", metavar="TRANS_NO", help=gettext("Only these refunds.")
        )
        parser.add_argument("--merchant", help=gettext("Only this merchant number's refunds."))
        parser.add_argument(
            "--require-proof",
            action="store_true",
            help=gettext("A final refund without a stored proof fails the run too."),
        )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help=gettext("Print JSON on stdout.")
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            policy = get_settings()
            keys = ProofKeys()
        except ConfigurationError as exc:
            raise self.configuration_error(exc) from None
        refunds = Refund.objects.final()
        if options["trans_nos"]:
            refunds = refunds.filter(trans_no__in=options["trans_nos"])
        if options["merchant"]:
            refunds = refunds.filter(merchant_no=options["merchant"])
        verbosity = options["verbosity"]
        progress = None
        if verbosity >= 1 and not options["as_json"]:
            stream = getattr(self.stderr, "_out", sys.stderr)
            progress = Progress(stream, bar=self.stderr.isatty(), counted=verified)
        total = refunds.count()
        checked = 0
        failures: list[ProofFailure] = []
        try:
            for page in refunds.id_pages(policy.CHUNK_SIZE):
                for refund in Refund.objects.filter(id__in=page).order_by("id"):
                    failure = check_proof(refund, keys)
                    if failure is not None:
                        failures.append(failure)
                    checked += 1
                    if progress is not None:
                        progress(checked, total)
        except ConfigurationError as exc:
            raise self.configuration_error(exc) from None
        finally:
            if progress is not None:
                progress.close()
        missing = [failure for failure in failures if failure.kind == "missing"]
        broken = [failure for failure in failures if failure.kind != "missing"]
        failed = broken + (missing if options["require_proof"] else [])
        self.output(checked, broken, missing, as_json=options["as_json"], verbosity=verbosity)
        if failed:
            raise CommandError(
                ngettext(
                    "%(count)d refund's proof does not hold.",
                    "%(count)d refunds' proofs do not hold.",
                    len(failed),
                )
                % {"count": len(failed)},
                returncode=EXIT_FAILED,
            )

    def output(
        self,
        checked: int,
        broken: list[ProofFailure],
        missing: list[ProofFailure],
        *,
        as_json: bool,
        verbosity: int,
    ) -> None:
        if as_json:
            data = {
                "checked": checked,
                "verified": checked - len(broken) - len(missing),
                "failed": [asdict(failure) for failure in broken],
                "missing": [asdict(failure) for failure in missing],
            }
            self.stdout.write(json.dumps(data, ensure_ascii=False, sort_keys=True))
            return
        for failure in broken + (missing if verbosity >= 2 else []):
            line = f"{failure.trans_no} [{failure.merchant_no}]: {failure.message}"
            self.stdout.write(printable(line))
        summary = gettext(
            "%(checked)d final refunds checked: %(verified)d verified, %(broken)d do not "
            "verify, %(missing)d without a stored proof."
        ) % {
            "checked": checked,
            "verified": checked - len(broken) - len(missing),
            "broken": len(broken),
            "missing": len(missing),
        }
        style = self.style.ERROR if broken else self.style.SUCCESS
        self.stdout.write(style(summary))

    @staticmethod
    def configuration_error(exc: ConfigurationError) -> CommandError:
        return CommandError(
            gettext("Configuration error: %(error)s") % {"error": exc.message},
            returncode=EXIT_CONFIGURATION,
        )
