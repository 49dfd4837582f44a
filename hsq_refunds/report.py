"""What a sync run did, and every word the app says about it: the report, error kinds and their
labels, and the sentences the admin and the commands show.

The engine (:mod:`hsq_refunds.sync`) fills a :class:`SyncReport` through
:meth:`SyncReport.record`; the admin and the management commands only word it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from django.utils.functional import Promise
from django.utils.translation import gettext, ngettext, pgettext
from django.utils.translation import gettext_lazy as _

from .choices import Outcome, Status
from .gateway import (
    ConfigurationError,
    GatewayError,
    InvalidRequestError,
    ResponseError,
    SignatureError,
    TransportError,
)
from .rules import INTERNAL, Decision

__all__ = [
    "CONFIGURATION",
    "ERROR_KINDS",
    "UNKNOWN_REFUND",
    "RefundFailure",
    "SyncReport",
    "describe_error",
    "describe_failures",
    "error_label",
]

#: ``RefundFailure.error_type`` of a transNo given explicitly that is not tracked.
UNKNOWN_REFUND = "unknown"
#: ``RefundFailure.error_type`` of a configuration error.
CONFIGURATION = ConfigurationError.kind

#: Every error type a failure can have (``RefundFailure.error_type``, ``Refund.last_error_type``)
#: and its label: the gateway's error classes by their ``kind``, the verified answers that are
#: failures by their outcome, and the app's own.
ERROR_KINDS: dict[str, Promise] = {
    TransportError.kind: _("network error"),
    SignatureError.kind: _("signature invalid"),
    GatewayError.kind: _("gateway error"),
    ResponseError.kind: _("malformed answer"),
    CONFIGURATION: _("configuration error"),
    InvalidRequestError.kind: _("invalid transNo"),
    Outcome.QUERY_FAILED.value: _("query failed at HSQ"),
    Outcome.NO_STATUS.value: _("answer without status"),
    INTERNAL: _("unexpected error"),
    UNKNOWN_REFUND: _("not tracked"),
}

#: How many failures a message lists one by one.
LISTED_FAILURES = 10


class _RefundLike(Protocol):
    trans_no: str
    merchant_no: str


_STATUS_ORDER = (Status.SUCCESS, Status.FAIL, Status.PROCESSING, Status.INIT, Status.UNKNOWN)


@dataclass(frozen=True)
class RefundFailure:
    """A refund whose query failed: what kind of error, the gateway's code, the message."""

    trans_no: str
    merchant_no: str
    error_type: str
    code: str
    message: str


