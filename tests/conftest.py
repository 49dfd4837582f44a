"""Suite-wide fixtures: the sandbox gateway that hsq_refunds ships for merchants' tests, and the
app configured to use it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from hsq_refunds.models import Refund

pytest_plugins = ["hsq_refunds.sandbox.pytest_plugin"]


@pytest.fixture(autouse=True)
def _postgres_only(request: pytest.FixtureRequest) -> None:
    """``@pytest.mark.postgres`` tests run on PostgreSQL only (``HSQ_TEST_DATABASE=postgres``)."""
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run with HSQ_TEST_DATABASE=postgres")


@pytest.fixture
def merchant_no(hsq_sandbox_credentials) -> str:
    return hsq_sandbox_credentials.merchant_no


@pytest.fixture
def hsq_test_overrides() -> dict[str, Any]:
    """Keys that ``configure`` puts over the sandbox settings; a folder's conftest may change them.

    Retries are off so that the sandbox's query counts say exactly how often each refund was
    asked about.
    """
    return {"RETRIES": 0, "READ_TIMEOUT": 10}


@pytest.fixture
def configure(settings, hsq_sandbox_settings, hsq_test_overrides) -> Callable[..., dict[str, Any]]:
    """``configure(**keys)``: ``HSQ_REFUNDS`` for the sandbox, these keys on top; returns it."""

    def apply(**keys: Any) -> dict[str, Any]:
        settings.HSQ_REFUNDS = {**hsq_sandbox_settings, **hsq_test_overrides, **keys}
        return settings.HSQ_REFUNDS

    apply()
    return apply


@pytest.fixture
def sandbox(hsq_sandbox, configure):
    """The session's sandbox gateway (reset), with the app configured to use it."""
    return hsq_sandbox


@pytest.fixture
def refunds(sandbox, merchant_no) -> Callable[..., list[Refund]]:
    """``refunds(specs)``: tracked refunds, and their counterparts at the sandbox gateway.

    A spec is ``{"transNo", "timeline"?, "amount"?, "hsq_amount"?, "known"?, "applied_ago"?,
    "status"?, "due"?}``: ``known=False`` leaves the refund out of the gateway (200004);
    ``hsq_amount`` is what the gateway reports when it differs from ``amount``; ``due=False``
    puts the next query in the future; other keys are Refund fields.
    """

    def create(specs: Iterable[Mapping[str, Any]]) -> list[Refund]:
        now = timezone.now()
        gateway_specs = []
        rows = []
        for spec in specs:
            spec = dict(spec)
            trans_no = spec.pop("transNo")
            amount = spec.pop("amount", 1500)
            hsq_amount = spec.pop("hsq_amount", amount)
            timeline = spec.pop("timeline", [{"status": "SUCCESS"}])
            applied_at: datetime = now - spec.pop("applied_ago", timedelta(minutes=2))
            due = spec.pop("due", True)
            if spec.pop("known", True):
                gateway_specs.append(
                    {"transNo": trans_no, "amount": hsq_amount or 0, "timeline": timeline}
                )
            fields = {
                "merchant_no": merchant_no,
                "trans_no": trans_no,
                "amount": amount,
                "applied_at": applied_at,
                "next_query_at": now - timedelta(seconds=1) if due else now + timedelta(hours=1),
                **spec,
            }
            rows.append(Refund(**fields))
        if gateway_specs:
            sandbox.add_refunds(gateway_specs)
        Refund.objects.bulk_create(rows)
        return list(Refund.objects.filter(trans_no__in=[r.trans_no for r in rows]).order_by("id"))

    return create
