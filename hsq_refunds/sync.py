"""The sync engine: which refunds to ask about, claiming them, asking HSQ, writing the answers.

Every entry point (the admin, ``manage.py sync_refunds``, the django-q2 tasks) calls
:func:`sync_refunds`; the rules it applies are in :mod:`hsq_refunds.rules`.

How a run works
---------------
1. **Select.** Refunds are read in pages of ``CHUNK_SIZE`` ids (keyset pagination on
   ``(next_query_at, id)`` for due refunds, on ``id`` otherwise), so memory stays flat at any
   table size. Due means ``next_query_at`` at or before the moment the run started.
2. **Claim.** Just before they are queried, a few refunds at a time (twice ``concurrency``)
   are claimed with one conditional ``UPDATE`` that sets ``claimed_until`` (now +
   ``CLAIM_LEASE``) and a token unique to the run. Its ``WHERE`` re-checks that the refund is
   unclaimed (or its lease ran out), still due (for scheduled runs) and not queried since this
   run started, so two runs at once never both claim one refund: on PostgreSQL the second
   ``UPDATE`` waits for the first and then re-evaluates the condition. Claims are taken only
   as workers free up, so a claim is held for about two query times, well inside the lease.
   A run killed half-way leaves nothing locked longer than ``CLAIM_LEASE``.
3. **Query.** A thread pool of ``concurrency`` workers sends the queries (the work waits on the
   network). Workers never touch the database.
4. **Write.** The main thread applies the rules to the answers as they arrive and writes them
   in one transaction per batch of answers: one ``UPDATE`` per refund (which also releases its
   claim, and is guarded by the run's token so that a run that lost its lease writes nothing)
   and one ``INSERT`` of their audit rows. A refund's new state and its audit row are
   committed together or not at all. Signals are sent after commit.

A failure on one refund (including an unexpected exception) is recorded for that refund and
the run goes on.

``dry_run=True`` queries HSQ and reports what would change, but writes nothing at all: no
claims, no results, no audit rows, no signals. A dry run can therefore overlap a real run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext, ngettext, pgettext

from .conf import HsqRefundsSettings, get_client, get_settings, merchant_numbers, setting_path
from .gateway import ConfigurationError, HsqClient, RefundQueryResult
from .health import current_trigger, record_sync_run
from .models import Refund, RefundQuery
from .rules import (
    ERROR_MESSAGE_LENGTH,
    ERROR_OUTCOMES,
    FINAL_STATUSES,
    Decision,
    Outcome,
    Status,
    decide,
)
from .signals import send_refund_signals

__all__ = ["ProgressCallback", "RefundFailure", "SyncReport", "sync_refund", "sync_refunds"]

logger = logging.getLogger("hsq_refunds.sync")

#: ``progress(done, total)``: called after each refund; ``total`` is ``None`` when unknown.
ProgressCallback = Callable[[int, "int | None"], None]

#: ``RefundFailure.error_type`` of a transNo given explicitly that is not tracked.
UNKNOWN_REFUND = "unknown"
#: ``RefundFailure.error_type`` of a configuration error.
CONFIGURATION = ConfigurationError.kind

_OPEN_STATUSES = [s for s in Status.values if s not in FINAL_STATUSES]
_STATUS_ORDER = (Status.SUCCESS, Status.FAIL, Status.PROCESSING, Status.INIT, Status.UNKNOWN)


# --------------------------------------------------------------------------- the report


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
    :class:`~hsq_refunds.rules.Outcome`; ``status_changes``: per ``(old, new)``; ``by_status``:
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

    def merge(self, other: SyncReport) -> SyncReport:
        """A new report with both runs' figures added up."""
        return SyncReport(
            selected=self.selected + other.selected,
            queried=self.queried + other.queried,
            skipped=self.skipped + other.skipped,
            dry_run=self.dry_run or other.dry_run,
            outcomes=self.outcomes + other.outcomes,
            status_changes=self.status_changes + other.status_changes,
            by_status=self.by_status + other.by_status,
            flagged=self.flagged + other.flagged,
            errors=[*self.errors, *other.errors],
        )

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
            flagged=Counter(data["flagged"]),
            errors=[RefundFailure(**error) for error in data["errors"]],
        )

    def summary(self) -> str:
        """One sentence for people, in the active language."""
        handled = sum(self.outcomes.values())
        if not handled and not self.errors and not self.skipped:
            text = gettext("No refunds to sync.")
        else:
            parts = [
                ngettext("%(count)d refund queried", "%(count)d refunds queried", self.queried)
                % {"count": self.queried}
            ]
            statuses = _status_phrases(self.by_status)
            if statuses:
                parts[0] = _detail(parts[0], _join(statuses))
            if self.flagged:
                count = sum(self.flagged.values())
                parts.append(
                    ngettext("%(count)d needs attention", "%(count)d need attention", count)
                    % {"count": count}
                )
            if self.errors:
                failed = ngettext("%(count)d failed", "%(count)d failed", len(self.errors)) % {
                    "count": len(self.errors)
                }
                parts.append(_detail(failed, _join(_error_phrases(self.errors))))
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
    labels = {
        "transport": gettext("network error"),
        "signature": gettext("signature invalid"),
        "gateway": gettext("gateway error"),
        "response": gettext("malformed answer"),
        CONFIGURATION: gettext("configuration error"),
        "invalid_request": gettext("invalid transNo"),
        "query_failed": gettext("query failed at HSQ"),
        "no_status": gettext("answer without status"),
        "internal": gettext("unexpected error"),
        UNKNOWN_REFUND: gettext("not tracked"),
    }
    return labels.get(error_type, error_type)