@dataclass
class SyncReport:
    """What a sync run did. Counters are keyed by plain strings, so the report is JSON-able.

    ``selected``: refunds the selection produced (claimed or skipped); ``queried``: refunds
    asked about at HSQ (configuration errors are not queries); ``skipped``: refunds another run
    had claimed (or whose claim this run lost); ``outcomes``: per
    :class:`~hsq_refunds.choices.Outcome`; ``status_changes``: per ``(old, new)``; ``by_status``:
    status after the sync of every refund handled; ``flagged``: attention reasons raised;
    ``errors``: one :class:`RefundFailure` per refund whose query failed, and per explicitly
    given transNo that is not tracked.
    """

    selected: int = 0
    queried: int = 0
    skipped: int = 0
    dry_run: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)
    status_changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    flagged: Counter[str] = field(default_factory=Counter)
    errors: list[RefundFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every refund was queried without error."""
        return not self.errors

    @property
    def configuration_errors(self) -> bool:
        """Some refund could not be queried because of the settings."""
        return any(error.error_type == CONFIGURATION for error in self.errors)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-able data (``from_dict`` reads it back)."""
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "selected": self.selected,
            "queried": self.queried,
            "skipped": self.skipped,
            "outcomes": dict(self.outcomes),
            "status_changes": [
                {"from": old, "to": new, "count": count}
                for (old, new), count in sorted(self.status_changes.items())
            ],
            "by_status": dict(self.by_status),
            "answered": dict(self.answered),
            "flagged": dict(self.flagged),
            "errors": [asdict(error) for error in self.errors],
            "summary": str(self.summary()),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyncReport:
        """Rebuild a report from :meth:`as_dict` output (for results passed between processes)."""
        return cls(
            selected=data["selected"],
            queried=data["queried"],
            skipped=data["skipped"],
            dry_run=data["dry_run"],
            outcomes=Counter(data["outcomes"]),
            status_changes=Counter(
                {(item["from"], item["to"]): item["count"] for item in data["status_changes"]}
            ),
            by_status=Counter(data["by_status"]),
            answered=Counter(data.get("answered", {})),
            flagged=Counter(data["flagged"]),
            errors=[RefundFailure(**error) for error in data["errors"]],
        )

    def record(self, refund: _RefundLike, decision: Decision) -> None:
        """Count what one answer did to one refund (its outcome, status, flag, failure)."""
        self.outcomes[decision.outcome] += 1
        self.by_status[decision.new_status] += 1
        if decision.error is None:
            self.answered[decision.new_status] += 1
        if decision.queried:
            self.queried += 1
        if decision.status_changed:
            self.status_changes[(decision.old_status, decision.new_status)] += 1
        if decision.attention:
            self.flagged[decision.attention] += 1
        error = decision.error
        if error is not None:
            self.errors.append(
                RefundFailure(
                    refund.trans_no, refund.merchant_no, error.type, error.code, error.message
                )
            )

    def summary(self) -> str:
        """One sentence for people, in the active language."""
        handled = sum(self.outcomes.values())
        if not handled and not self.errors and not self.skipped:
            text = gettext("No refunds to sync.")
        else:
            failed = [error for error in self.errors if error.error_type != UNKNOWN_REFUND]
            untracked = len(self.errors) - len(failed)
            parts = []
            if handled and not failed:
                # Every refund asked about was answered: what the answers said.
                head = ngettext(
                    "%(count)d refund queried", "%(count)d refunds queried", handled
                ) % {"count": handled}
                statuses = _status_phrases(self.answered or self.by_status)
                parts.append(_detail(head, _join(statuses)) if statuses else head)
            elif handled:
                # Answered and failed add up to the refunds handled.
                clauses = []
                answered = handled - len(failed)
                if answered:
                    said = ngettext(
                        "HSQ answered %(count)d", "HSQ answered %(count)d", answered
                    ) % {"count": answered}
                    statuses = _status_phrases(self.answered)
                    clauses.append(_aside(said, _join(statuses)) if statuses else said)
                not_asked = ngettext(
                    "%(count)d could not be queried", "%(count)d could not be queried", len(failed)
                ) % {"count": len(failed)}
                clauses.append(_detail(not_asked, _join(_error_phrases(failed))))
                head = ngettext("%(count)d refund", "%(count)d refunds", handled) % {
                    "count": handled
                }
                parts.append(_detail(head, clauses[0]))
                parts.extend(clauses[1:])
            if untracked:
                parts.append(
                    ngettext("%(count)d not tracked", "%(count)d not tracked", untracked)
                    % {"count": untracked}
                )
            if self.flagged:
                count = sum(self.flagged.values())
                parts.append(
                    ngettext("%(count)d needs attention", "%(count)d need attention", count)
                    % {"count": count}
                )
            if self.skipped:
                parts.append(
                    ngettext(
                        "%(count)d skipped (claimed by another run)",
                        "%(count)d skipped (claimed by another run)",
                        self.skipped,
                    )
                    % {"count": self.skipped}
                )
            # Punctuation is translated too: Chinese uses full-width marks.
            text = pgettext("summary clause separator", "; ").join(parts)
            text = pgettext("summary sentence", "%(sentence)s.") % {"sentence": text}
        return (
            gettext("Dry run, nothing written: %(summary)s") % {"summary": text}
            if (self.dry_run)
            else text
        )


def _aside(head: str, details: str) -> str:
    return pgettext("summary aside", "%(head)s (%(details)s)") % {"head": head, "details": details}


def _detail(head: str, details: str) -> str:
    return pgettext("summary detail", "%(head)s: %(details)s") % {"head": head, "details": details}


def _join(items: list[str]) -> str:
    return pgettext("summary list separator", ", ").join(items)


def _status_phrases(by_status: Counter[str]) -> list[str]:
    templates = {
        Status.SUCCESS: lambda n: ngettext("%(count)d succeeded", "%(count)d succeeded", n),
        Status.FAIL: lambda n: ngettext("%(count)d refund failed", "%(count)d refunds failed", n),
        Status.PROCESSING: lambda n: ngettext(
            "%(count)d still processing", "%(count)d still processing", n
        ),
        Status.INIT: lambda n: ngettext("%(count)d accepted", "%(count)d accepted", n),
        Status.UNKNOWN: lambda n: ngettext(
            "%(count)d status unknown", "%(count)d status unknown", n
        ),
    }
    return [
        templates[status](by_status[status]) % {"count": by_status[status]}
        for status in _STATUS_ORDER
        if by_status.get(status)
    ]


def error_label(error_type: str) -> str:
    """A short, translated name for an error type (``RefundFailure.error_type``)."""
    label = ERROR_KINDS.get(error_type)
    return str(label) if label is not None else error_type


def _error_phrases(errors: list[RefundFailure]) -> list[str]:
    counts = Counter(error.error_type for error in errors)
    if len(errors) == 1:
        return [error_label(errors[0].error_type)]
    return [f"{count} {error_label(kind)}" for kind, count in counts.most_common()]


def describe_error(error_type: str, code: str, message: str) -> str:
    """One line naming an error's type and the gateway's own code and message."""
    label = error_label(error_type)
    if code and message:
        return gettext("%(type)s (code %(code)s): %(message)s") % {
            "type": label,
            "code": code,
            "message": message,
        }
    if code:
        return gettext("%(type)s (code %(code)s)") % {"type": label, "code": code}
    if message:
        return gettext("%(type)s: %(message)s") % {"type": label, "message": message}
    return label


def describe_failures(failures: Sequence[RefundFailure]) -> str:
    """``2 refunds could not be refreshed: R1: signature invalid: ...; R2: ...``."""
    listed = "; ".join(
        gettext("%(trans_no)s: %(error)s")
        % {
            "trans_no": failure.trans_no,
            "error": describe_error(failure.error_type, failure.code, failure.message),
        }
        for failure in failures[:LISTED_FAILURES]
    )
    more = len(failures) - LISTED_FAILURES
    if more > 0:
        listed += " " + ngettext("(and %(count)d more)", "(and %(count)d more)", more) % {
            "count": more
        }
    return ngettext(
        "%(count)d refund could not be refreshed: %(failures)s",
        "%(count)d refunds could not be refreshed: %(failures)s",
        len(failures),
    ) % {"count": len(failures), "failures": listed}
