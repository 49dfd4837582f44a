"""django-q2 tasks: the scheduled sync, and the batches it spreads over every worker.

:func:`sync_due_refunds` runs on the schedule that ``manage.py hsq_refunds_schedule`` installs.
When no more than ``TASK_BATCH_SIZE`` refunds are due it syncs them itself. Otherwise it cuts
the due refunds into batches and queues one :func:`sync_refund_batch` task per batch, all in
one django-q2 group per cycle, so that every worker of every cluster reading the queue takes
part: with the Redis broker, that is every ``manage.py qcluster`` on every machine.

One cycle queues at most ``CYCLE_LIMIT`` refunds, oldest due first (``next_query_at``, then
id), so that a backlog of a million due refunds does not become a million refunds' claims and
tasks at once: the next cycle takes the next ``CYCLE_LIMIT``, and so on, while the workers work
through what is queued. ``CYCLE_LIMIT`` is, unless given, what the workers can query between
two cycles (see the settings reference). The admin's bulk refresh (:func:`queue_refresh`)
queues at most as many.

A queued batch must not be queued again by the next cycle while it waits for a worker. So the
cycle *claims* each batch's refunds before queueing it, with the engine's own claim fields
(``claimed_until``, ``claim_token``): a token unique to the batch, for a lease long enough for
the broker to hand the task over (:func:`queued_lease`). Later cycles, like every other sync,
pass over claimed refunds. When the batch task starts it takes its refunds back (those still
holding its token) and hands them to the engine, which claims them again one by one as it
queries them. If the task is lost, the lease runs out and a later cycle queues the refunds
again; if the old task turns up after all, its token is gone from them and it does nothing.
Either way the engine's claims keep two workers from querying one refund at the same time.

Every task returns JSON-able data (the engine's report, and for batches the host and process
that ran it), which django-q2 keeps with the task.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from .apply import in_caller_transaction, refuse_caller_transaction, send_queued
from .conf import get_settings
from .models import Refund, SyncTrigger
from .scheduling import DJANGO_Q_DEFAULT_RETRY
from .selection import due_id_pages
from .sync import sync_claimed, sync_refunds

__all__ = [
    "BATCH_TASK",
    "CYCLE_TASK",
    "QueuedRefresh",
    "cluster_configured",
    "queue_refresh",
    "queued_lease",
    "sync_due_refunds",
    "sync_refund_batch",
]

logger = logging.getLogger("hsq_refunds.tasks")

#: Dotted paths django-q2 stores with each task (and the schedule calls).
CYCLE_TASK = "hsq_refunds.tasks.sync_due_refunds"
BATCH_TASK = "hsq_refunds.tasks.sync_refund_batch"


def cluster_configured() -> bool:
    """Whether tasks can be queued: ``django_q`` is installed and ``Q_CLUSTER`` is set."""
    return apps.is_installed("django_q") and bool(getattr(settings, "Q_CLUSTER", None))


def queued_lease() -> timedelta:
    """How long a queued batch holds its refunds before a later cycle may queue them again.

    The longest of ``CLAIM_LEASE`` (how long the engine's own claims last),
    ``Q_CLUSTER["retry"]`` (how long a broker that takes receipts waits before it gives the
    task to another worker; it includes the wait in a cluster's internal queue) and
    ``Q_CLUSTER["timeout"]``. A lost task holds its refunds no longer than this.
    """
    conf = getattr(settings, "Q_CLUSTER", None) or {}
    seconds = [get_settings().CLAIM_LEASE, _number(conf.get("retry"), DJANGO_Q_DEFAULT_RETRY)]
    seconds.append(_number(conf.get("timeout"), 0))
    return timedelta(seconds=max(seconds))


def _inline() -> bool:
    """django-q2's ``sync`` mode runs each task at once, inside the scheduler's transaction."""
    return bool((getattr(settings, "Q_CLUSTER", None) or {}).get("sync"))


def _number(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def _due_unclaimed(now: datetime) -> QuerySet[Refund]:
    return Refund.objects.due(now).claimable(now)


def _due_pages(now: datetime, size: int) -> Iterator[list[int]]:
    """Ids of due, unclaimed refunds in pages of ``size``, oldest due first."""
    return due_id_pages(_due_unclaimed(now), size)


def _group_name(kind: str) -> str:
    return f"hsq_refunds.{kind}.{timezone.now():%Y%m%dT%H%M%S}.{uuid.uuid4().hex[:8]}"


def sync_due_refunds() -> dict[str, Any]:
    """The scheduled sync: the due refunds, inline when few, else in queued batches; at most
    ``CYCLE_LIMIT`` of them, oldest due first (the next cycle takes the rest).

    Returns ``{"batches": 0, "queued": 0, "group": None, "report": {...}}`` after an inline
    sync, or ``{"batches": n, "queued": refunds, "group": "...", "report": None}`` after
    queueing ``n`` batches in one group.
    """
    if not _inline():  # its claims must be committed before the tasks are queued
        refuse_caller_transaction("sync_due_refunds()")
    policy = get_settings()
    size, limit = policy.TASK_BATCH_SIZE, policy.CYCLE_LIMIT
    now = timezone.now()
    waiting = list(_due_unclaimed(now).values_list("id", flat=True)[: size + 1])
    if len(waiting) <= size:
        report = sync_refunds(allow_transaction=_inline(), limit=limit, trigger=SyncTrigger.TASK)
        return {"batches": 0, "queued": 0, "group": None, "report": report.as_dict()}
    if not in_caller_transaction():  # applications a dead process left unsent
        send_queued()
    return _fan_out(now, size, limit)


def _fan_out(now: datetime, size: int, limit: int) -> dict[str, Any]:
    """Claim up to ``limit`` due refunds batch by batch and queue one task per batch."""
    from django_q.tasks import async_task

    group = _group_name("sync")
    until = now + queued_lease()
    batches = queued = 0
    for page in _due_pages(now, size):
        if queued >= limit:
            break
        token = uuid.uuid4().hex
        batch = Refund.objects.filter(id__in=page[: limit - queued])
        if not batch.due(now).claimable(timezone.now()).claim(token, until):
            continue
        ids = list(
            batch.held_by(token).order_by("next_query_at", "id").values_list("id", flat=True)
        )
        try:
            async_task(BATCH_TASK, ids, claim_token=token, q_options={"group": group})
        except Exception:
            # The broker refused the task: free its refunds for the next cycle at once.
            Refund.objects.filter(id__in=ids).release(token)
            raise
        batches += 1
        queued += len(ids)
    logger.info(
        "queued %d refunds in %d batches (group %s)%s",
        queued,
        batches,
        group,
        f"; CYCLE_LIMIT {limit} reached, the next cycle takes more" if queued >= limit else "",
    )
    return {"batches": batches, "queued": queued, "group": group, "report": None}


def sync_refund_batch(
    refund_ids: Sequence[int], *, claim_token: str | None = None
) -> dict[str, Any]:
    """Sync one batch of refunds; the task :func:`sync_due_refunds` and the admin queue.

    With ``claim_token`` (a batch of a scheduled cycle), the engine takes over the claims the
    cycle made and syncs only the refunds still holding that token; one whose lease ran out
    and that another cycle queued again is left to that cycle. Without it (a refresh asked
    for in the admin), every given refund is queried, due or not, final or not. Returns the
    engine's report plus ``host`` and ``pid`` (which worker ran the batch) and ``refunds``
    (how many it synced).
    """
    ids = list(refund_ids)
    inline = _inline()
    report = (
        sync_refunds(ids, allow_transaction=inline, trigger=SyncTrigger.TASK)
        if claim_token is None
        else sync_claimed(ids, claim_token, allow_transaction=inline, trigger=SyncTrigger.TASK)
    )
    result = report.as_dict()
    result.update(host=socket.gethostname(), pid=os.getpid(), refunds=report.queried)
    return result


@dataclass(frozen=True)
class QueuedRefresh:
    """What :func:`queue_refresh` queued: the task group, and the refunds left out."""

    #: The django-q2 group of the batches.
    group: str
    #: The ids queued, in the order given.
    queued: tuple[int, ...]
    #: The ids beyond ``CYCLE_LIMIT``, not queued.
    left: tuple[int, ...]


def queue_refresh(refund_ids: Sequence[int]) -> QueuedRefresh:
    """Queue a refresh of these refunds (due or not) in batches, at most ``CYCLE_LIMIT`` of
    them: the first ones in the order given. The rest are left out, for the caller to say so.

    For the admin's bulk action above ``ADMIN_SYNC_LIMIT``: the request only queues the work.
    Nothing is claimed in advance: the engine claims each refund when a worker queries it.
    """
    from django_q.tasks import async_task

    policy = get_settings()
    ids = list(dict.fromkeys(int(refund_id) for refund_id in refund_ids))
    chosen, left = ids[: policy.CYCLE_LIMIT], ids[policy.CYCLE_LIMIT :]
    size = policy.TASK_BATCH_SIZE
    group = _group_name("refresh")
    for start in range(0, len(chosen), size):
        async_task(BATCH_TASK, chosen[start : start + size], q_options={"group": group})
    logger.info(
        "queued a refresh of %d refunds (group %s)%s",
        len(chosen),
        group,
        f"; {len(left)} more left out (CYCLE_LIMIT {policy.CYCLE_LIMIT})" if left else "",
    )
    return QueuedRefresh(group, tuple(chosen), tuple(left))
