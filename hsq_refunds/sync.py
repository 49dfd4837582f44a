"""The sync engine: which refunds to ask about, claiming them, asking HSQ, writing the answers.

Every entry point (the admin, ``manage.py sync_refunds``, the django-q2 tasks) calls
:func:`sync_refunds`; the rules it applies are in :mod:`hsq_refunds.rules`, the claims in
:mod:`hsq_refunds.models`, the conditional write in :mod:`hsq_refunds.recording`, the report and
its wording in :mod:`hsq_refunds.report`.

How a run works
---------------
1. **Select.** Refunds are read in pages of ``CHUNK_SIZE`` ids (keyset pagination on
   ``(next_query_at, id)`` for due refunds, on ``id`` otherwise), so memory stays flat at any
   table size. Due means ``next_query_at`` at or before the moment the run started.
2. **Claim.** Refunds are claimed ahead of the workers, in batches, with one conditional
   ``UPDATE ... RETURNING`` each (:meth:`~hsq_refunds.models.RefundQuerySet.claim_and_fetch`)
   that sets ``claimed_until`` (now + ``CLAIM_LEASE``) and a token unique to the run and
   returns the rows as claimed. Its ``WHERE`` re-checks that the refund is unclaimed (or its
   lease ran out), still due (for scheduled runs) and not queried since this run started, so
   two runs at once never both claim one refund: on PostgreSQL the second ``UPDATE`` waits
   for the first and then re-evaluates the condition. Enough is kept claimed for
   ``concurrency`` queries in flight plus what the workers take in the next
   :data:`CLAIM_AHEAD_SECONDS` at the recent pace, so that no query slot waits while the main
   thread writes. A claimed refund whose query could no longer end (and be written) within
   the lease by the time a worker is free is not asked about on that claim: its lease is
   renewed and it is queued again. Claims are committed at once: the engine refuses to run
   inside a transaction of the caller's, where they would stay uncommitted (and lock their
   rows) while the queries wait on the network. A run killed half-way leaves nothing locked
   longer than ``CLAIM_LEASE``.
3. **Query.** A thread pool of ``concurrency`` workers sends the queries (the work waits on the
   network); each worker takes the next claimed refund as soon as it is free. Workers never
   touch the database.
4. **Write.** The main thread applies the rules to the answers and writes them in batches
   (:data:`WRITE_BATCH` answers or twice ``concurrency``, whichever is more; or what came in
   within :data:`WRITE_WAIT` seconds; or the last ones) with
   :func:`~hsq_refunds.recording.write_answers`, in one transaction per batch: one
   ``UPDATE ... FROM <their rows>`` for the refunds that change the same fields, guarded row
   by row by the run's claim and the state each answer was decided from, and one ``INSERT``
   of their audit rows. Signals are sent after commit. If a batch fails, its
   answers are written one by one, so that one refund the database refuses costs no other
   its answer.

A failure on one refund, whatever it is (an exception in the rules, a database that refuses what
they decided, a merchant that is no longer configured) is recorded for that refund like a failed
query: the error, the consecutive-error count, the ``ERROR_BACKOFF`` wait, an audit row. The run
goes on, and the refund makes way for the others in the queue.

``dry_run=True`` queries HSQ and reports what would change, but writes nothing at all: no
claims, no results, no audit rows, no signals. A dry run can therefore overlap a real run.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from django.db import DatabaseError, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext

from .apply import in_caller_transaction, send_queued
from .clients import get_client
from .conf import HsqRefundsSettings, get_settings, merchant_numbers, setting_path
from .gateway import ConfigurationError, HsqClient, RefundQueryResult
from .health import current_trigger, record_sync_run
from .models import Refund, RefundQuery
from .recording import AnsweredRefund, audit_row, write_answers
from .report import UNKNOWN_REFUND, RefundFailure, SyncReport
from .rules import ERROR_OUTCOMES, Decision, Outcome, decide, decide_failure
from .text import printable

__all__ = [
    "ProgressCallback",
    "RefundFailure",
    "SyncReport",
    "due_id_pages",
    "sync_claimed",
    "sync_refund",
    "sync_refunds",
]

logger = logging.getLogger("hsq_refunds.sync")

#: ``progress(done, total)``: called after each refund; ``total`` is ``None`` when unknown.
ProgressCallback = Callable[[int, "int | None"], None]


# --------------------------------------------------------------------------- selection


def due_id_pages(queryset: models.QuerySet[Refund], size: int) -> Iterator[list[int]]:
    """Ids of due refunds in pages, keyset-paginated on ``(next_query_at, id)``."""
    after: tuple[datetime | None, int] | None = None
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
        queryset = Refund.objects.filter(filters, pk__in=refunds.values("pk"))
        return _Selection(queryset.id_pages(size), Q(), queryset.count)
    if refunds is not None:
        ids = _ids_of(refunds)
        return _Selection(_pages_of_ids(ids, filters, size), Q(), lambda: len(ids))
    if trans_nos is not None:
        return _select_trans_nos(list(dict.fromkeys(trans_nos)), filters, merchant_no, size)

    if due_only:
        queryset = Refund.objects.filter(filters).due(cutoff)
        return _Selection(
            due_id_pages(queryset, size), Q(next_query_at__lte=cutoff), queryset.count
        )
    queryset = Refund.objects.filter(filters)
    if not include_final:
        queryset = queryset.open()
    return _Selection(queryset.id_pages(size), Q(), queryset.count)


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


#: Refunds are claimed ahead of the workers: as many as they take in this long at the pace of
#: the last answers (at least ``concurrency``), or in twice the main thread's recent longest
#: turn of writing and claiming if that is longer (a main thread that waits for the
#: interpreter lock behind many busy workers takes longer), so that the main thread may
#: write answers or wait on the database meanwhile without a query slot falling idle.
CLAIM_AHEAD_SECONDS = 0.25
#: The most refunds claimed ahead of the workers, whatever the pace.
MAX_CLAIM_AHEAD = 500
#: Answers are written together once this many wait (and at least twice ``concurrency``) ...
WRITE_BATCH = 32
MAX_WRITE_BATCH = 500
#: ... or once the oldest has waited this long, or when no query is left in flight.
WRITE_WAIT = 0.5
#: The time kept in hand, beyond the longest query and the wait for a write, between the
#: start of a query and the end of its refund's claim.
LEASE_MARGIN = 1.0


@dataclass
class _Asked:
    """One refund asked about: what HSQ answered, or the exception the query raised.

    ``reply`` is ``None`` for a refund that was not asked about: its claim had grown too old
    by the time a worker was free (see :attr:`_Queued.start_by`).
    """

    refund: Refund
    reply: RefundQueryResult | BaseException | None
    started_at: datetime
    duration_ms: int | None


@dataclass(eq=False)
class _Queued:
    """A claimed refund waiting for a worker; ``start_by`` (``time.monotonic()``) is the last
    moment its query may start and still be written within the claim's lease."""

    refund: Refund
    client: HsqClient
    start_by: float


