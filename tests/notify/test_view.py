"""HSQ's refund notification through a real HTTP server in front of the view, on SQLite and on
PostgreSQL: verified pushes land, everything else is a FAIL that writes nothing."""

from __future__ import annotations

import io
import json
import time

import pytest
from django.core.management import call_command

from hsq_refunds import signals
from hsq_refunds.models import Refund, RefundQuery

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def refund(refunds) -> Refund:
    [row] = refunds(
        [{"transNo": "R1", "status": "PROCESSING", "timeline": [{"status": "PROCESSING"}]}]
    )
    return row


@pytest.fixture
def received():
    log: list[tuple[str, str]] = []
    hooks = []
    for name in ("refund_status_changed", "refund_succeeded", "refund_needs_attention"):
        signal = getattr(signals, name)

        def receiver(sender, refund, _name=name, **kwargs):
            log.append((_name, refund.trans_no))

        signal.connect(receiver, weak=False)
        hooks.append((signal, receiver))
    yield log
    for signal, receiver in hooks:
        signal.disconnect(receiver)


def flip(signature: str) -> str:
    return signature[:-1] + ("0" if signature[-1] != "0" else "1")


def snapshot() -> tuple[list, int]:
    return list(Refund.objects.order_by("id").values()), RefundQuery.objects.count()


def test_a_verified_notification_lands_once_however_often_it_comes(
    refund, notification, post, received
):
    form = notification("R1", "SUCCESS")
    replies = [post(form) for _delivery in range(5)]

    assert [(r.status_code, r.text) for r in replies] == [(200, "SUCCESS")] * 5
    assert replies[0].headers["Content-Type"].startswith("text/plain")
    refund.refresh_from_db()
    assert refund.status == "SUCCESS" and refund.next_query_at is None
    assert refund.query_count == 0  # not a query; and not queried again
    assert refund.final_source == "notification" and refund.final_sign == form["sign"]
    assert received == [("refund_status_changed", "R1"), ("refund_succeeded", "R1")]
    audit = list(refund.queries.order_by("id").values_list("source", "outcome", "status_seen"))
    # The repeats are acknowledged and add nothing: no audit row, no new version.
    assert audit == [("notification", "ok", "SUCCESS")]
    assert refund.version == 1
    assert refund.queries.first().sign == form["sign"]


def test_the_proof_of_a_notification_verifies_later(refund, notification, post):
    post(notification("R1", "SUCCESS"))
    out = io.StringIO()
    call_command("hsq_refunds_verify", stdout=out)
    assert "1 verified" in out.getvalue()


def test_an_earlier_status_after_a_final_one_changes_nothing(refund, notification, post):
    assert post(notification("R1", "SUCCESS")).text == "SUCCESS"
    before = snapshot()[0]

    reply = post(notification("R1", "PROCESSING"))

    assert (reply.status_code, reply.text) == (200, "SUCCESS")  # so that HSQ stops sending it
    after = Refund.objects.get(pk=refund.pk)
    assert after.status == "SUCCESS" and not after.needs_attention
    assert after.final_result == before[0]["final_result"]
    assert after.queries.order_by("-id").first().outcome == "out_of_order"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(
            lambda f: {**f, "sign": f["sign"][:-1] + ("0" if f["sign"][-1] != "0" else "1")},
            id="bad-signature",
        ),
        pytest.param(
            lambda f: {**f, "signContent": f["signContent"].replace("1500", "1")}, id="tampered"
        ),
        pytest.param(lambda f: {**f, "method": "OTHER"}, id="method-changed"),
        pytest.param(lambda f: {k: v for k, v in f.items() if k != "sign"}, id="unsigned"),
        pytest.param(lambda f: {**f, "merchantNo": "999000000009"}, id="unknown-merchant"),
        pytest.param(lambda f: {k: v for k, v in f.items() if k != "merchantNo"}, id="no-merchant"),
        pytest.param(lambda f: {}, id="empty"),
    ],
)
def test_anything_that_does_not_verify_is_refused_and_writes_nothing(
    refund, notification, post, damage
):
    before = snapshot()
    reply = post(damage(notification("R1", "SUCCESS")))
    assert reply.status_code == 400 and reply.text == "FAIL"
    assert snapshot() == before


