"""Applying for refunds from code (``Refund.objects.apply``) against the sandbox over real HTTP:
validated first, never beyond what was paid, written first, sent once."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsq_refunds import signals
from hsq_refunds.apply import balance_of, send_again
from hsq_refunds.exceptions import RefundRefused
from hsq_refunds.models import PaidOrder, Refund
from hsq_refunds.sync import sync_refunds

pytestmark = pytest.mark.django_db


def apply(**kwargs) -> Refund:
    values = {
        "orig_trans_no": "PO1",
        "orig_amount": 5000,
        "amount": 1234,
        "reason": "七天无理由退货",
    }
    values.update(kwargs)
    return Refund.objects.apply(**values)


def sent(sandbox) -> dict[str, int]:
    return {no: counts["received"] for no, counts in sandbox.application_counts().items()}


@pytest.fixture
def applied(request):
    log: list[Refund] = []

    def receiver(sender, refund, **kwargs):
        log.append(refund)

    signals.refund_applied.connect(receiver, weak=False)
    yield log
    signals.refund_applied.disconnect(receiver)


# --------------------------------------------------------------------------- outcomes


def test_an_application_is_written_sent_once_and_recorded(
    sandbox, applied, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        refund = apply(trans_no="RF-1", extend="order-42")

    refund.refresh_from_db()
    assert (refund.application, refund.apply_attempts) == ("accepted", 1)
    assert refund.status == "PROCESSING" and refund.trade_no
    assert (refund.amount, refund.orig_amount, refund.orig_trans_no) == (1234, 5000, "PO1")
    assert (refund.reason, refund.extend) == ("七天无理由退货", "order-42")
    assert refund.query_count == 0 and refund.next_query_at > timezone.now()
    audit = refund.queries.get()
    assert (audit.source, audit.outcome, audit.status_seen) == ("application", "ok", "PROCESSING")
    assert audit.sign and json.loads(audit.result)["transNo"] == "RF-1"
    assert sent(sandbox) == {"RF-1": 1}
    assert [r.trans_no for r in applied] == ["RF-1"]
    assert PaidOrder.objects.get().amount == 5000


def test_a_generated_trans_no_has_the_prefix(sandbox, configure):
    configure(TRANS_NO_PREFIX="SHOP")
    refund = apply()
    assert refund.trans_no.startswith("SHOP") and len(refund.trans_no) <= 64
    assert sent(sandbox) == {refund.trans_no: 1}


def test_an_answer_that_is_final_already_is_kept_as_the_proof(sandbox):
    sandbox.configure_apply(balance_seconds=0)
    refund = apply(trans_no="RF-BAL")
    assert refund.status == "SUCCESS" and refund.next_query_at is None
    assert refund.final_sign and refund.final_source == "application"


def test_the_poller_takes_over_and_reaches_the_final_status(sandbox):
    refund = apply(trans_no="RF-CARD", amount=1234)
    assert refund.status == "PROCESSING"
    sandbox.add_refunds(
        [{"transNo": "RF-CARD", "amount": 1234, "timeline": [{"status": "SUCCESS"}]}]
    )
    Refund.objects.filter(pk=refund.pk).update(next_query_at=timezone.now())
    sync_refunds()
    refund.refresh_from_db()
    assert refund.status == "SUCCESS" and refund.final_sign and refund.final_source == "query"
    assert sent(sandbox) == {"RF-CARD": 1}


def test_a_signed_refusal_is_a_failed_application(sandbox):
    sandbox.add_orders([{"origTransNo": "PO1", "amount": 1000}])  # HSQ knows less was paid
    refund = apply(orig_amount=1000, amount=1000)
    apply_again = apply(trans_no="RF-OVER", orig_amount=1000, amount=1000, orig_trans_no="PO2")
    assert apply_again.application == "accepted"
    sandbox.add_orders([{"origTransNo": "PO3", "amount": 500}])
    refused = apply(trans_no="RF-NO", orig_trans_no="PO3", orig_amount=900, amount=900)

    refused.refresh_from_db()
    assert (refused.status, refused.application) == ("FAIL", "refused")
    assert refused.resp_code and refused.resp_msg and refused.next_query_at is None
    assert refund.application == "accepted"
    # A failed refund takes nothing of the order: another may be applied for.
    assert balance_of(refused.merchant_no, "PO3").taken == 0


@pytest.mark.parametrize(
    "fault", ["accept_then_drop", "unsigned_failure", "bad_signature", "http_error"]
)
def test_an_unknown_outcome_is_queried_never_sent_again(sandbox, configure, fault):
    configure(READ_TIMEOUT=2)
    sandbox.set_fault(fault, trans_no="RF-LOST", method="POLYMERIZE_REFUND")
    refund = apply(trans_no="RF-LOST")
    refund.refresh_from_db()
    assert (refund.application, refund.status) == ("unknown", "UNKNOWN")
    assert refund.last_error_type and refund.next_query_at > timezone.now()

    Refund.objects.filter(pk=refund.pk).update(next_query_at=timezone.now())
    sync_refunds()
    refund.refresh_from_db()
    if fault in ("accept_then_drop", "bad_signature"):  # it reached HSQ: the query finds it
        assert refund.status == "PROCESSING" and refund.application == "accepted"
    else:  # it did not: not found, still asked about, flagged after the grace period
        assert refund.status == "UNKNOWN"
    assert sent(sandbox)["RF-LOST"] == 1


def test_an_application_hsq_never_got_is_flagged_and_can_be_sent_again(sandbox, configure):
    configure(NOT_FOUND_GRACE=60)
    sandbox.set_fault("drop", trans_no="RF-GONE", method="POLYMERIZE_REFUND", times=1)
    refund = apply(trans_no="RF-GONE")
    Refund.objects.filter(pk=refund.pk).update(
        applied_at=timezone.now() - timedelta(minutes=5), next_query_at=timezone.now()
    )
    sync_refunds()
    refund.refresh_from_db()
    assert refund.needs_attention and refund.attention_reason == "not_received"

    again = send_again(refund)
    assert (again.application, again.apply_attempts, again.status) == ("accepted", 2, "PROCESSING")
    assert not again.needs_attention
    with pytest.raises(ValueError, match="not waiting"):
        send_again(again)


# --------------------------------------------------------------------------- refused locally


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": 12.5}, "amount"),
        ({"amount": True}, "amount"),
        ({"orig_amount": -1}, "orig_amount"),
        ({"amount": 6000}, "must not exceed orig_amount"),
        ({"orig_trans_no": ""}, "orig_trans_no"),
        ({"trans_no": "RF\n1"}, "trans_no"),
        ({"reason": "x" * 129}, "reason"),
        ({"reason": "退款\x00"}, "reason"),
        ({"extend": "e" * 257}, "extend"),
        ({"merchant_no": "999"}, "'999' is not configured"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written_or_sent(sandbox, kwargs, named):
    with pytest.raises(ValueError, match=named):
        apply(**kwargs)
    assert not Refund.objects.exists() and not PaidOrder.objects.exists()
    assert sent(sandbox) == {}


def test_never_more_than_was_paid(sandbox):
    apply(amount=3000, trans_no="RF-A")
    with pytest.raises(RefundRefused) as refused:
        apply(amount=2500, trans_no="RF-B")
    message = str(refused.value)
    assert "PO1" in message and "¥50.00" in message and "¥30.00" in message and "¥25.00" in message
    assert (refused.value.paid, refused.value.taken, refused.value.asked) == (5000, 3000, 2500)
    assert not Refund.objects.filter(trans_no="RF-B").exists()
    assert sent(sandbox) == {"RF-A": 1}
    apply(amount=2000, trans_no="RF-C")  # exactly what is left
    assert balance_of(Refund.objects.get(trans_no="RF-C").merchant_no, "PO1").left == 0


def test_the_guard_counts_what_hsq_reported(sandbox):
    """HSQ refunded more than was asked (flagged as a mismatch): the order's total counts what
    HSQ reported, so what is left is what HSQ left."""
    refund = apply(amount=1000, trans_no="RF-A")
    Refund.objects.filter(pk=refund.pk).update(status="SUCCESS", reported_amount=5000)

    with pytest.raises(RefundRefused) as refused:
        apply(amount=1, trans_no="RF-B")

    assert (refused.value.taken, balance_of(refund.merchant_no, "PO1").left) == (5000, 0)
    assert sent(sandbox) == {"RF-A": 1}


def test_a_refund_of_unknown_amount_blocks_a_new_one_and_says_how_to_resolve_it(
    sandbox, merchant_no
):
    apply(amount=1000, trans_no="RF-A")
    Refund.objects.track("RF-ELSEWHERE", orig_trans_no="PO1")  # amount not known yet

    with pytest.raises(RefundRefused) as refused:
        apply(amount=1000, trans_no="RF-B")

    message = str(refused.value)
    assert "RF-ELSEWHERE" in message and "Refresh it" in message and "enter its amount" in message
    assert balance_of(merchant_no, "PO1").unknown == ("RF-ELSEWHERE",)
    assert balance_of(merchant_no, "PO1").left is None
    assert sent(sandbox) == {"RF-A": 1}
    Refund.objects.filter(trans_no="RF-ELSEWHERE").update(amount=500)  # entered, or reported
    apply(amount=1000, trans_no="RF-B")
    assert sent(sandbox) == {"RF-A": 1, "RF-B": 1}


def test_a_paid_amount_that_disagrees_with_the_first_is_refused(sandbox):
    apply(amount=100, trans_no="RF-A")
    with pytest.raises(RefundRefused, match=r"¥50\.00"):
        apply(amount=100, trans_no="RF-B", orig_amount=9000)
    assert sent(sandbox) == {"RF-A": 1}


def test_a_trans_no_is_applied_for_once(sandbox):
    apply(amount=100, trans_no="RF-A")
    with pytest.raises(ValueError, match="already exists"):
        apply(amount=100, trans_no="RF-A")
    assert sent(sandbox) == {"RF-A": 1}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    paid=st.integers(1, 10_000),
    asks=st.lists(st.tuples(st.integers(1, 6_000), st.booleans()), min_size=1, max_size=8),
)
def test_the_sum_accepted_never_exceeds_what_was_paid(sandbox, merchant_no, paid, asks):
    """Applications of random amounts against one order, some failing at HSQ (which frees
    their amount): what is not FAIL never adds up to more than was paid."""
    order = f"PO-{paid}-{len(asks)}-{sum(a for a, _ in asks)}"
    Refund.objects.filter(orig_trans_no=order).delete_with_history()
    PaidOrder.objects.filter(orig_trans_no=order).delete()
    for amount, fails in asks:
        try:
            refund = apply(orig_trans_no=order, orig_amount=paid, amount=min(amount, paid))
        except RefundRefused:
            continue
        if fails:
            Refund.objects.filter(pk=refund.pk).update(status="FAIL")
        live = Refund.objects.filter(orig_trans_no=order).exclude(status="FAIL")
        assert sum(live.values_list("amount", flat=True)) <= paid


def test_two_people_sending_an_application_again_at_once_send_it_once(
    sandbox, configure, monkeypatch
):
    from hsq_refunds import apply as service

    configure(NOT_FOUND_GRACE=60)
    sandbox.set_fault("drop", trans_no="RF-TWICE", method="POLYMERIZE_REFUND", times=1)
    refund = apply(trans_no="RF-TWICE")
    Refund.objects.filter(pk=refund.pk).update(
        attention_reason="not_received", needs_attention=True
    )
    outcomes: list[object] = []

    def second_click(current: Refund) -> None:
        monkeypatch.setattr(service, "_before_count", lambda _refund: None)
        outcomes.append(send_again(current))  # confirmed the same count, and sends first

    monkeypatch.setattr(service, "_before_count", second_click)
    with pytest.raises(ValueError, match="just sent by someone else"):
        send_again(refund)
    assert len(outcomes) == 1
    assert sent(sandbox) == {"RF-TWICE": 2}  # the first application and one resend
    assert Refund.objects.get(pk=refund.pk).apply_attempts == 2


def test_with_notifications_the_first_query_waits_whatever_the_answer_says(sandbox, configure):
    configure(NOTIFY_URL="http://127.0.0.1:9/hsq/refund-notify/", NOTIFY_FIRST_QUERY_DELAY=300)
    before = timezone.now()
    refund = apply(trans_no="RF-WAIT")
    assert refund.status == "PROCESSING"  # the answer would ask again in a minute
    assert refund.next_query_at >= before + timedelta(seconds=300)