def _error_phrases(errors: list[RefundFailure]) -> list[str]:
    counts = Counter(error.error_type for error in errors)
    if len(errors) == 1:
        return [error_label(errors[0].error_type)]
    return [f"{count} {error_label(kind)}" for kind, count in counts.most_common()]


# --------------------------------------------------------------------------- selection


def _pages_by_id(queryset: models.QuerySet[Refund], size: int) -> Iterator[list[int]]:
    """Ids of ``queryset`` in pages, keyset-paginated on ``id``."""
    last = 0
    while True:
        page = list(queryset.filter(id__gt=last).order_by("id").values_list("id", flat=True)[:size])
        if page:
            yield page
        if len(page) < size:
            return
        last = page[-1]


def due_id_pages(queryset: models.QuerySet[Refund], size: int) -> Iterator[list[int]]:
    """Ids of due refunds in pages, keyset-paginated on ``(next_query_at, id)``."""
    after: tuple[datetime, int] | None = None
    ordered = queryset.order_by("next_query_at", "id").values_list("next_query_at", "id")
    while True:
        page_qs = ordered
        if after is not None:
            # (next_query_at, id) > after, written so the index on next_query_at gives the
            # database a starting point (a plain OR would rescan every earlier page).
            page_qs = ordered.filter(
                Q(next_query_at__gte=after[0])
                & (Q(next_query_at__gt=after[0]) | Q(id__gt=after[1]))
            )
        rows = list(page_qs[:size])
        if rows:
            yield [refund_id for _when, refund_id in rows]
        if len(rows) < size:
            return
        after = rows[-1]


def _pages_of_ids(ids: list[int], filters: Q, size: int) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        found = set(Refund.objects.filter(filters, id__in=chunk).values_list("id", flat=True))
        page = [refund_id for refund_id in chunk if refund_id in found]
        if page:
            yield page


def _ids_of(refunds: Iterable[Refund | int]) -> list[int]:
    ids: list[int] = []
    for item in refunds:
        ids.append(item.pk if isinstance(item, Refund) else int(item))
    return list(dict.fromkeys(ids))


@dataclass
class _Selection:
    """Where a run's refunds come from, and the extra condition its claims re-check."""

    pages: Iterator[list[int]]
    claim_condition: Q
    count: Callable[[], int | None]
    unknown: list[tuple[str, str]] = field(default_factory=list)