def test_bodies_that_are_not_a_form_are_refused(refund, notify_url, post, live_server):
    import requests

    before = snapshot()
    assert post(data=b"\xff\xfe not utf-8").status_code == 400
    assert post(data="a=1&a=2").status_code == 400  # a field twice
    assert post(data=b"x" * (64 * 1024 + 1)).status_code == 413
    assert requests.get(notify_url, timeout=10).status_code == 405
    assert snapshot() == before


def test_a_json_body_is_accepted_too(refund, notification, post):
    reply = post(
        data=json.dumps(notification("R1", "SUCCESS")), headers={"Content-Type": "application/json"}
    )
    assert reply.text == "SUCCESS"
    assert Refund.objects.get(pk=refund.pk).status == "SUCCESS"


def test_the_reply_never_echoes_the_input(refund, notification, post):
    form = notification("R1", "SUCCESS")
    form["sign"] = "<script>alert(1)</script>"
    reply = post(form)
    assert reply.text == "FAIL" and "script" not in reply.text


def test_a_refund_applied_elsewhere_is_tracked_and_flagged(sandbox, notification, post, received):
    reply = post(notification("ELSEWHERE", "SUCCESS", amount=990))
    assert reply.text == "SUCCESS"
    refund = Refund.objects.get(trans_no="ELSEWHERE")
    assert (refund.status, refund.amount) == ("SUCCESS", 990)
    assert refund.needs_attention and refund.attention_reason == "not_applied_here"
    assert ("refund_needs_attention", "ELSEWHERE") in received


def test_untracked_notifications_can_be_only_acknowledged(sandbox, configure, notification, post):
    configure(TRACK_UNKNOWN_NOTIFICATIONS=False)
    assert post(notification("ELSEWHERE", "SUCCESS")).text == "SUCCESS"
    assert not Refund.objects.exists()


def test_a_notification_of_one_merchant_never_changes_anothers_refund(
    refund, sandbox, notification, post
):
    Refund.objects.filter(pk=refund.pk).update(merchant_no="777000000007")
    assert post(notification("R1", "FAIL")).text == "SUCCESS"
    assert Refund.objects.get(pk=refund.pk).status == "PROCESSING"
    assert Refund.objects.get(
        trans_no="R1", merchant_no=sandbox.credentials.merchant_no
    ).status == ("FAIL")


def test_the_sandbox_notifies_an_application_and_it_lands_without_a_query(
    sandbox, configure, notify_url
):
    configure(NOTIFY_URL=notify_url)
    sandbox.configure_apply(balance_seconds=0.5)
    sandbox.configure_notify(schedule=[0.2, 0.5, 1])
    refund = Refund.objects.apply(orig_trans_no="PO-N", orig_amount=800, amount=800)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        refund.refresh_from_db()
        if refund.status == "SUCCESS":
            break
        time.sleep(0.1)
    assert refund.status == "SUCCESS" and refund.final_source == "notification"
    assert refund.query_count == 0 and refund.next_query_at is None
    assert sandbox.query_counts() == {}
    sources = set(refund.queries.values_list("source", flat=True))
    assert sources == {"application", "notification"}
    results = [entry["result"] for entry in sandbox.notification_log()[refund.trans_no]]
    assert results and set(results) == {"acknowledged"}


@pytest.mark.parametrize("trans_no", ["R\x00NUL", "R\n1", " R1"])
def test_a_signed_trans_no_no_refund_could_have_is_refused(sandbox, notification, post, trans_no):
    """PostgreSQL cannot even look up a NUL: still a FAIL, never a 5xx, and nothing written."""
    before = snapshot()
    reply = post(notification(trans_no, "SUCCESS"))
    assert (reply.status_code, reply.text) == (400, "FAIL")
    assert snapshot() == before
