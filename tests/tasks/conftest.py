"""Fixtures for the django-q2 tasks: the app pointed at the sandbox, due refunds on both sides."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from hsq_refunds.models import Refund


@pytest.fixture
def make_refunds(sandbox, hsq_sandbox_credentials) -> Callable[..., list[int]]:
    """``make_refunds(count, prefix="R", due=True)``: tracked refunds the gateway settles.

    Each is known to the sandbox as already ``SUCCESS``, so one query finishes it. Due refunds
    were due a minute ago; the others an hour from now. Returns their ids.
    """

    def create(count: int, prefix: str = "R", *, due: bool = True) -> list[int]:
        now = timezone.now()
        trans_nos = [f"{prefix}{index:05d}" for index in range(count)]
        sandbox.add_refunds(
            {"transNo": trans_no, "amount": 1000 + index, "timeline": [{"status": "SUCCESS"}]}
            for index, trans_no in enumerate(trans_nos)
        )
        Refund.objects.bulk_create(
            Refund(
                merchant_no=hsq_sandbox_credentials.merchant_no,
                trans_no=trans_no,
                amount=1000 + index,
                applied_at=now - timedelta(minutes=5),
                next_query_at=now + (-timedelta(minutes=1) if due else timedelta(hours=1)),
            )
            for index, trans_no in enumerate(trans_nos)
        )
        return list(
            Refund.objects.filter(trans_no__in=trans_nos)
            .order_by("id")
            .values_list("id", flat=True)
        )

    return create
