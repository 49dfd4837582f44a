"""Suite-wide fixtures: the sandbox gateway that hsq_refunds ships for merchants' tests, and the
app configured to use it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from django.db import connection
from django.utils import timezone

from hsq_refunds.gateway.signing import request_sign_string, sign
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


@pytest.fixture(scope="session")
def platform_private(hsq_sandbox_credentials):
    """The sandbox's platform private key: what HSQ signs its notifications with."""
    data = Path(hsq_sandbox_credentials.platform_private_key).read_bytes()
    return serialization.load_pem_private_key(data, password=None)


@pytest.fixture
def sign_form(hsq_sandbox_credentials, platform_private) -> Callable[..., dict[str, str]]:
    """``sign_form(signContent, **fields)``: a notification form signed by the platform, around
    any ``signContent`` text (``fields`` replace the form's own)."""

    def build(content: str, **fields: str) -> dict[str, str]:
        form = {
            "method": "CALLBACK",
            "version": "1.0.0",
            "format": "JSON",
            "merchantNo": hsq_sandbox_credentials.merchant_no,
            "signType": "RSA2",
            "signContent": content,
            **fields,
        }
        sign_string = request_sign_string(form, hsq_sandbox_credentials.sign_key)
        return {**form, "sign": sign(platform_private, sign_string)}

    return build


@pytest.fixture
def notification(sign_form) -> Callable[..., dict[str, str]]:
    """``notification(transNo, status, **fields)``: a form as HSQ signs it; ``fields`` replace
    those of its ``signContent``."""

    def build(
        trans_no: str,
        status: str = "SUCCESS",
        *,
        amount: int | str = "1500",
        merchant_no: str | None = None,
        method: str = "CALLBACK",
        version: str = "1.0.0",
        **fields: Any,
    ) -> dict[str, str]:
        content = {
            "transNo": trans_no,
            "origTransNo": "PO1",
            "tradeNo": f"T{trans_no}",
            "orderAmt": str(amount),
            "orderStatus": status,
            "finishedDate": "20261201100000" if status in ("SUCCESS", "FAIL") else "",
            "respCode": "200007",
            "respMsg": "成功",
            "extend": "",
            **fields,
        }
        form = {"method": method, "version": version}
        if merchant_no:
            form["merchantNo"] = merchant_no
        return sign_form(json.dumps(content, ensure_ascii=False, separators=(",", ":")), **form)

    return build
