"""Which refunds a sync run asks about, read in pages of ids so that memory stays flat at any
table size."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.db import models
from django.db.models import Q

from .models import Refund

__all__ = ["Selection", "due_id_pages", "queued_among", "select_refunds"]


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
class Selection:
    """Where a run's refunds come from, and the extra condition its claims re-check."""

    pages: Iterator[list[int]]
    claim_condition: Q
    count: Callable[[], int | None]
    unknown: list[tuple[str, str]] = field(default_factory=list)


def select_refunds(
    refunds: models.QuerySet[Refund] | Iterable[Refund | int] | None,
    trans_nos: Iterable[str] | None,
    *,
    merchant_no: str | None,
    due_only: bool,
    include_final: bool,
    errored_only: bool,
    cutoff: datetime,
    size: int,
) -> Selection:
    """A run's refunds, chosen by :func:`~hsq_refunds.sync.sync_refunds`'s arguments; due at
    ``cutoff``."""
    filters = Q()
    if merchant_no is not None:
        filters &= Q(merchant_no=merchant_no)
    if errored_only:
        filters &= Q(error_count__gt=0)

    if refunds is not None and trans_nos is not None:
        raise ValueError("give refunds or trans_nos, not both")
    if isinstance(refunds, models.QuerySet) and not refunds.query.is_sliced:
        queryset = Refund.objects.filter(filters, pk__in=refunds.values("pk"))
        return Selection(queryset.id_pages(size), Q(), queryset.count)
    if refunds is not None:
        ids = _ids_of(refunds)
        return Selection(_pages_of_ids(ids, filters, size), Q(), lambda: len(ids))
    if trans_nos is not None:
        return _select_trans_nos(list(dict.fromkeys(trans_nos)), filters, merchant_no, size)

    if due_only:
        queryset = Refund.objects.filter(filters).due(cutoff)
        return Selection(due_id_pages(queryset, size), Q(next_query_at__lte=cutoff), queryset.count)
    queryset = Refund.objects.filter(filters)
    if not include_final:
        queryset = queryset.open()
    return Selection(queryset.id_pages(size), Q(), queryset.count)


def _select_trans_nos(
    trans_nos: list[str], filters: Q, merchant_no: str | None, size: int
) -> Selection:
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
    return Selection(_pages_of_ids(ids, Q(), size), Q(), lambda: len(ids), unknown)


def queued_among(
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