def _select(
    refunds: models.QuerySet[Refund] | Iterable[Refund | int] | None,
    trans_nos: Iterable[str] | None,
    *,
    merchant_no: str | None,
    due_only: bool,
    include_final: bool,
    errored_only: bool,
    cutoff: datetime,
    size: int,
) -> _Selection:
    filters = Q()
    if merchant_no is not None:
        filters &= Q(merchant_no=merchant_no)
    if errored_only:
        filters &= Q(error_count__gt=0)

    if refunds is not None and trans_nos is not None:
        raise ValueError("give refunds or trans_nos, not both")
    if isinstance(refunds, models.QuerySet) and not refunds.query.is_sliced:
        queryset = refunds.filter(filters)
        return _Selection(_pages_by_id(queryset, size), Q(), queryset.count)
    if refunds is not None:
        ids = _ids_of(refunds)
        return _Selection(_pages_of_ids(ids, filters, size), Q(), lambda: len(ids))
    if trans_nos is not None:
        return _select_trans_nos(list(dict.fromkeys(trans_nos)), filters, merchant_no, size)

    if due_only:
        queryset = Refund.objects.filter(filters, next_query_at__lte=cutoff)
        return _Selection(
            due_id_pages(queryset, size), Q(next_query_at__lte=cutoff), queryset.count
        )
    if not include_final:
        filters &= Q(status__in=_OPEN_STATUSES)
    queryset = Refund.objects.filter(filters)
    return _Selection(_pages_by_id(queryset, size), Q(), queryset.count)


def _select_trans_nos(
    trans_nos: list[str], filters: Q, merchant_no: str | None, size: int
) -> _Selection:
    ids: list[int] = []
    found: set[str] = set()
    # A transNo with NUL cannot be tracked (nor looked up on PostgreSQL): not tracked.
    searchable = [trans_no for trans_no in trans_nos if "\x00" not in trans_no]
    for start in range(0, len(searchable), size):
        chunk = searchable[start : start + size]
        for refund_id, trans_no in (
            Refund.objects.filter(filters, trans_no__in=chunk)
            .order_by("id")
            .values_list("id", "trans_no")
        ):
            ids.append(refund_id)
            found.add(trans_no)
    unknown = [(t, merchant_no or "") for t in trans_nos if t not in found]
    return _Selection(_pages_of_ids(ids, Q(), size), Q(), lambda: len(ids), unknown)


# --------------------------------------------------------------------------- the run


def _storable(fields: dict[str, Any]) -> dict[str, Any]:
    """Text from the gateway as the database can hold it: PostgreSQL refuses NUL in text."""
    return {
        name: value.replace("\x00", "\ufffd") if isinstance(value, str) else value
        for name, value in fields.items()
    }


@dataclass
class _Answer:
    refund: Refund
    answer: RefundQueryResult | BaseException
    started_at: datetime
    duration_ms: int | None


def _ask(client: HsqClient, refund: Refund) -> _Answer:
    """Runs in a worker thread: one query, and nothing else (no database)."""
    started_at = timezone.now()
    started = time.monotonic()
    try:
        answer: RefundQueryResult | BaseException = client.query_refund(refund.trans_no)
    except Exception as exc:  # every failure is an outcome of this refund
        answer = exc
    return _Answer(refund, answer, started_at, round((time.monotonic() - started) * 1000))


