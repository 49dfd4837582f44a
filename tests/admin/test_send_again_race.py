"""Eight confirmations of the send-again page posted at once, on each of four refunds, over real
HTTP (pytest-django's live server): the count the person confirmed is the compare-and-swap, so
HSQ receives exactly one application per refund and the other confirmations are told it was
sent already. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import requests
from django.conf import settings
from django.utils import timezone

from hsq_refunds.models import Refund
from tests.at_once import post_at_once

from .test_apply_page import send_again_url, sent

pytestmark = pytest.mark.django_db(transaction=True)

REFUNDS = 4
CONFIRMATIONS = 8


def flagged(merchant_no: str, trans_no: str) -> Refund:
    """A refund applied for once whose application HSQ never confirmed, flagged for a person."""
    now = timezone.now()
    return Refund.objects.create(
        merchant_no=merchant_no,
        trans_no=trans_no,
        orig_trans_no=f"PO-{trans_no}",
        orig_amount=1500,
        amount=1500,
        application="unknown",
        apply_attempts=1,
        needs_attention=True,
        attention_reason="not_received",
        applied_at=now - timedelta(minutes=10),
        next_query_at=now + timedelta(hours=1),
    )


def test_concurrent_confirmations_send_each_refund_once(
    staff_client, sandbox, merchant_no, live_server
):
    applier = staff_client("view_refund", "apply_refund")
    refunds = [flagged(merchant_no, f"RS-{n}") for n in range(REFUNDS)]
    tokens = {}
    with requests.Session() as session:  # each confirmation page open, showing its count
        session.cookies.set(
            settings.SESSION_COOKIE_NAME, applier.cookies[settings.SESSION_COOKIE_NAME].value
        )
        for refund in refunds:
            page = session.get(live_server.url + send_again_url(refund), timeout=30)
            assert 'name="apply_attempts" value="1"' in page.text
            tokens[refund.pk] = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[
                1
            ]
        cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.get_dict().items())
    posts = [
        (
            live_server.url + send_again_url(refund),
            {"_confirm": "1", "apply_attempts": "1", "csrfmiddlewaretoken": tokens[refund.pk]},
        )
        for refund in refunds
        for _click in range(CONFIRMATIONS)
    ]

    outcomes = post_at_once(posts, headers={"Cookie": cookie})

    assert len(outcomes) == REFUNDS * CONFIRMATIONS
    assert {reply.status for reply in outcomes} == {302}  # back to the refund's page
    assert sent(sandbox) == {refund.trans_no: 1 for refund in refunds}
    assert set(Refund.objects.values_list("apply_attempts", flat=True)) == {2}
