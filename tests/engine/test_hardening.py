"""The engine under hostile answers and a changing database: no answer stops the sync, every
refund makes progress, nothing is announced that HSQ did not say. Through the public entry
points (``sync_refunds``, ``manage.py sync_refunds``), against the sandbox over real HTTP."""

from __future__ import annotations

import io
import logging
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from hsq_refunds import pipeline
from hsq_refunds.models import Refund, RefundQuery
from hsq_refunds.sync import sync_refunds

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> int:
    try:
        call_command("sync_refunds", *args, stdout=io.StringIO(), stderr=io.StringIO())
    except CommandError as exc:
        return exc.returncode
    return 0


def make_due(**filters) -> None:
    Refund.objects.filter(**filters).update(next_query_at=timezone.now() - timedelta(seconds=1))


# --------------------------------------------------------------------------- progress for all


def test_a_removed_merchant_makes_way_for_the_others_under_a_limit(
    refunds, sandbox, configure, received, django_capture_on_commit_callbacks
):
    configure(ATTENTION_AFTER_ERRORS=2)
    earlier = timezone.now() - timedelta(minutes=5)
    refunds([{"transNo": f"GONE{i:02d}", "merchant_no": "777"} for i in range(20)])
    Refund.objects.filter(merchant_no="777").update(next_query_at=earlier)  # head of the queue
    refunds([{"transNo": f"OK{i:02d}"} for i in range(20)])

    statuses = [run_command("--limit", "20") for _run in range(3)]

    assert Refund.objects.filter(trans_no__startswith="OK", status="SUCCESS").count() == 20
    assert statuses[0] == 2  # the configuration is named by the exit status
    gone = Refund.objects.filter(merchant_no="777")
    assert set(gone.values_list("error_count", flat=True)) == {1}
    assert all(refund.next_query_at > timezone.now() for refund in gone)
    assert (
        RefundQuery.objects.filter(refund__merchant_no="777", outcome="config_error").count() == 20
    )

    # Still unconfigured at the next attempt: a person is asked, once per refund.
    make_due(merchant_no="777")
    with django_capture_on_commit_callbacks(execute=True):
        run_command()
    flagged = set(gone.values_list("needs_attention", "attention_reason"))
    assert flagged == {(True, "not_configured")}
    assert sum(1 for name, _t, k in received if name == "refund_needs_attention") == 20
    assert "'777'" in Refund.objects.filter(merchant_no="777").first().attention_detail
    assert sandbox.query_counts().keys() == {f"OK{i:02d}" for i in range(20)}


def test_an_exception_in_the_rules_backs_off_and_is_flagged(
    refunds, sandbox, configure, monkeypatch
):
    configure(ATTENTION_AFTER_ERRORS=2)
    refunds([{"transNo": "BOOM"}, {"transNo": "R1"}])
    real_decide = pipeline.decide

    def decide(refund, answer, **kwargs):
        if refund.trans_no == "BOOM":
            raise ZeroDivisionError("a bug")
        return real_decide(refund, answer, **kwargs)

    monkeypatch.setattr(pipeline, "decide", decide)
    sync_refunds()
    boom = Refund.objects.get(trans_no="BOOM")
    assert (boom.error_count, boom.last_error_type) == (1, "internal")
    assert "ZeroDivisionError: a bug" in boom.last_error_message
    assert boom.next_query_at > timezone.now() and not boom.needs_attention
    assert boom.queries.get().outcome == "internal_error"

    make_due(trans_no="BOOM")
    sync_refunds()
    boom.refresh_from_db()
    assert boom.needs_attention and boom.attention_reason == "repeated_errors"
    assert boom.status == "UNKNOWN" and boom.queries.count() == 2


