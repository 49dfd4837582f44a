"""No admin page or message ever shows key material, the sign key or the key password."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.urls import reverse

from .conftest import change_url, changelist_url, refresh_url, run_action

pytestmark = pytest.mark.django_db


@pytest.fixture
def pem_settings(settings, sandbox, hsq_sandbox_credentials, merchant_no):
    """The sandbox setting with the merchant key given as PEM text, as from an environment var."""
    credentials = hsq_sandbox_credentials
    key, _cert, _more = pkcs12.load_key_and_certificates(
        Path(credentials.private_key).read_bytes(), credentials.private_key_password.encode()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    merchant = settings.HSQ_REFUNDS["MERCHANTS"][merchant_no]
    settings.HSQ_REFUNDS = {
        **settings.HSQ_REFUNDS,
        "MERCHANTS": {merchant_no: {**merchant, "PRIVATE_KEY": pem, "PRIVATE_KEY_PASSWORD": ""}},
    }
    return pem


def secrets_of(credentials, pem: str) -> list[str]:
    """The strings that must never appear: the sign key, the password, every line of the key."""
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return [credentials.sign_key, credentials.private_key_password, "PRIVATE KEY", *body]


def assert_no_secrets(html: str, secrets: list[str]) -> None:
    leaked = [secret for secret in secrets if secret in html]
    assert leaked == [], "key material in an admin page"


def test_no_page_shows_key_material(
    admin_client, make_refund, sandbox, pem_settings, hsq_sandbox_credentials
):
    secrets = secrets_of(hsq_sandbox_credentials, pem_settings)
    refunds = [make_refund("R-OK"), make_refund("R-SIG"), make_refund("R-GW")]
    sandbox.set_fault("bad_signature", trans_no="R-SIG")
    sandbox.set_fault("signed_failure", trans_no="R-GW", error_code="E1", error_msg="refused")

    pages = [
        run_action(admin_client, "refresh_status", refunds),
        admin_client.post(refresh_url(refunds[1]), follow=True),
        admin_client.get(changelist_url()),
        admin_client.get(reverse("admin:hsq_refunds_refund_add")),
        *(admin_client.get(change_url(refund)) for refund in refunds),
    ]

    for page in pages:
        assert page.status_code == 200
        assert_no_secrets(page.content.decode(), secrets)
    assert sandbox.query_counts() == {"R-OK": 1, "R-SIG": 2, "R-GW": 1}


@pytest.mark.parametrize(
    "broken",
    [
        {"PRIVATE_KEY_PASSWORD": "wrong-password-123"},
        {"SIGN_KEY": " 0123456789abcdef0123456789abcdef "},
        {"PLATFORM_CERT": "-----BEGIN CERTIFICATE-----\nnot a certificate\n"},
    ],
)
def test_configuration_errors_show_no_key_material(
    admin_client, make_refund, settings, merchant_no, hsq_sandbox_credentials, broken
):
    refund = make_refund("R-CONF")
    merchant = settings.HSQ_REFUNDS["MERCHANTS"][merchant_no]
    settings.HSQ_REFUNDS = {
        **settings.HSQ_REFUNDS,
        "MERCHANTS": {merchant_no: {**merchant, **broken}},
    }
    secrets = [
        hsq_sandbox_credentials.sign_key,
        hsq_sandbox_credentials.private_key_password,
        *(value.strip() for value in broken.values()),
    ]

    refreshed = [
        admin_client.post(refresh_url(refund), follow=True),
        run_action(admin_client, "refresh_status", [refund]),
    ]
    page = admin_client.get(change_url(refund))

    for response in refreshed:
        assert "configuration error" in response.content.decode()
    for response in [*refreshed, page]:
        assert response.status_code == 200
        assert_no_secrets(response.content.decode(), secrets)
