"""The rules of hsq_refunds.rules, on hand-built refunds and answers (no database, no network)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from hsq_refunds.choices import STATUS_RANK, AttentionReason, Outcome, Status
from hsq_refunds.conf import get_settings
from hsq_refunds.gateway import (
    ConfigurationError,
    GatewayError,
    InvalidRequestError,
    RefundQueryResult,
    RefundStatus,
    ResponseError,
    SignatureError,
    TransportError,
)
from hsq_refunds.models import Refund
from hsq_refunds.rules import classify, decide, error_backoff, next_query_time, scheduled_interval

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
OPEN = ["UNKNOWN", "INIT", "PROCESSING"]
FINAL = ["SUCCESS", "FAIL"]


@pytest.fixture
def policy():
    """The default policy, with the documented defaults spelled out where tests rely on them."""
    return dataclasses.replace(
        get_settings(),
        FIRST_QUERY_DELAY=60.0,
        QUERY_INTERVALS=((600.0, 60.0), (3600.0, 300.0), (86400.0, 1800.0)),
        NOT_FOUND_GRACE=1800.0,
        MAX_AGE=10 * 86400.0,
        ERROR_BACKOFF=(60.0, 120.0, 300.0, 600.0),
    )


def make_refund(**fields) -> Refund:
    values = {
        "merchant_no": "888000000001",
        "trans_no": "R1",
        "status": "UNKNOWN",
        "amount": 1500,
        "applied_at": NOW - timedelta(minutes=2),
        "query_count": 3,
        "error_count": 0,
    }
    values.update(fields)
    return Refund(**values)


def make_result(
    status: str | None = "SUCCESS", code: str = "200007", **fields
) -> RefundQueryResult:
    values = {
        "merchant_no": "888000000001",
        "trans_no": "R1",
        "status": RefundStatus(status) if status else None,
        "resp_code": code,
        "resp_msg": "查询成功",
        "orig_trans_no": "P1",
        "trade_no": "T1",
        "amount": 1500,
        "finished_at": NOW - timedelta(seconds=30) if status in FINAL else None,
        "extend": "x",
        "raw_result": json.dumps({"respCode": code}),
    }
    values.update(fields)
    return RefundQueryResult(**values)


# --------------------------------------------------------------------------- status changes


FORWARD = [
    (old, new)
    for old in OPEN
    for new in ["INIT", "PROCESSING", "SUCCESS", "FAIL"]
    if STATUS_RANK[new] >= STATUS_RANK[old]
]


@pytest.mark.parametrize(("old", "new"), FORWARD)
def test_a_verified_status_is_applied_to_an_unfinished_refund(policy, old, new):
    code = "100201" if new == "PROCESSING" else "200007"
    decision = decide(make_refund(status=old), make_result(new, code), now=NOW, policy=policy)

    assert decision.outcome == Outcome.OK
    assert (decision.old_status, decision.new_status) == (old, new)
    assert decision.status_changed == (old != new)
    assert decision.changes.get("status", old) == new
    assert decision.error is None and decision.attention is None
    assert decision.changes["last_result"] == json.dumps({"respCode": code})
    if new in FINAL:
        assert decision.changes["next_query_at"] is None
        assert decision.changes["finished_at"] == NOW - timedelta(seconds=30)
    else:
        assert decision.changes["next_query_at"] == NOW + timedelta(seconds=60)
        assert "finished_at" not in decision.changes


@pytest.mark.parametrize(("old", "new"), [("PROCESSING", "INIT"), ("INIT", "INIT")])
def test_a_status_older_than_the_recorded_one_is_recorded_not_applied(policy, old, new):
    refund = make_refund(status=old, query_count=3)
    decision = decide(refund, make_result(new, "200007"), now=NOW, policy=policy)

    if old == new:  # a repeat moves nothing either way, and is an ordinary answer
        assert decision.outcome == Outcome.OK and not decision.status_changed
        return
    assert decision.outcome == Outcome.OUT_OF_ORDER
    assert decision.new_status == old and "status" not in decision.changes
    assert decision.attention is None and decision.error is None
    assert decision.log["status_seen"] == new and decision.log["outcome"] == "out_of_order"
    assert decision.changes["query_count"] == 4
    assert decision.changes["next_query_at"] == NOW + timedelta(seconds=60)


@pytest.mark.parametrize("old", FINAL)
@pytest.mark.parametrize("new", ["INIT", "PROCESSING", "SUCCESS", "FAIL"])
def test_final_states_stay_final(policy, old, new):
    refund = make_refund(status=old, finished_at=NOW - timedelta(days=1), trade_no="T0")
    decision = decide(refund, make_result(new), now=NOW, policy=policy)

    assert decision.new_status == old
    assert "status" not in decision.changes
    assert "finished_at" not in decision.changes
    assert "trade_no" not in decision.changes
    assert decision.changes["next_query_at"] is None
    if new == old:
        assert decision.attention is None
        assert "needs_attention" not in decision.changes
    else:
        assert decision.attention == AttentionReason.CONTRADICTION
        assert decision.changes["needs_attention"] is True
        assert new in decision.changes["attention_detail"]
        # What HSQ said is still on record.
        assert decision.log["status_seen"] == new


def test_a_flag_already_raised_is_not_signalled_again(policy):
    refund = make_refund(
        status="SUCCESS", needs_attention=True, attention_reason=AttentionReason.CONTRADICTION
    )
    decision = decide(refund, make_result("FAIL"), now=NOW, policy=policy)
    assert decision.attention is None
    assert decision.changes["attention_reason"] == AttentionReason.CONTRADICTION


def test_success_answer_resets_errors_and_counts_a_query(policy):
    refund = make_refund(status="PROCESSING", error_count=4, query_count=7)
    decision = decide(refund, make_result("SUCCESS"), now=NOW, policy=policy)
    assert decision.changes["error_count"] == 0
    assert decision.changes["last_error_type"] == ""
    assert decision.changes["query_count"] == 8
    assert decision.changes["last_queried_at"] == NOW
    assert decision.queried


def test_trade_and_original_numbers_are_filled_in(policy):
    decision = decide(
        make_refund(orig_trans_no=""), make_result("PROCESSING"), now=NOW, policy=policy
    )
    assert decision.changes["trade_no"] == "T1"
    assert decision.changes["orig_trans_no"] == "P1"
    assert decision.changes["extend"] == "x"

    kept = decide(
        make_refund(orig_trans_no="MINE"), make_result("PROCESSING"), now=NOW, policy=policy
    )
    assert "orig_trans_no" not in kept.changes


# --------------------------------------------------------------------------- amounts


def test_an_unknown_expected_amount_is_taken_from_hsq(policy):
    decision = decide(
        make_refund(amount=None), make_result("SUCCESS", amount=990), now=NOW, policy=policy
    )
    assert decision.changes["amount"] == 990
    assert decision.changes["reported_amount"] is None
    assert decision.attention is None


def test_a_disagreeing_amount_is_flagged_not_overwritten(policy):
    decision = decide(
        make_refund(amount=1500), make_result("SUCCESS", amount=1499), now=NOW, policy=policy
    )
    assert "amount" not in decision.changes
    assert decision.changes["reported_amount"] == 1499
    assert decision.attention == AttentionReason.AMOUNT_MISMATCH
    assert "¥14.99" in decision.changes["attention_detail"]  # in yuan, as people read it
    # The status is still what HSQ verified.
    assert decision.changes["status"] == Status.SUCCESS


def test_an_agreeing_amount_clears_reported_amount(policy):
    decision = decide(
        make_refund(amount=1500), make_result("PROCESSING", amount=1500), now=NOW, policy=policy
    )
    assert decision.changes["reported_amount"] is None
    assert decision.attention is None


def test_a_result_without_amount_changes_no_amount(policy):
    decision = decide(
        make_refund(amount=1500), make_result("PROCESSING", amount=None), now=NOW, policy=policy
    )
    assert "amount" not in decision.changes and "reported_amount" not in decision.changes


# --------------------------------------------------------------------------- response codes


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        ("200007", "SUCCESS", Outcome.OK),
        ("100201", "PROCESSING", Outcome.OK),
        ("999999", "FAIL", Outcome.OK),  # undocumented code, verified status: trusted
        ("200004", None, Outcome.NOT_FOUND),
        ("200009", None, Outcome.NOT_FOUND),
        ("200004", "SUCCESS", Outcome.NOT_FOUND),  # the code decides over a stray status
        ("200008", None, Outcome.QUERY_FAILED),
        ("200021", None, Outcome.EXPIRED),
        ("200007", None, Outcome.NO_STATUS),
        ("", None, Outcome.NO_STATUS),
    ],
)
def test_classify_every_response_code(code, status, outcome):
    assert classify(make_result(status, code)) == outcome


@pytest.mark.parametrize("code", ["200004", "200009"])
def test_not_found_within_the_grace_period_asks_again(policy, code):
    refund = make_refund(applied_at=NOW - timedelta(minutes=29))
    decision = decide(refund, make_result(None, code), now=NOW, policy=policy)
    assert decision.outcome == Outcome.NOT_FOUND
    assert decision.attention is None
    assert decision.error is None
    assert decision.new_status == "UNKNOWN"
    assert decision.changes["next_query_at"] == NOW + timedelta(seconds=300)


@pytest.mark.parametrize("code", ["200004", "200009"])
def test_not_found_after_the_grace_period_is_flagged_and_still_asked(policy, code):
    refund = make_refund(applied_at=NOW - timedelta(minutes=31))
    decision = decide(refund, make_result(None, code), now=NOW, policy=policy)
    assert decision.attention == AttentionReason.NOT_FOUND
    assert decision.changes["next_query_at"] == NOW + timedelta(seconds=300)
    assert decision.new_status == "UNKNOWN"


def test_a_not_found_flag_clears_itself_when_the_refund_appears(policy):
    refund = make_refund(
        applied_at=NOW - timedelta(hours=2),
        needs_attention=True,
        attention_reason=AttentionReason.NOT_FOUND,
        attention_detail="...",
    )
    decision = decide(refund, make_result("PROCESSING", "100201"), now=NOW, policy=policy)
    assert decision.changes["needs_attention"] is False
    assert decision.changes["attention_reason"] == ""


def test_other_flags_stay_when_the_refund_moves_on(policy):
    refund = make_refund(needs_attention=True, attention_reason=AttentionReason.AMOUNT_MISMATCH)
    decision = decide(refund, make_result("SUCCESS"), now=NOW, policy=policy)
    assert "needs_attention" not in decision.changes


@pytest.mark.parametrize("old", FINAL)
def test_not_found_for_a_final_refund_is_a_contradiction(policy, old):
    decision = decide(make_refund(status=old), make_result(None, "200004"), now=NOW, policy=policy)
    assert decision.attention == AttentionReason.CONTRADICTION
    assert decision.new_status == old
    assert decision.changes["next_query_at"] is None


def test_200021_stops_asking_and_flags(policy):
    decision = decide(
        make_refund(status="PROCESSING"), make_result(None, "200021"), now=NOW, policy=policy
    )
    assert decision.outcome == Outcome.EXPIRED
    assert decision.changes["next_query_at"] is None
    assert decision.attention == AttentionReason.EXPIRED
    assert decision.new_status == "PROCESSING"
    assert decision.error is None


def test_200021_for_a_final_refund_is_not_flagged(policy):
    decision = decide(
        make_refund(status="SUCCESS"), make_result(None, "200021"), now=NOW, policy=policy
    )
    assert decision.attention is None
    assert decision.changes["next_query_at"] is None


@pytest.mark.parametrize(
    ("code", "outcome"), [("200008", Outcome.QUERY_FAILED), ("200007", Outcome.NO_STATUS)]
)
def test_a_verified_answer_without_a_usable_status_is_an_error(policy, code, outcome):
    refund = make_refund(status="PROCESSING", error_count=0)
    decision = decide(refund, make_result(None, code, resp_msg="查询失败"), now=NOW, policy=policy)
    assert decision.outcome == outcome
    assert decision.new_status == "PROCESSING" and "status" not in decision.changes
    assert decision.error.type == outcome
    assert decision.error.code == code
    assert decision.changes["error_count"] == 1
    assert decision.changes["next_query_at"] == NOW + timedelta(seconds=60)
    assert decision.queried


# --------------------------------------------------------------------------- errors


ERRORS = [
    (TransportError("timed out", status_code=None), Outcome.TRANSPORT_ERROR, "transport", ""),
    (SignatureError("does not verify"), Outcome.SIGNATURE_ERROR, "signature", ""),
    (ResponseError("about another refund"), Outcome.RESPONSE_ERROR, "response", ""),
    (
        GatewayError("SYSTEM_ERROR", "busy", signed=False),
        Outcome.GATEWAY_ERROR,
        "gateway",
        "SYSTEM_ERROR",
    ),
    (
        GatewayError("SIGN_ERROR", "验签失败", signed=True),
        Outcome.GATEWAY_ERROR,
        "gateway",
        "SIGN_ERROR",
    ),
    (RuntimeError("bug"), Outcome.INTERNAL_ERROR, "internal", ""),
]


@pytest.mark.parametrize(("exc", "outcome", "kind", "code"), ERRORS)
@pytest.mark.parametrize("old", [*OPEN, *FINAL])
def test_errors_never_change_the_status(policy, exc, outcome, kind, code, old):
    refund = make_refund(status=old, error_count=2, query_count=5)
    decision = decide(refund, exc, now=NOW, policy=policy)
    assert decision.outcome == outcome
    assert decision.new_status == old and not decision.status_changed
    assert (
        not {"status", "amount", "finished_at", "last_result", "resp_code"}
        & decision.changes.keys()
    )
    assert decision.error.type == kind and decision.error.code == code
    assert decision.changes["query_count"] == 6
    assert decision.log["outcome"] == outcome and decision.log["status_seen"] == ""
    if old in FINAL:
        # A final refund keeps its recorded result: the failed query is in the audit row only.
        assert "next_query_at" not in decision.changes
        assert not {"error_count", "last_error_type"} & decision.changes.keys()
    else:
        assert decision.changes["error_count"] == 3
        assert decision.changes["last_error_type"] == kind
        assert decision.changes["next_query_at"] > NOW


@pytest.mark.parametrize("exc", [ConfigurationError("no key"), InvalidRequestError("bad transNo")])
def test_errors_before_sending_are_not_counted_as_queries(policy, exc):
    refund = make_refund(status="PROCESSING", query_count=5)
    decision = decide(refund, exc, now=NOW, policy=policy)
    assert not decision.queried
    assert "query_count" not in decision.changes
    assert "last_queried_at" not in decision.changes
    assert decision.changes["error_count"] == 1
    assert decision.changes["next_query_at"] == NOW + timedelta(seconds=60)


def test_an_unsigned_gateway_error_backs_off_like_any_error_and_a_signed_one_longer(policy):
    refund = make_refund(status="PROCESSING", error_count=0)
    unsigned = decide(refund, GatewayError("E", "m", signed=False), now=NOW, policy=policy)
    signed = decide(refund, GatewayError("E", "m", signed=True), now=NOW, policy=policy)
    assert unsigned.changes["next_query_at"] == NOW + timedelta(seconds=60)
    assert signed.changes["next_query_at"] == NOW + timedelta(seconds=300)


def test_error_messages_are_clipped(policy):
    decision = decide(make_refund(), TransportError("x" * 5000), now=NOW, policy=policy)
    assert len(decision.changes["last_error_message"]) == 2000


# --------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("errors", "signed", "seconds"),
    [
        (0, False, 60),
        (1, False, 60),
        (2, False, 120),
        (3, False, 300),
        (4, False, 600),
        (9, False, 600),
        (1, True, 300),
        (2, True, 600),
        (5, True, 600),
    ],
)
def test_error_backoff_steps(policy, errors, signed, seconds):
    assert error_backoff(errors, policy, signed=signed) == timedelta(seconds=seconds)


def test_backoff_grows_with_consecutive_errors(policy):
    refund = make_refund(status="PROCESSING", error_count=2)  # this is the third error
    decision = decide(refund, TransportError("down"), now=NOW, policy=policy)
    assert decision.changes["next_query_at"] == NOW + timedelta(seconds=300)


def test_backoff_never_asks_sooner_than_the_schedule(policy):
    refund = make_refund(status="PROCESSING", applied_at=NOW - timedelta(days=2))
    decision = decide(refund, TransportError("down"), now=NOW, policy=policy)
    # Two days old: the schedule says every 30 minutes, longer than the first backoff step.
    assert decision.changes["next_query_at"] == NOW + timedelta(seconds=1800)


@pytest.mark.parametrize(
    ("age", "interval"),
    [
        (timedelta(0), 60),
        (timedelta(minutes=9, seconds=59), 60),
        (timedelta(minutes=10), 300),
        (timedelta(minutes=59), 300),
        (timedelta(hours=1), 1800),
        (timedelta(days=5), 1800),
    ],
)
def test_the_interval_widens_with_age(policy, age, interval):
    assert scheduled_interval(age, policy) == timedelta(seconds=interval)


def test_default_intervals_follow_the_gateway_guidance():
    defaults = get_settings()
    assert defaults.FIRST_QUERY_DELAY == 60
    # Every minute while balance refunds land (5 minutes), far apart in the days of bank cards.
    assert scheduled_interval(timedelta(minutes=4), defaults) == timedelta(minutes=1)
    assert scheduled_interval(timedelta(days=2), defaults) >= timedelta(minutes=30)
    assert defaults.MAX_AGE >= 7 * 86400


def test_the_last_query_falls_on_the_deadline(policy):
    applied = NOW - timedelta(days=10) + timedelta(seconds=10)
    assert next_query_time(applied, NOW, policy) == applied + timedelta(days=10)
    assert next_query_time(applied, applied + timedelta(days=10), policy) is None


def test_past_the_maximum_age_an_unfinished_refund_is_given_up_and_flagged(policy):
    refund = make_refund(status="PROCESSING", applied_at=NOW - timedelta(days=10, seconds=1))
    decision = decide(refund, make_result("PROCESSING", "100201"), now=NOW, policy=policy)
    assert decision.changes["next_query_at"] is None
    assert decision.attention == AttentionReason.GAVE_UP


def test_giving_up_does_not_replace_another_flag(policy):
    refund = make_refund(
        status="PROCESSING",
        applied_at=NOW - timedelta(days=11),
        needs_attention=True,
        attention_reason=AttentionReason.NOT_FOUND,
    )
    decision = decide(refund, TransportError("down"), now=NOW, policy=policy)
    assert decision.changes["next_query_at"] is None
    assert decision.attention is None
    assert "attention_reason" not in decision.changes


def test_giving_up_on_an_amount_mismatch_keeps_the_mismatch(policy):
    refund = make_refund(status="PROCESSING", amount=1, applied_at=NOW - timedelta(days=11))
    decision = decide(refund, make_result("PROCESSING", "100201", amount=2), now=NOW, policy=policy)
    assert decision.attention == AttentionReason.AMOUNT_MISMATCH
    assert decision.changes["next_query_at"] is None
