"""The concurrent pipeline of one sync run: claims taken ahead of the workers, the workers'
queries, and the main thread's batched writes (see :mod:`hsq_refunds.sync` for how a run works).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext

from .choices import ERROR_OUTCOMES, Outcome
from .clients import get_client
from .conf import HsqRefundsSettings
from .gateway import ConfigurationError, HsqClient, RefundQueryResult
from .gateway.text import printable
from .models import Refund, RefundQuery
from .recording import AnsweredRefund, audit_row, write_answers
from .report import UNKNOWN_REFUND, RefundFailure, SyncReport
from .rules import Decision, decide, decide_failure
from .selection import Selection

__all__ = ["ProgressCallback", "Run"]

logger = logging.getLogger("hsq_refunds.sync")

#: ``progress(done, total)``: called after each refund; ``total`` is ``None`` when unknown.
ProgressCallback = Callable[[int, "int | None"], None]

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


class Run:
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

    def execute(self, selection: Selection) -> SyncReport:
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

    def top_up(self, selection: Selection) -> None:
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