def _ask(client: HsqClient, refund: Refund) -> _Asked:
    """Runs in a worker thread: one query, and nothing else (no database)."""
    started_at = timezone.now()
    started = time.monotonic()
    try:
        reply: RefundQueryResult | BaseException = client.query_refund(refund.trans_no)
    except Exception as exc:  # every failure is an outcome of this refund
        reply = exc
    return _Asked(refund, reply, started_at, round((time.monotonic() - started) * 1000))


def _work(item: _Queued, inbox: _Inbox) -> None:
    """A worker's task: query one claimed refund and leave the answer for the main thread."""
    try:
        if time.monotonic() > item.start_by:
            asked = _Asked(item.refund, None, timezone.now(), None)
        else:
            asked = _ask(item.client, item.refund)
    except BaseException as exc:  # whatever happens, the main thread hears of this refund
        asked = _Asked(item.refund, exc, timezone.now(), None)
    inbox.put(asked)


class _Inbox:
    """The answers the workers leave for the main thread, and the main thread's wait for them.

    The main thread sleeps until it has something to do: ``batch`` answers to write together,
    fewer than ``low`` refunds outstanding (time to claim more), no refund outstanding, or an
    answer that has waited ``max_wait`` seconds. Workers never wait for it: they take the
    next claimed refund from the pool's queue.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition(threading.Lock())
        self._answers: list[_Asked] = []
        self._oldest = 0.0
        self._batch = 1
        self._low = 0
        #: Refunds handed to the workers and not answered yet.
        self.outstanding = 0

    def sent(self, count: int) -> None:
        with self._wake:
            self.outstanding += count

    def put(self, asked: _Asked, *, sent: bool = True) -> None:
        """An answer (``sent=False``: one the main thread made itself, no worker's)."""
        with self._wake:
            answers = self._answers
            if not answers:
                self._oldest = time.monotonic()
            answers.append(asked)
            if sent:
                self.outstanding -= 1
            if (
                len(answers) == 1
                or len(answers) >= self._batch
                or self.outstanding < self._low
                or not self.outstanding
            ):
                self._wake.notify()

    def waiting(self) -> int:
        """How many answers wait to be written."""
        with self._wake:
            return len(self._answers)

    def idle(self) -> bool:
        with self._wake:
            return not self.outstanding and not self._answers

    def wait(self, *, batch: int, low: int, max_wait: float) -> list[_Asked]:
        """The answers to write now, or ``[]`` when refunds are to be claimed first or none
        is outstanding."""
        with self._wake:
            self._batch, self._low = batch, low
            while True:
                waiting = len(self._answers)
                timeout = None
                if waiting:
                    timeout = max_wait - (time.monotonic() - self._oldest)
                    if waiting >= batch or not self.outstanding or timeout <= 0:
                        answers, self._answers = self._answers, []
                        return answers
                elif not self.outstanding:
                    return []
                if self.outstanding < low:
                    return []
                self._wake.wait(timeout)


class _Claims:
    """The refunds one run holds, claimed under its token with :class:`RefundQuerySet` methods.

    ``adopt_token`` takes over refunds a django-q2 cycle claimed ahead for this batch (those
    still holding that token and due); a dry run claims nothing and only reads.
    """

    def __init__(
        self, *, lease: float, started_at: datetime, dry_run: bool, adopt_token: str | None
    ) -> None:
        self.token = uuid.uuid4().hex
        self.lease = timedelta(seconds=lease)
        self.started_at = started_at
        self.dry_run = dry_run
        self.adopt_token = adopt_token
        self.held: set[int] = set()  # claimed and not yet written or released

    def take(self, ids: list[int], condition: Q) -> list[Refund]:
        """Claim ``ids`` (those still claimable) and return them fresh, in the order given:
        one ``UPDATE ... RETURNING`` where the database has it."""
        now = timezone.now()
        candidates = Refund.objects.filter(condition, id__in=_padded(ids))
        if self.adopt_token:
            candidates = candidates.held_by(self.adopt_token).due(now)
        else:
            candidates = candidates.claimable(now)
        # Not asked about since this run started (by another run that claimed it first).
        candidates = candidates.filter(
            Q(last_queried_at__isnull=True) | Q(last_queried_at__lt=self.started_at)
        )
        if self.dry_run:
            rows = list(candidates)
        else:
            rows = candidates.claim_and_fetch(self.token, now + self.lease)
            self.held.update(refund.pk for refund in rows)
        order = {refund_id: index for index, refund_id in enumerate(ids)}
        rows.sort(key=lambda refund: order[refund.pk])
        return rows

    def renew(self, ids: list[int]) -> list[Refund]:
        """A fresh lease for ``ids`` that this run still holds; returns them fresh. Those it
        no longer holds (the lease ran out and another run took them) are let go."""
        if self.dry_run:
            return list(Refund.objects.filter(id__in=ids))
        now = timezone.now()
        rows = (
            Refund.objects.filter(id__in=_padded(ids))
            .held_by(self.token)
            .claim_and_fetch(self.token, now + self.lease)
        )
        self.done(set(ids) - {refund.pk for refund in rows})
        return rows

    def done(self, ids: Iterable[int]) -> None:
        """These were written (which released them) or released."""
        self.held.difference_update(ids)

    def release(self, ids: Iterable[int] | None = None) -> None:
        """Give back ``ids`` (default: everything still held); a failure is logged, and the
        lease runs out on its own."""
        ids = set(self.held if ids is None else ids) & self.held
        if not ids or self.dry_run:
            return
        try:
            Refund.objects.filter(pk__in=ids).release(self.token)
        except DatabaseError:
            logger.exception("could not release %d claims; their lease will run out", len(ids))
        self.done(ids)


class _Run:
    """One sync: claim ahead, query, decide, write in batches, until the selection is used up.

    The main thread does everything that touches the database; the workers only query. The
    workers take claimed refunds from the pool's queue, which the main thread keeps stocked
    (``concurrency`` in flight plus what the workers take in the next
    :data:`CLAIM_AHEAD_SECONDS`), so that no query slot waits while the main thread writes.
    """

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
        self.concurrency = concurrency
        self.limit = limit
        self.dry_run = dry_run
        self.progress = progress
        self.total: int | None = None
        self.started_at = timezone.now()
        self.claims = _Claims(
            lease=policy.CLAIM_LEASE,
            started_at=self.started_at,
            dry_run=dry_run,
            adopt_token=adopt_token,
        )
        self.report = SyncReport(dry_run=dry_run)
        self.clients: dict[str, HsqClient | ConfigurationError] = {}
        self.inbox = _Inbox()
        self.write_batch = min(MAX_WRITE_BATCH, max(WRITE_BATCH, 2 * concurrency))
        # How long a claimed refund may wait for a worker: its query (up to QUERY_DEADLINE)
        # and the wait for its write must end within the lease. A lease shorter than that
        # (system check W005) leaves half of it.
        lease = policy.CLAIM_LEASE
        self.hold = max(lease - policy.QUERY_DEADLINE - WRITE_WAIT - LEASE_MARGIN, lease / 2)
        self.mean_seconds: float | None = None  # recent queries' mean duration
        self.turn_seconds = 0.0  # the main thread's recent longest turn (decaying)
        self.claimed = 0
        self.exhausted = False
        self.buffer: list[int] = []
        # Its threads start with the first query.
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="hsq-sync")

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
        try:
            self.top_up(selection)
            while True:
                answers = self.inbox.wait(
                    batch=self.write_batch,
                    low=0 if self.exhausted else self.low_mark(),
                    max_wait=WRITE_WAIT,
                )
                if answers:
                    started = time.monotonic()
                    self.handle(answers)
                    self.top_up(selection)
                    turn = time.monotonic() - started
                    self.turn_seconds = max(turn, 0.8 * self.turn_seconds)
                elif self.exhausted and self.inbox.idle():
                    break
                else:  # woken to claim more
                    self.top_up(selection)
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.claims.release()
            self.pool.shutdown(wait=True)
        return self.report

    # ----------------------------------------------------------------------- claiming ahead

    def ahead(self) -> int:
        """How many refunds to keep claimed beyond those in flight: what the workers take in
        :data:`CLAIM_AHEAD_SECONDS` (or twice the main thread's recent longest turn) at the
        recent pace; at least ``concurrency``, at most :data:`MAX_CLAIM_AHEAD`."""
        if not self.mean_seconds:
            return self.concurrency
        pace = self.concurrency / self.mean_seconds
        horizon = min(max(CLAIM_AHEAD_SECONDS, 2 * self.turn_seconds), self.hold / 4)
        return max(self.concurrency, min(MAX_CLAIM_AHEAD, math.ceil(pace * horizon)))

    def low_mark(self) -> int:
        """Fewer refunds outstanding than this: claim more."""
        return self.concurrency + self.ahead()

    def top_up(self, selection: _Selection) -> None:
        """Claim refunds in batches until ``concurrency`` plus twice :meth:`ahead` are
        outstanding (or the selection or the limit is used up), and hand them to the pool.
        Answers made here (a merchant not configured) are written before more is claimed."""
        while (
            not self.exhausted
            and self.inbox.outstanding < self.low_mark()
            and self.inbox.waiting() < self.write_batch
        ):
            want = self.concurrency + 2 * self.ahead() - self.inbox.outstanding
            if self.limit is not None:
                want = min(want, self.limit - self.claimed)
            ids = _take(selection.pages, self.buffer, want) if want > 0 else []
            if not ids:
                self.exhausted = True
                return
            stamp = time.monotonic()
            rows = self.claims.take(ids, selection.claim_condition)
            self.report.selected += len(ids)
            self.skip(len(ids) - len(rows))
            self.claimed += len(rows)
            self.dispatch(rows, stamp)

    def dispatch(self, rows: list[Refund], claimed_at: float) -> None:
        """Queue claimed refunds for the workers (claimed at ``claimed_at``, monotonic)."""
        start_by = math.inf if self.dry_run else claimed_at + self.hold
        queued: list[_Queued] = []
        for refund in rows:
            client = self.client_for(refund.merchant_no)
            if isinstance(client, ConfigurationError):
                self.inbox.put(_Asked(refund, client, timezone.now(), None), sent=False)
            else:
                queued.append(_Queued(refund, client, start_by))
        if queued:
            self.inbox.sent(len(queued))
            for item in queued:
                self.pool.submit(_work, item, self.inbox)

    def requeue(self, stale: list[_Asked]) -> None:
        """Refunds whose claim grew too old before a worker was free: a fresh lease, and
        into the queue again; those this run no longer holds are passed over."""
        ids = [asked.refund.pk for asked in stale]
        stamp = time.monotonic()
        try:
            rows = self.claims.renew(ids)
        except DatabaseError:
            logger.exception("could not renew %d claims; they are passed over", len(ids))
            self.claims.release(ids)
            rows = []
        self.skip(len(ids) - len(rows))
        self.dispatch(rows, stamp)

    # ----------------------------------------------------------------------- writing

    def handle(self, answers: Sequence[_Asked]) -> None:
        """Apply the rules to the answers that came in, and write them together."""
        stale = [asked for asked in answers if asked.reply is None]
        if stale:
            self.requeue(stale)
            answers = [asked for asked in answers if asked.reply is not None]
        if not answers:
            return
        self.note_durations(answers)
        decided = [self.decide(asked) for asked in answers]
        if self.dry_run:
            for item in decided:
                self.record(item)
            return
        try:
            written = write_answers(decided, claim_token=self.claims.token)
        except Exception:
            # Find the refund the database refuses, and write the others one by one.
            unwritten = [item for item in decided if not self.write_alone(item)]
        else:
            self.claims.done(written)
            for item in decided:
                if item.refund.pk in written:
                    self.record(item)
            unwritten = [item for item in decided if item.refund.pk not in written]
        self.settle(unwritten)

    def note_durations(self, answers: Sequence[_Asked]) -> None:
        """Follow the queries' recent mean duration (the pace claims are sized by)."""
        mean = self.mean_seconds
        for asked in answers:
            if asked.duration_ms is not None:
                seconds = asked.duration_ms / 1000
                mean = seconds if mean is None else 0.9 * mean + 0.1 * seconds
        self.mean_seconds = mean

    def decide(self, asked: _Asked) -> AnsweredRefund:
        refund, now = asked.refund, timezone.now()
        reply = cast("RefundQueryResult | BaseException", asked.reply)  # asked, not stale
        try:
            decision = decide(refund, reply, now=now, policy=self.policy)
        except Exception as exc:  # a bug in the rules: this refund's failure, not the run's
            logger.exception("transNo=%s: the rules failed on its answer", refund.trans_no)
            decision = decide_failure(refund, exc, now=now, policy=self.policy)
        return AnsweredRefund(refund, decision, at=asked.started_at, duration_ms=asked.duration_ms)

    def write_alone(self, item: AnsweredRefund) -> bool:
        """Write one answer; if the database refuses it, write the refusal as the refund's
        failure instead (plain fields, nothing of the answer), so that it backs off. Returns
        whether the refund was dealt with (written, or reported as failed and released)."""
        refund = item.refund
        try:
            return self.written_alone(item)
        except Exception as exc:
            logger.exception("transNo=%s: its answer could not be written", refund.trans_no)
            item.decision = decide_failure(refund, exc, now=timezone.now(), policy=self.policy)
        try:
            return self.written_alone(item)
        except Exception:
            logger.exception("transNo=%s: not even its failure could be written", refund.trans_no)
        self.record(item)
        self.claims.release([refund.pk])
        return True

    def written_alone(self, item: AnsweredRefund) -> bool:
        if not write_answers([item], claim_token=self.claims.token):
            return False
        self.claims.done([item.refund.pk])
        self.record(item)
        return True

    def settle(self, unwritten: list[AnsweredRefund]) -> None:
        """Answers written nowhere: the claim was lost to another run, or another answer (a
        notification, an application's) changed the refund since it was read. Those still held
        get an audit row (superseded) and their claim back."""
        if not unwritten:
            return
        held = set(
            Refund.objects.filter(pk__in=[item.refund.pk for item in unwritten])
            .held_by(self.claims.token)
            .values_list("pk", flat=True)
        )
        superseded = [item for item in unwritten if item.refund.pk in held]
        for item in unwritten:
            refund = item.refund
            if refund.pk in held:
                logger.info("transNo=%s: its answer was overtaken by a newer one", refund.trans_no)
            else:
                logger.warning(
                    "transNo=%s merchantNo=%s: claim lost to another run; answer not written",
                    refund.trans_no,
                    refund.merchant_no,
                )
            self.skip(1)
        if superseded:
            try:
                RefundQuery.objects.bulk_create(
                    [audit_row(item, Outcome.SUPERSEDED) for item in superseded]
                )
            except DatabaseError:
                logger.exception("could not write %d audit rows", len(superseded))
        self.claims.release(held)

    def record(self, item: AnsweredRefund) -> None:
        refund, decision = item.refund, item.decision
        self.report.record(refund, decision)
        _log_decision(refund, decision)
        self.tick()

    def skip(self, count: int) -> None:
        if count:
            self.report.skipped += count
            self.tick()

    def tick(self) -> None:
        if self.progress is not None:
            done = sum(self.report.outcomes.values()) + self.report.skipped
            self.progress(done, self.total)