class _Run:
    def __init__(
        self,
        policy: HsqRefundsSettings,
        *,
        concurrency: int,
        limit: int | None,
        dry_run: bool,
        progress: ProgressCallback | None,
        adopt_token: str | None = None,
    ) -> None:
        self.policy = policy
        self.adopt_token = adopt_token
        self.concurrency = concurrency
        self.limit = limit
        self.dry_run = dry_run
        self.progress = progress
        self.total: int | None = None
        self.token = uuid.uuid4().hex
        self.started_at = timezone.now()
        self.report = SyncReport(dry_run=dry_run)
        self.clients: dict[str, HsqClient | ConfigurationError] = {}
        self.held: set[int] = set()  # refunds claimed and not yet written or released

    # -- selection and claims

    def take(self, pages: Iterator[list[int]], buffer: list[int], want: int) -> list[int]:
        """Up to ``want`` more candidate ids, reading pages as needed."""
        while len(buffer) < want:
            page = next(pages, None)
            if page is None:
                break
            buffer.extend(page)
        taken, buffer[:] = buffer[:want], buffer[want:]
        return taken

    def claim(self, ids: list[int], condition: Q) -> list[Refund]:
        """Claim ``ids`` (those still claimable) and return them fresh from the database."""
        now = timezone.now()
        if self.adopt_token:
            # Refunds a fan-out claimed for this run: those still holding its token and due.
            free = Q(claim_token=self.adopt_token, next_query_at__lte=now)
        else:
            free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
        fresh = Q(last_queried_at__isnull=True) | Q(last_queried_at__lt=self.started_at)
        if self.dry_run:
            rows = list(Refund.objects.filter(free, fresh, condition, id__in=ids))
        else:
            Refund.objects.filter(free, fresh, condition, id__in=ids).update(
                claimed_until=now + timedelta(seconds=self.policy.CLAIM_LEASE),
                claim_token=self.token,
            )
            rows = list(Refund.objects.filter(id__in=ids, claim_token=self.token))
            self.held.update(refund.pk for refund in rows)
        order = {refund_id: index for index, refund_id in enumerate(ids)}
        rows.sort(key=lambda refund: order[refund.pk])
        skipped = len(ids) - len(rows)
        self.report.selected += len(ids)
        self.report.skipped += skipped
        if skipped:
            self.tick()
        return rows

    def release(self) -> None:
        """Release whatever this run still holds (after an interruption)."""
        if self.held:
            Refund.objects.filter(pk__in=self.held, claim_token=self.token).update(
                claimed_until=None, claim_token=""
            )
            self.held.clear()

    # -- querying

    def client_for(self, merchant_no: str) -> HsqClient | ConfigurationError:
        if merchant_no not in self.clients:
            try:
                self.clients[merchant_no] = get_client(merchant_no)
            except ConfigurationError as exc:
                self.clients[merchant_no] = exc
        return self.clients[merchant_no]

    def execute(self, selection: _Selection) -> SyncReport:
        for trans_no, merchant_no in selection.unknown:
            self.report.errors.append(
                RefundFailure(
                    trans_no,
                    merchant_no,
                    UNKNOWN_REFUND,
                    "",
                    gettext("transNo %(trans_no)s is not tracked") % {"trans_no": trans_no},
                )
            )
        if self.progress is not None:
            count = selection.count()
            self.total = count if self.limit is None or count is None else min(count, self.limit)
            self.progress(0, self.total)
        buffer: list[int] = []
        claimed_total = 0
        exhausted = False
        in_flight: set[Future[_Answer]] = set()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="hsq-sync") as pool:
            try:
                while True:
                    if not exhausted and len(in_flight) < self.concurrency:
                        want = 2 * self.concurrency - len(in_flight)
                        if self.limit is not None:
                            want = min(want, self.limit - claimed_total)
                        ids = self.take(selection.pages, buffer, want) if want > 0 else []
                        if not ids:
                            exhausted = True
                            continue
                        unconfigured: list[_Answer] = []
                        for refund in self.claim(ids, selection.claim_condition):
                            claimed_total += 1
                            client = self.client_for(refund.merchant_no)
                            if isinstance(client, ConfigurationError):
                                unconfigured.append(_Answer(refund, client, timezone.now(), None))
                            else:
                                in_flight.add(pool.submit(_ask, client, refund))
                        self.handle(unconfigured)
                        continue
                    if not in_flight:
                        break
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    self.handle([future.result() for future in done])
            finally:
                for future in in_flight:
                    future.cancel()
                self.release()
        return self.report

    # -- answers

    def handle(self, answers: list[_Answer]) -> None:
        """Apply the rules to the answers that came in, and write them together."""
        decided: list[tuple[_Answer, Decision]] = []
        for answer in answers:
            try:
                decision = decide(
                    answer.refund, answer.answer, now=timezone.now(), policy=self.policy
                )
            except Exception as exc:  # isolate this refund's failure
                logger.exception("transNo=%s could not be synced", answer.refund.trans_no)
                self.fail(answer.refund, exc)
                self.release_one(answer.refund)
            else:
                decided.append((answer, decision))
        # A configuration error says nothing about the refund: reported, nothing written.
        unconfigured = [item for item in decided if item[1].outcome == Outcome.CONFIG_ERROR]
        if unconfigured:
            decided = [item for item in decided if item[1].outcome != Outcome.CONFIG_ERROR]
            for answer, decision in unconfigured:
                self.count(answer.refund, decision)
                self.release_one(answer.refund)
        if not decided:
            return
        if self.dry_run:
            for answer, decision in decided:
                self.count(answer.refund, decision)
            return
        try:
            written = self.write(decided)
        except DatabaseError:
            # Find the refund the database refuses, and write the others one by one.
            written, failed = set(), set()
            for answer, decision in decided:
                try:
                    written |= self.write([(answer, decision)])
                except DatabaseError as exc:
                    logger.exception("transNo=%s could not be written", answer.refund.trans_no)
                    self.fail(answer.refund, exc)
                    self.release_one(answer.refund)
                    failed.add(answer.refund.pk)
            decided = [item for item in decided if item[0].refund.pk not in failed]
        for answer, decision in decided:
            if answer.refund.pk in written:
                self.count(answer.refund, decision)
            else:
                logger.warning(
                    "transNo=%s merchantNo=%s: claim lost to another run; answer not written",
                    answer.refund.trans_no,
                    answer.refund.merchant_no,
                )
                self.report.skipped += 1
                self.tick()

    def write(self, decided: list[tuple[_Answer, Decision]]) -> set[int]:
        """One ``UPDATE`` per refund (guarded by the claim) and one ``INSERT`` of audit rows, in
        one transaction: a refund's new state and its audit row are written together or not
        at all. Returns the ids written (those whose claim this run still held)."""
        written: set[int] = set()
        audit: list[RefundQuery] = []
        with transaction.atomic():
            for answer, decision in decided:
                refund = answer.refund
                changes = {
                    **_storable(decision.changes),
                    "claimed_until": None,
                    "claim_token": "",
                }
                if not Refund.objects.filter(pk=refund.pk, claim_token=self.token).update(
                    **changes
                ):
                    continue
                written.add(refund.pk)
                for name, value in changes.items():
                    setattr(refund, name, value)
                audit.append(
                    RefundQuery(
                        refund_id=refund.pk,
                        queried_at=answer.started_at,
                        duration_ms=answer.duration_ms,
                        **_storable(decision.log),
                    )
                )
                send_refund_signals(
                    refund,
                    old_status=decision.old_status,
                    new_status=decision.new_status,
                    attention=decision.attention,
                )
            if audit:
                RefundQuery.objects.bulk_create(audit)
        self.held.difference_update(answer.refund.pk for answer, _decision in decided)
        return written

    def release_one(self, refund: Refund) -> None:
        if self.dry_run:
            return
        try:
            Refund.objects.filter(pk=refund.pk, claim_token=self.token).update(
                claimed_until=None, claim_token=""
            )
            self.held.discard(refund.pk)
        except DatabaseError:  # the lease expires on its own
            logger.exception("transNo=%s: could not release its claim", refund.trans_no)

    def count(self, refund: Refund, decision: Decision) -> None:
        report = self.report
        report.outcomes[decision.outcome] += 1
        report.by_status[decision.new_status] += 1
        if decision.queried:
            report.queried += 1
        if decision.status_changed:
            report.status_changes[(decision.old_status, decision.new_status)] += 1
        if decision.attention:
            report.flagged[decision.attention] += 1
        error = decision.error
        level = logging.WARNING if decision.outcome in ERROR_OUTCOMES else logging.INFO
        logger.log(
            level,
            "transNo=%s merchantNo=%s outcome=%s status=%s%s%s",
            refund.trans_no,
            refund.merchant_no,
            decision.outcome,
            decision.new_status,
            f" (was {decision.old_status})" if decision.status_changed else "",
            f" error={error.type} code={error.code} message={error.message}" if error else "",
            extra={"trans_no": refund.trans_no, "outcome": decision.outcome},
        )
        if error is not None:
            report.errors.append(
                RefundFailure(
                    refund.trans_no, refund.merchant_no, error.type, error.code, error.message
                )
            )
        self.tick()

    def fail(self, refund: Refund, exc: BaseException) -> None:
        """A refund whose answer could not be handled (a bug or a database failure)."""
        self.report.outcomes[Outcome.INTERNAL_ERROR] += 1
        self.report.by_status[refund.status] += 1
        self.report.errors.append(
            RefundFailure(
                refund.trans_no,
                refund.merchant_no,
                "internal",
                "",
                f"{type(exc).__name__}: {exc}"[:ERROR_MESSAGE_LENGTH],
            )
        )
        self.tick()

    def tick(self) -> None:
        if self.progress is not None:
            done = sum(self.report.outcomes.values()) + self.report.skipped
            self.progress(done, self.total)


