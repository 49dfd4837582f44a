"""The sync engine: which refunds to ask about, claiming them, asking HSQ, writing the answers.

Every entry point (the admin, ``manage.py sync_refunds``, the django-q2 tasks) calls
:func:`sync_refunds`, naming itself as the run's ``trigger``. The selection is in
:mod:`hsq_refunds.selection`, the concurrent run in :mod:`hsq_refunds.pipeline`, the record of
each run in :mod:`hsq_refunds.runs`; the rules it applies are in :mod:`hsq_refunds.rules`, the
claims in :mod:`hsq_refunds.models`, the conditional write in :mod:`hsq_refunds.recording`, the
report and its wording in :mod:`hsq_refunds.report`.

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
   two runs at once never both claim one refund: on PostgreSQL the second ``UPDATE`` waits for
   the first and then re-evaluates the condition. Enough is kept claimed for ``concurrency``
   queries in flight plus what the workers take in the next
   :data:`~hsq_refunds.pipeline.CLAIM_AHEAD_SECONDS` at the recent pace, so that no query slot
   waits while the main thread writes. A claimed refund whose query could no longer end (and be
   written) within the lease by the time a worker is free is not asked about on that claim: its
   lease is renewed and it is queued again. Claims are committed at once: the engine refuses to
   run inside a transaction of the caller's, where they would stay uncommitted (and lock their
   rows) while the queries wait on the network. A run killed half-way leaves nothing locked
   longer than ``CLAIM_LEASE``.
3. **Query.** A thread pool of ``concurrency`` workers sends the queries (the work waits on the
   network); each worker takes the next claimed refund as soon as it is free. Workers never
   touch the database.
4. **Write.** The main thread applies the rules to the answers and writes them in batches
   (:data:`~hsq_refunds.pipeline.WRITE_BATCH` answers or twice ``concurrency``, whichever is
   more; or what came in within :data:`~hsq_refunds.pipeline.WRITE_WAIT` seconds; or the last
   ones) with :func:`~hsq_refunds.recording.write_answers`, in one transaction per batch: one
   ``UPDATE ... FROM <their rows>`` for the refunds that change the same fields, guarded row by
   row by the run's claim and the state each answer was decided from, and one ``INSERT`` of
   their audit rows. Signals are sent after commit. If a batch fails, its answers are written
   one by one, so that one refund the database refuses costs no other its answer.

A failure on one refund, whatever it is (an exception in the rules, a database that refuses what
they decided, a merchant that is no longer configured) is recorded for that refund like a failed
query: the error, the consecutive-error count, the ``ERROR_BACKOFF`` wait, an audit row. The run
goes on, and the refund makes way for the others in the queue.

``dry_run=True`` queries HSQ and reports what would change, but writes nothing at all: no
claims, no results, no audit rows, no signals. A dry run can therefore overlap a real run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from django.db import models, transaction
from django.utils import timezone

from .apply import in_caller_transaction, send_queued
from .conf import get_settings, merchant_numbers, setting_path
from .gateway import ConfigurationError
from .models import Refund, SyncTrigger
from .pipeline import ProgressCallback, Run
from .report import RefundFailure, SyncReport
from .runs import record_sync_run
from .selection import due_id_pages, queued_among, select_refunds

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
    trigger: SyncTrigger = SyncTrigger.API,
) -> SyncReport:
    """Ask HSQ about refunds and record the answers; return what happened.

    Without ``refunds`` or ``trans_nos``, the refunds due now are synced (``due_only``); with
    ``due_only=False`` every unfinished refund is (and final ones too with ``include_final``).
    ``refunds`` (a queryset, or an iterable of refunds or ids) or ``trans_nos`` choose refunds
    explicitly: each is queried whether due or not, final ones included; a transNo that is not
    tracked is reported as an error. ``merchant_no`` and ``errored_only`` (refunds whose last
    query failed) narrow any selection. ``limit`` caps how many refunds are queried;
    ``concurrency`` defaults to ``CONCURRENCY``. ``dry_run`` writes nothing. ``trigger`` is what
    started the run, for its :class:`~hsq_refunds.models.SyncRun`: ``API``, the project's own
    code, unless given.

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
        trigger=trigger,
    )


def sync_claimed(
    refund_ids: Sequence[int],
    claim_token: str,
    *,
    allow_transaction: bool = False,
    trigger: SyncTrigger = SyncTrigger.API,
) -> SyncReport:
    """Sync the refunds a django-q2 cycle claimed ahead for one batch, under ``claim_token``.

    Only refunds still holding the token and still due are queried, so a batch whose lease ran
    out and that a later cycle queued again does nothing twice. What the run passes over (no
    longer due) is released at the end.
    """
    try:
        return _sync(
            list(refund_ids),
            adopt_token=claim_token,
            allow_transaction=allow_transaction,
            trigger=trigger,
        )
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
    trigger: SyncTrigger,
) -> SyncReport:
    if trigger not in SyncTrigger.values:
        raise ValueError(f"trigger must be one of {', '.join(SyncTrigger.values)}")
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
        send_queued(queued_among(refunds, trans_nos, merchant_no))
    run = Run(
        policy,
        concurrency=concurrency,
        limit=limit,
        dry_run=dry_run,
        progress=progress,
        adopt_token=adopt_token,
    )
    selection = select_refunds(
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
    record_sync_run(report, started_at=run.started_at, finished_at=timezone.now(), trigger=trigger)
    return report


def sync_refund(
    refund: Refund | int, *, dry_run: bool = False, trigger: SyncTrigger = SyncTrigger.API
) -> SyncReport:
    """Query one refund now, due or not (final included), and record the answer."""
    return sync_refunds([refund], dry_run=dry_run, trigger=trigger)