def _padded(ids: list[int]) -> list[int]:
    """``ids`` with the last one repeated up to a power of two (at least 16): the same
    condition, in one of a few statement shapes, so that the database driver's cache of
    prepared statements (SQLite's keeps 128, each as large as its parameter list) stays
    small and is reused."""
    size = 16
    while size < len(ids):
        size *= 2
    return ids + ids[-1:] * (size - len(ids))


def _take(pages: Iterator[list[int]], buffer: list[int], want: int) -> list[int]:
    """Up to ``want`` more candidate ids, reading pages as needed."""
    while len(buffer) < want:
        page = next(pages, None)
        if page is None:
            break
        buffer.extend(page)
    taken, buffer[:] = buffer[:want], buffer[want:]
    return taken


def _log_decision(refund: Refund, decision: Decision) -> None:
    """One line per refund, greppable by transNo; gateway text escaped, so that it cannot
    forge lines. Errors a person must see (signatures, flags) at ERROR, where trackers such as
    Sentry pick them up; ordinary failed queries at WARNING."""
    error = decision.error
    if decision.outcome == Outcome.SIGNATURE_ERROR or decision.attention:
        level = logging.ERROR
    elif decision.outcome in ERROR_OUTCOMES:
        level = logging.WARNING
    else:
        level = logging.INFO
    if not logger.isEnabledFor(level):
        return
    logger.log(
        level,
        "transNo=%s merchantNo=%s outcome=%s status=%s%s%s%s",
        printable(refund.trans_no),
        refund.merchant_no,
        decision.outcome,
        decision.new_status,
        f" (was {decision.old_status})" if decision.status_changed else "",
        f" attention={decision.attention}" if decision.attention else "",
        (
            f" error={error.type} code={printable(error.code)} message={printable(error.message)}"
            if error
            else ""
        ),
        extra={"trans_no": refund.trans_no, "outcome": decision.outcome},
    )


