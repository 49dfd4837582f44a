"""Fixtures for the django-q2 tasks: the app pointed at the sandbox, due refunds on both sides."""

from __future__ import annotations

import pydoc
from collections.abc import Callable
from datetime import timedelta

import pytest
from django_q.conf import Conf
from django_q.models import OrmQ


@pytest.fixture
def make_refunds(refunds) -> Callable[..., list[int]]:
    """``make_refunds(count, prefix="R", due=True)``: tracked refunds the gateway settles (already
    ``SUCCESS`` there, so one query finishes each), applied five minutes ago; due now, or an hour
    from now. Returns their ids (see the suite's ``refunds`` factory)."""

    def create(count: int, prefix: str = "R", *, due: bool = True) -> list[int]:
        rows = refunds(
            {
                "transNo": f"{prefix}{index:05d}",
                "amount": 1000 + index,
                "applied_ago": timedelta(minutes=5),
                "due": due,
            }
            for index in range(count)
        )
        return [row.pk for row in rows]

    return create


@pytest.fixture
def queued(monkeypatch) -> Callable[[], list[object]]:
    """Sync mode off: ``async_task`` leaves tasks in the ORM broker's table.

    Returns ``run_queued()``, which runs and empties the queue, oldest first, as a worker would.
    """
    monkeypatch.setattr(Conf, "SYNC", False)

    def run_queued() -> list[object]:
        results = []
        for row in OrmQ.objects.order_by("id"):
            task = row.task
            results.append(pydoc.locate(task["func"])(*task["args"], **task["kwargs"]))
            row.delete()
        return results

    return run_queued
