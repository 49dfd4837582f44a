"""Fixtures of the operations tests: refunds written straight into the table, staff users, and
the browser fixtures of the admin's Chromium tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from hsq_refunds.models import Refund, RefundQuery, SyncRun

# Debian's Chromium driven by Playwright, and a superuser with a password for it.
from tests.admin.browser import PASSWORD, browser, superuser
from tests.admin.conftest import staff_clients

MERCHANT = "888000000001"


@pytest.fixture
def now() -> datetime:
    return timezone.now()


@pytest.fixture
def make_refund(db, now) -> Callable[..., Refund]:
    """``make_refund(trans_no, **fields)``: a row as the sync would have left it.

    ``applied_ago`` (a timedelta, default 2 minutes) sets ``applied_at`` before ``now``;
    the refund is not due unless ``next_query_at`` is given.
    """
    numbers = iter(range(1, 10**9))

    def make(trans_no: str | None = None, **fields: Any) -> Refund:
        applied_ago = fields.pop("applied_ago", timedelta(minutes=2))
        values = {
            "merchant_no": MERCHANT,
            "trans_no": trans_no or f"RF{next(numbers):08d}",
            "amount": 1234,
            "applied_at": now - applied_ago,
            "next_query_at": now + timedelta(minutes=5),
            **fields,
        }
        return Refund.objects.create(**values)

    return make


@pytest.fixture
def make_query(db, now) -> Callable[..., RefundQuery]:
    """``make_query(refund, outcome, ago=timedelta(minutes=1), **fields)``: an audit row."""

    def make(refund: Refund, outcome: str, ago: timedelta = timedelta(minutes=1), **fields: Any):
        return RefundQuery.objects.create(
            refund=refund, outcome=outcome, queried_at=now - ago, **fields
        )

    return make


@pytest.fixture
def make_run(db, now) -> Callable[..., SyncRun]:
    """``make_run(ago=timedelta(minutes=1), **fields)``: a recorded sync run."""

    def make(ago: timedelta = timedelta(minutes=1), **fields: Any) -> SyncRun:
        values = {
            "started_at": now - ago - timedelta(seconds=3),
            "finished_at": now - ago,
            "trigger": "command",
            "selected": 3,
            "queried": 3,
            "summary": "3 refunds queried: 3 succeeded.",
            **fields,
        }
        return SyncRun.objects.create(**values)

    return make


@pytest.fixture
def staff_client(db, django_user_model) -> Callable[..., Client]:
    """``staff_client(*codenames)``: a client logged in as staff with these refund permissions."""
    return staff_clients(django_user_model, "ops")


__all__ = ["PASSWORD", "browser", "superuser"]