def test_an_answer_the_database_refuses_is_recorded_as_the_refunds_failure(refunds, sandbox):
    """A write that fails (a DataError on PostgreSQL) leaves the refund with its error and its
    backoff, written without the answer's content; the others are synced."""
    refunds([{"transNo": "R1"}, {"transNo": "POISON"}, {"transNo": "R3"}])
    sandbox.add_refunds(
        [
            {
                "transNo": "POISON",
                "amount": 1500,
                "extend": "poison",
                "timeline": [{"status": "SUCCESS"}],
            }
        ]
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION hsq_poison() RETURNS trigger AS $$ BEGIN "
                "IF NEW.extend = 'poison' THEN "
                "RAISE EXCEPTION 'refused' USING ERRCODE = '22000'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER hsq_poison BEFORE UPDATE ON hsq_refunds_refund "
                "FOR EACH ROW EXECUTE FUNCTION hsq_poison()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER hsq_poison BEFORE UPDATE ON hsq_refunds_refund "
                "WHEN NEW.extend = 'poison' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
    report = sync_refunds()

    statuses = dict(Refund.objects.values_list("trans_no", "status"))
    assert statuses == {"R1": "SUCCESS", "POISON": "UNKNOWN", "R3": "SUCCESS"}
    poison = Refund.objects.get(trans_no="POISON")
    assert (poison.error_count, poison.last_error_type) == (1, "internal")
    assert "refused" in poison.last_error_message and poison.extend == ""
    assert poison.next_query_at > timezone.now() and poison.claim_token == ""
    assert poison.queries.get().outcome == "internal_error"
    assert [(e.trans_no, e.error_type) for e in report.errors] == [("POISON", "internal")]


# --------------------------------------------------------------------------- what is said


def test_a_success_for_another_amount_is_not_announced_as_a_success(
    refunds, sandbox, received, django_capture_on_commit_callbacks
):
    refunds([{"transNo": "R1", "amount": 1500, "hsq_amount": 1}])
    with django_capture_on_commit_callbacks(execute=True):
        sync_refunds()
    refund = Refund.objects.get()
    assert refund.status == "SUCCESS" and refund.reported_amount == 1
    assert [(name, kwargs) for name, _t, kwargs in received] == [
        ("refund_status_changed", {"old_status": "UNKNOWN", "new_status": "SUCCESS"}),
        ("refund_needs_attention", {"reason": "amount_mismatch"}),
    ]


def test_a_status_that_goes_backwards_is_recorded_not_applied(
    refunds, sandbox, received, django_capture_on_commit_callbacks
):
    refunds([{"transNo": "R1", "status": "PROCESSING", "timeline": [{"status": "INIT"}]}])
    with django_capture_on_commit_callbacks(execute=True):
        report = sync_refunds()
    refund = Refund.objects.get()
    assert refund.status == "PROCESSING" and refund.error_count == 0
    audit = refund.queries.get()
    assert (audit.outcome, audit.status_seen) == ("out_of_order", "INIT")
    assert received == [] and report.ok and not report.status_changes
    assert refund.next_query_at > timezone.now()


def test_a_final_refund_keeps_its_result_whatever_comes_later(refunds, sandbox):
    [refund] = refunds([{"transNo": "R1", "timeline": [{"status": "SUCCESS"}]}])
    sync_refunds()
    refund.refresh_from_db()
    kept = (refund.last_result, refund.resp_code, refund.resp_msg, refund.final_result)
    assert refund.status == "SUCCESS" and refund.final_result == refund.last_result

    for fault in ("signed_failure", "bad_signature"):
        sandbox.set_fault(fault, trans_no="R1", times=1)
        sync_refunds([refund])
    sandbox.add_refunds([{"transNo": "R1", "amount": 1500, "timeline": [{"respCode": "200021"}]}])
    sync_refunds([refund])
    refund.refresh_from_db()

    assert (refund.last_result, refund.resp_code, refund.resp_msg, refund.final_result) == kept
    assert refund.error_count == 0 and refund.last_error_type == ""
    assert list(refund.queries.order_by("id").values_list("outcome", flat=True)) == [
        "ok",
        "gateway_error",
        "signature_error",
        "expired",
    ]


def test_gateway_text_cannot_forge_log_lines_and_signature_failures_are_errors(
    refunds, sandbox, caplog
):
    refunds([{"transNo": "R1"}, {"transNo": "R2"}])
    sandbox.set_fault(
        "signed_failure", trans_no="R1", error_code="BUSY", error_msg="busy\nERROR forged line"
    )
    sandbox.set_fault("bad_signature", trans_no="R2")
    with caplog.at_level(logging.INFO, logger="hsq_refunds.sync"):
        sync_refunds()
    lines = {
        record.getMessage().split()[0]: record
        for record in caplog.records
        if "transNo=" in record.getMessage()
    }
    assert "\n" not in lines["transNo=R1"].getMessage()
    assert "busy\\nERROR forged line" in lines["transNo=R1"].getMessage()
    assert lines["transNo=R1"].levelno == logging.WARNING
    assert lines["transNo=R2"].levelno == logging.ERROR


# --------------------------------------------------------------------------- transactions


def test_a_sync_inside_a_transaction_is_refused_before_it_claims_anything(refunds, sandbox):
    refunds([{"transNo": "R1"}])
    with pytest.raises(transaction.TransactionManagementError, match="inside a transaction"):
        with transaction.atomic():
            sync_refunds()
    refund = Refund.objects.get()
    assert (refund.claim_token, refund.query_count) == ("", 0)
    assert sandbox.query_counts() == {}
    # A dry run writes nothing, so it may run anywhere.
    with transaction.atomic():
        assert sync_refunds(dry_run=True).queried == 1


# --------------------------------------------------------------------------- deletion


def test_refunds_with_audit_rows_are_deleted_only_deliberately(refunds, sandbox):
    [refund] = refunds([{"transNo": "R1"}])
    sync_refunds()
    with pytest.raises(ProtectedError):
        Refund.objects.filter(pk=refund.pk).delete()
    assert Refund.objects.filter(pk=refund.pk).exists()

    assert Refund.objects.filter(pk=refund.pk).delete_with_history() == 1
    assert not Refund.objects.exists() and not RefundQuery.objects.exists()


# --------------------------------------------------------------------------- poisoned answers


@pytest.mark.parametrize(
    ("fault", "params", "synced"),
    [
        # Half of a cut emoji, as some JSON encoders write it: stored with U+FFFD in its place.
        ("lone_surrogate", {}, True),
        # A verified answer whose amount no column can hold: a malformed answer, asked again.
        ("huge_amount", {"amount": 2**64 + 1}, False),
    ],
)
def test_one_poisoned_answer_never_stops_the_others(refunds, sandbox, fault, params, synced):
    refunds([{"transNo": "POISON"}] + [{"transNo": f"R{i:02d}"} for i in range(40)])
    Refund.objects.filter(trans_no="POISON").update(
        next_query_at=timezone.now() - timedelta(hours=1)  # at the head of the queue
    )
    sandbox.set_fault(fault, trans_no="POISON", **params)

    reports = []
    for _run in range(3):
        reports.append(sync_refunds())
        make_due(trans_no="POISON")

    assert Refund.objects.filter(trans_no__startswith="R", status="SUCCESS").count() == 40
    poison = Refund.objects.get(trans_no="POISON")
    if synced:
        assert poison.status == "SUCCESS" and "\ufffd" in poison.extend
        assert "\\ud83d" in poison.final_result  # the proof is kept exactly as signed
    else:
        assert poison.status == "UNKNOWN" and poison.last_error_type == "response"
        assert poison.error_count == 3 and poison.queries.count() == 3
    assert reports[0].queried == 41