def _refuse_caller_transaction() -> None:
    """Claims must be committed the moment they are taken, or they hold row locks (and are
    invisible to other runs) while the queries wait on the network."""
    if in_caller_transaction():
        raise transaction.TransactionManagementError(
            "sync_refunds() cannot run inside a transaction (atomic() or ATOMIC_REQUESTS): its "
            "claims would stay uncommitted and block every other sync while it waits on HSQ. "
            "Call it outside the transaction, or mark the view "
            "@transaction.non_atomic_requests."
        )


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
    allow_transaction: bool = False,
) -> SyncReport:
    """Ask HSQ about refunds and record the answers; return what happened.

    Without ``refunds`` or ``trans_nos``, the refunds due now are synced (``due_only``); with
    ``due_only=False`` every unfinished refund is (and final ones too with ``include_final``).
    ``refunds`` (a queryset, or an iterable of refunds or ids) or ``trans_nos`` choose refunds
    explicitly: each is queried whether due or not, final ones included; a transNo that is not
    tracked is reported as an error. ``merchant_no`` and ``errored_only`` (refunds whose last
    query failed) narrow any selection. ``limit`` caps how many refunds are queried;
    ``concurrency`` defaults to ``CONCURRENCY``. ``dry_run`` writes nothing.

    Raises :class:`~hsq_refunds.gateway.ConfigurationError` when ``HSQ_REFUNDS`` is invalid or
    ``merchant_no`` is not configured, and ``TransactionManagementError`` inside a transaction
    (see the module docstring) unless ``allow_transaction`` (then the claims hold their rows'
    locks until the caller commits: django-q2's ``sync`` mode, which runs tasks inside its
    scheduler's transaction, is the one use); failures of single refunds are in the report
    instead.
    """
    return _sync(
        refunds,
        trans_nos=trans_nos,
        merchant_no=merchant_no,
        due_only=due_only,
        include_final=include_final,
        errored_only=errored_only,
        limit=limit,
        concurrency=concurrency,
        dry_run=dry_run,
        progress=progress,
        allow_transaction=allow_transaction,
    )


