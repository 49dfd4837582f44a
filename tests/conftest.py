"""Suite-wide fixtures: the sandbox gateway that hsq_refunds ships for merchants' tests, and the
app configured to use it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

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
