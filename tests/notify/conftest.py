"""Notification fixtures: HSQ's signed form, built with the sandbox's platform key, and the view
behind a real HTTP server (pytest-django's ``live_server``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from hsq_refunds.gateway.signing import request_sign_string, sign

NOTIFY_PATH = "/hsq/refund-notify/"


@pytest.fixture(scope="session")
def platform_private(hsq_sandbox_credentials):
    data = Path(hsq_sandbox_credentials.platform_private_key).read_bytes()
    return serialization.load_pem_private_key(data, password=None)


@pytest.fixture
def notification(hsq_sandbox_credentials, platform_private) -> Callable[..., dict[str, str]]:
    """``notification(transNo, status, **fields)``: a form as HSQ signs it."""

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
        form = {
            "method": method,
            "version": version,
            "format": "JSON",
            "merchantNo": merchant_no or hsq_sandbox_credentials.merchant_no,
            "signType": "RSA2",
            "signContent": json.dumps(content, ensure_ascii=False, separators=(",", ":")),
        }
        sign_string = request_sign_string(form, hsq_sandbox_credentials.sign_key)
        return {**form, "sign": sign(platform_private, sign_string)}

    return build


@pytest.fixture
def notify_url(live_server) -> str:
    return live_server.url + NOTIFY_PATH


@pytest.fixture
def post(notify_url) -> Callable[..., requests.Response]:
    """``post(form)``: the form POSTed to the view over real HTTP."""
    session = requests.Session()

    def send(form: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("data", form)
        return session.post(notify_url, timeout=30, **kwargs)

    yield send
    session.close()