def sync_claimed(
    refund_ids: Sequence[int], claim_token: str, *, allow_transaction: bool = False
) -> SyncReport:
    """Sync the refunds a django-q2 cycle claimed ahead for one batch, under ``claim_token``.

    Only refunds still holding the token and still due are queried, so a batch whose lease ran
    out and that a later cycle queued again does nothing twice. What the run passes over (no
    longer due) is released at the end.
    """
    try:
        return _sync(list(refund_ids), adopt_token=claim_token, allow_transaction=allow_transaction)
    finally:
        Refund.objects.filter(id__in=list(refund_ids)).release(claim_token)


def _sync(
    refunds: models.QuerySet[Refund] | Iterable[Refund | int] | None,
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
    adopt_token: str | None = None,
    allow_transaction: bool = False,
) -> SyncReport:
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
    if not dry_run and not allow_transaction:
        _refuse_caller_transaction()
    if trans_nos is not None:
        trans_nos = list(trans_nos)
    if refunds is not None and not isinstance(refunds, models.QuerySet):
        refunds = list(refunds)
    if not dry_run and adopt_token is None and not in_caller_transaction():
        # Applications left queued by a process that died before sending them: sent first.
        send_queued(_queued_among(refunds, trans_nos, merchant_no))
    run = _Run(
        policy,
        concurrency=concurrency,
        limit=limit,
        dry_run=dry_run,
        progress=progress,
        adopt_token=adopt_token,
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


def _queued_among(
    refunds: models.QuerySet[Refund] | Iterable[Refund | int] | None,
    trans_nos: Iterable[str] | None,
    merchant_no: str | None,
) -> Q:
    """The refunds of a run's selection, as a condition on the queued ones."""
    condition = Q()
    if isinstance(refunds, models.QuerySet):
        condition &= Q(pk__in=list(refunds.values_list("pk", flat=True)[:10_000]))
    elif refunds is not None:
        condition &= Q(pk__in=_ids_of(refunds))
    if trans_nos is not None:
        condition &= Q(trans_no__in=[t for t in trans_nos if "\x00" not in t])
    if merchant_no is not None:
        condition &= Q(merchant_no=merchant_no)
    return condition


def sync_refund(refund: Refund | int, *, dry_run: bool = False) -> SyncReport:
    """Query one refund now, due or not (final included), and record the answer."""
    return sync_refunds([refund], dry_run=dry_run)
