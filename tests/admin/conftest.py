"""Admin test fixtures: the app pointed at the sandbox gateway, refunds on both sides, users."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from hsq_refunds.models import Refund

# Debian's Chromium driven by Playwright, and a superuser with a password for it.
from .browser import browser, superuser  # noqa: F401

#: Every permission of the app's refunds, by codename.
REFUND_PERMISSIONS = ("view_refund", "change_refund", "add_refund", "refresh_refund")


@pytest.fixture
def sandbox(settings, hsq_sandbox, hsq_sandbox_settings):
    """The sandbox gateway, with the app configured to use it (no retries: counts are exact)."""
    settings.HSQ_REFUNDS = {**hsq_sandbox_settings, "RETRIES": 0, "READ_TIMEOUT": 10}
    return hsq_sandbox


@pytest.fixture
def merchant_no(hsq_sandbox_credentials) -> str:
    return hsq_sandbox_credentials.merchant_no


@pytest.fixture
def make_refund(refunds) -> Callable[..., Refund]:
    """``make_refund(trans_no, timeline=..., amount=..., known=True, **fields)``: one refund
    applied for two minutes ago, here and (unless ``known=False``) at the sandbox gateway with
    ``timeline`` (default: already ``SUCCESS``); see the suite's ``refunds`` factory."""

    def make(
        trans_no: str,
        *,
        timeline: Sequence[dict[str, Any]] = ({"status": "SUCCESS"},),
        amount: int = 1234,
        orig_trans_no: str = "",
        known: bool = True,
        **fields: Any,
    ) -> Refund:
        spec = {"transNo": trans_no, "timeline": list(timeline), "amount": amount, "known": known}
        [refund] = refunds([{**spec, "orig_trans_no": orig_trans_no, **fields}])
        return refund

    return make


def staff_clients(django_user_model, prefix: str) -> Callable[..., Client]:
    """``make(*codenames)``: a client logged in as a new staff user, ``<prefix>-<codenames>``,
    with these refund permissions (the ``staff_client`` fixtures of the admin and ops tests)."""

    def make(*codenames: str) -> Client:
        user = django_user_model.objects.create_user(
            username=f"{prefix}-{'-'.join(codenames) or 'none'}", password="x", is_staff=True
        )
        permissions = Permission.objects.filter(
            content_type__app_label="hsq_refunds", codename__in=codenames
        )
        assert permissions.count() == len(codenames), codenames
        user.user_permissions.add(*permissions)
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def staff_client(db, django_user_model) -> Callable[..., Client]:
    """``staff_client(*codenames)``: a client logged in as staff with these refund permissions."""
    return staff_clients(django_user_model, "staff")


def changelist_url() -> str:
    return reverse("admin:hsq_refunds_refund_changelist")


def change_url(refund: Refund) -> str:
    return reverse("admin:hsq_refunds_refund_change", args=[refund.pk])


def refresh_url(refund: Refund) -> str:
    return reverse("admin:hsq_refunds_refund_refresh", args=[refund.pk])


def message_texts(response) -> list[tuple[str, str]]:
    """``[(level_tag, text), ...]`` of the messages a response carried."""
    return [(message.level_tag, str(message)) for message in response.context["messages"]]


def run_action(client: Client, action: str, refunds: Sequence[Refund], **kwargs: Any):
    """POST an admin action on ``refunds`` from the change list; follow to the list.

    ``kwargs`` go to ``client.post`` (``headers=...``).
    """
    return client.post(
        changelist_url(),
        {"action": action, "_selected_action": [refund.pk for refund in refunds]},
        follow=True,
        **kwargs,
    )
