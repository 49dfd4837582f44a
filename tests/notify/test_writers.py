"""Many writers on one refund, over real HTTP (the view behind pytest-django's live server, the
application sent to the sandbox): concurrent deliveries are decided one after the other under the
refund's row lock, replays change nothing, and an application's answer that a notification
overtook is superseded, whether it accepts or refuses.

The races are set up with barriers and events (the sandbox holds the application until the
notification is recorded), never with sleeps. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.db import connection

from hsq_refunds.apply import balance_of
from hsq_refunds.exceptions import RefundRefused
from hsq_refunds.models import Refund, RefundQuery
from tests.at_once import post_at_once

pytestmark = pytest.mark.django_db(transaction=True)

ORDER = "PO-W"
PAID = 1000


def apply(trans_no: str, amount: int = PAID) -> Refund:
    return Refund.objects.apply(
        orig_trans_no=ORDER, orig_amount=PAID, amount=amount, trans_no=trans_no
    )


def sent(sandbox) -> dict[str, int]:
    return {no: counts["received"] for no, counts in sandbox.application_counts().items()}


@pytest.fixture
def tracked(sandbox) -> Refund:
    return Refund.objects.track("RW-1", orig_trans_no=ORDER, amount=1500)


def test_32_concurrent_deliveries_all_succeed_and_the_refund_ends_success(
    tracked, notification, notify_url
):
    """HSQ's retries and a replayed capture at once: a quarter PROCESSING, the rest SUCCESS."""
    forms = [notification("RW-1", "PROCESSING")] * 8 + [notification("RW-1", "SUCCESS")] * 24

    replies = post_at_once([(notify_url, form) for form in forms])

    assert [(reply.status, reply.text) for reply in replies] == [(200, "SUCCESS")] * 32
    tracked.refresh_from_db()
    assert (tracked.status, tracked.final_source, tracked.needs_attention) == (
        "SUCCESS",
        "notification",
        False,
    )
    # One audit row per distinct delivery, whatever order they were decided in.
    seen = list(tracked.queries.values_list("status_seen", flat=True))
    assert sorted(seen) in (["PROCESSING", "SUCCESS"], ["SUCCESS"]), seen
    assert tracked.version == len(seen)


def test_twenty_replays_of_one_delivery_add_nothing(tracked, notification, post):
    form = notification("RW-1", "SUCCESS")
    assert post(form).text == "SUCCESS"
    tracked.refresh_from_db()
    version, rows = tracked.version, RefundQuery.objects.count()

    replies = [post(form) for _replay in range(20)]

    assert [(r.status_code, r.text) for r in replies] == [(200, "SUCCESS")] * 20
    tracked.refresh_from_db()
    assert (tracked.version, RefundQuery.objects.count()) == (version, rows)


# --------------------------------------------------------------------------- overtaken answers


@pytest.fixture
def held(sandbox, monkeypatch) -> Iterator[dict[str, threading.Event]]:
    """The sandbox holds each application, once received, until ``release`` is set."""
    events = {"arrived": threading.Event(), "release": threading.Event()}
    answer = sandbox._answer_application

    def holding(fields: Any) -> Any:
        events["arrived"].set()
        assert events["release"].wait(timeout=60), "never released"
        return answer(fields)

    monkeypatch.setattr(sandbox, "_answer_application", holding)
    yield events
    events["release"].set()


def apply_while(held: dict[str, threading.Event], deliver) -> tuple[Refund, requests.Response]:
    """Apply in a thread; once the sandbox holds the application, ``deliver()`` (the
    notification, over HTTP), then let the sandbox answer the application."""
    outcome: dict[str, Any] = {}

    def applying() -> None:
        try:
            outcome["refund"] = apply("RW-A")
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=applying)
    thread.start()
    try:
        assert held["arrived"].wait(timeout=30), "the application never reached the sandbox"
        reply = deliver()
    finally:
        held["release"].set()
        thread.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    return Refund.objects.get(trans_no="RW-A"), reply


def test_a_refusal_after_a_success_notification_changes_nothing(sandbox, held, notification, post):
    """HSQ refuses the application as a repeat (it knows the transNo: it was applied before),
    and its SUCCESS notification lands while the refusal is on its way: SUCCESS stays, and the
    order has nothing left to refund."""
    sandbox.add_refunds([{"transNo": "RW-A", "amount": PAID, "timeline": [{"status": "SUCCESS"}]}])

    refund, reply = apply_while(
        held, lambda: post(notification("RW-A", "SUCCESS", amount=PAID, origTransNo=ORDER))
    )

    assert (reply.status_code, reply.text) == (200, "SUCCESS")
    assert (refund.status, refund.final_source, refund.needs_attention) == (
        "SUCCESS",
        "notification",
        False,
    )
    outcomes = list(refund.queries.order_by("id").values_list("source", "outcome"))
    assert outcomes == [("notification", "ok"), ("application", "superseded")]
    assert balance_of(refund.merchant_no, ORDER).taken == PAID
    with pytest.raises(RefundRefused):
        apply("RW-B", amount=1)
    assert sent(sandbox) == {"RW-A": 1}


def test_an_accepted_answer_after_a_success_notification_is_superseded(
    sandbox, held, notification, post
):
    sandbox.configure_apply(balance_seconds=60)  # the application's answer says PROCESSING

    refund, reply = apply_while(
        held, lambda: post(notification("RW-A", "SUCCESS", amount=PAID, origTransNo=ORDER))
    )

    assert (reply.status_code, reply.text) == (200, "SUCCESS")
    assert (refund.status, refund.application, refund.needs_attention) == (
        "SUCCESS",
        "accepted",
        False,
    )
    outcomes = list(refund.queries.order_by("id").values_list("source", "outcome"))
    assert outcomes == [("notification", "ok"), ("application", "superseded")]
    assert sent(sandbox) == {"RW-A": 1}
