"""Reliability fixtures: the app pointed at the session's sandbox gateway, quick to give up.

Retries are off, so that the sandbox's query counts say exactly how often each refund was asked
about, and the read timeout is short, so that a gateway slower than it costs little time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from hsq_refunds.models import Refund

#: The timeouts every reliability test runs with (seconds): small, but far above what the
#: sandbox needs to answer on 127.0.0.1.
READ_TIMEOUT = 0.5
CONNECT_TIMEOUT = 1.0


@pytest.fixture
def hsq_test_overrides() -> dict[str, Any]:
    return {"RETRIES": 0, "CONNECT_TIMEOUT": CONNECT_TIMEOUT, "READ_TIMEOUT": READ_TIMEOUT}


@pytest.fixture
def make_refunds(refunds) -> Callable[..., list[Refund]]:
    """``make_refunds(trans_nos, status="PROCESSING", amount=1500, **fields)``: due refunds
    applied for five minutes ago, known to the sandbox as already ``SUCCESS`` with the same
    amount (so one good query finishes each), in the order given (see ``refunds``)."""

    def create(
        trans_nos: Sequence[str], *, status: str = "PROCESSING", amount: int = 1500, **fields: Any
    ) -> list[Refund]:
        return refunds(
            {
                "transNo": trans_no,
                "status": status,
                "amount": amount,
                "applied_ago": timedelta(minutes=5),
                **fields,
            }
            for trans_no in trans_nos
        )

    return create