# --------------------------------------------------------------------------- public API


def sync_refunds(
    refunds: models.QuerySet[Refund] | Iterable[Refund | int] | None = None,
    *,
    trans_nos: Iterable[str] | None = None,
    merchant_no: str | None = None,
    due_only: bool = True,
    include_final: bool = False,
    errored_only: bool = False,
    limit: int | None = None,
    concurrency: int | None = None,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    claim_token: str | None = None,
) -> SyncReport:
    """Ask HSQ about refunds and record the answers; return what happened.

    Without ``refunds`` or ``trans_nos``, the refunds due now are synced (``due_only``); with
    ``due_only=False`` every unfinished refund is (and final ones too with ``include_final``).
    ``refunds`` (a queryset, or an iterable of refunds or ids) or ``trans_nos`` choose refunds
    explicitly: each is queried whether due or not, final ones included; a transNo that is not
    tracked is reported as an error. ``merchant_no`` and ``errored_only`` (refunds whose last
    query failed) narrow any selection. ``limit`` caps how many refunds are queried;
    ``concurrency`` defaults to ``CONCURRENCY``. ``dry_run`` writes nothing. ``claim_token``
    takes over refunds that were claimed ahead of the run with that token (a django-q2 batch
    queued by :func:`hsq_refunds.tasks.sync_due_refunds`): only refunds still holding it and
    still due are queried, so a batch whose lease ran out and was queued again does nothing
    twice.

    Raises :class:`~hsq_refunds.gateway.ConfigurationError` when ``HSQ_REFUNDS`` is invalid or
    ``merchant_no`` is not configured; failures of single refunds are in the report instead.
    """
    policy = get_settings()
    if merchant_no is not None and merchant_no not in merchant_numbers():
        raise ConfigurationError(
            f"merchant {merchant_no!r} is not configured in {setting_path('MERCHANTS')}"
        )
    if concurrency is None:
        concurrency = policy.CONCURRENCY
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError("concurrency must be an integer >= 1")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError("limit must be None or an integer >= 0")
    run = _Run(
        policy,
        concurrency=concurrency,
        limit=limit,
        dry_run=dry_run,
        progress=progress,
        adopt_token=claim_token,
    )
    selection = _select(
        refunds,
        trans_nos,
        merchant_no=merchant_no,
        due_only=due_only,
        include_final=include_final,
        errored_only=errored_only,
        cutoff=run.started_at,
        size=policy.CHUNK_SIZE,
    )
    report = run.execute(selection)
    logger.info("sync finished: %s", report.summary())
    record_sync_run(
        report, started_at=run.started_at, finished_at=timezone.now(), trigger=current_trigger()
    )
    return report


def sync_refund(refund: Refund | int, *, dry_run: bool = False) -> SyncReport:
    """Query one refund now, due or not (final included), and record the answer."""
    return sync_refunds([refund], dry_run=dry_run)
