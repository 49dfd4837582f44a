"""The sync engine (hsq_refunds.sync) against the sandbox gateway over real HTTP."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hsq_refunds import pipeline
from hsq_refunds.gateway import ConfigurationError
from hsq_refunds.models import Refund, RefundQuery
from hsq_refunds.sync import RefundFailure, SyncReport, sync_refund, sync_refunds

pytestmark = pytest.mark.django_db

MIX = [
    {"transNo": "S1", "timeline": [{"status": "SUCCESS"}]},
    {"transNo": "F1", "timeline": [{"status": "FAIL"}]},
    {"transNo": "P1", "timeline": [{"status": "PROCESSING"}]},
    {"transNo": "I1", "timeline": [{"status": "INIT"}]},
    {"transNo": "N1", "known": False},  # not (yet) visible, within the grace period
    {"transNo": "N2", "known": False, "applied_ago": timedelta(hours=1)},  # past the grace period
    {"transNo": "X1", "timeline": [{"respCode": "200021"}]},
    {"transNo": "Q1", "timeline": [{"respCode": "200008"}]},
    {"transNo": "A1", "amount": 1500, "hsq_amount": 1400},
    {"transNo": "U1", "amount": None, "hsq_amount": 990},
    {"transNo": "L1", "due": False},  # not due: left alone
]


def by_trans_no() -> dict[str, Refund]:
    return {refund.trans_no: refund for refund in Refund.objects.all()}


def snapshot() -> list[tuple]:
    return list(Refund.objects.order_by("id").values_list())


def test_a_mix_of_refunds_reaches_every_state(
    refunds, sandbox, received, django_capture_on_commit_callbacks
):
    refunds(MIX)
    with django_capture_on_commit_callbacks(execute=True):
        report = sync_refunds()

    rows = by_trans_no()
    assert {t: r.status for t, r in rows.items()} == {
        "S1": "SUCCESS",
        "F1": "FAIL",
        "P1": "PROCESSING",
        "I1": "INIT",
        "N1": "UNKNOWN",
        "N2": "UNKNOWN",
        "X1": "UNKNOWN",
        "Q1": "UNKNOWN",
        "A1": "SUCCESS",
        "U1": "SUCCESS",
        "L1": "UNKNOWN",
    }
    # Finished refunds carry HSQ's data and are not asked about again.
    assert rows["S1"].finished_at is not None and rows["S1"].trade_no
    assert rows["S1"].next_query_at is None and rows["F1"].next_query_at is None
    assert rows["S1"].resp_code == "200007" and json.loads(rows["S1"].last_result)["orderStatus"]
    # Unfinished ones are asked again soon.
    for trans_no in ("P1", "I1", "N1", "N2", "Q1"):
        assert rows[trans_no].next_query_at > timezone.now(), trans_no
    # Flags: not found past the grace period, 200021, amount mismatch.
    flagged = {t: r.attention_reason for t, r in rows.items() if r.needs_attention}
    assert flagged == {"N2": "not_found", "X1": "expired", "A1": "amount_mismatch"}
    assert rows["X1"].next_query_at is None
    assert (rows["A1"].amount, rows["A1"].reported_amount) == (1500, 1400)
    assert (rows["U1"].amount, rows["U1"].reported_amount) == (990, None)
    # 200008 is an error: recorded, status kept.
    assert rows["Q1"].error_count == 1 and rows["Q1"].last_error_code == "200008"
    # The one not due was not asked.
    assert rows["L1"].query_count == 0 and "L1" not in sandbox.query_counts()
    assert sandbox.query_counts() == {t: 1 for t in rows if t != "L1"}
    # Claims are released.
    assert not Refund.objects.exclude(claim_token="").exists()
    assert not Refund.objects.filter(claimed_until__isnull=False).exists()

    assert report.selected == report.queried == 10
    assert report.outcomes == {"ok": 6, "not_found": 2, "expired": 1, "query_failed": 1}
    assert report.status_changes == {
        ("UNKNOWN", "SUCCESS"): 3,
        ("UNKNOWN", "FAIL"): 1,
        ("UNKNOWN", "PROCESSING"): 1,
        ("UNKNOWN", "INIT"): 1,
    }
    assert report.by_status == {"SUCCESS": 3, "FAIL": 1, "PROCESSING": 1, "INIT": 1, "UNKNOWN": 4}
    assert report.flagged == {"not_found": 1, "expired": 1, "amount_mismatch": 1}
    assert [(e.trans_no, e.error_type, e.code) for e in report.errors] == [
        ("Q1", "query_failed", "200008")
    ]
    assert not report.ok

    # One audit row per query, with what was seen.
    assert RefundQuery.objects.count() == 10
    audit = RefundQuery.objects.get(refund__trans_no="S1")
    assert (audit.outcome, audit.status_seen, audit.resp_code) == ("ok", "SUCCESS", "200007")
    assert audit.result == rows["S1"].last_result and audit.duration_ms is not None

    # Signals, after commit, with the instance.
    changed = sorted(
        (t, k["old_status"], k["new_status"])
        for n, t, k in received
        if n == "refund_status_changed"
    )
    assert changed == [
        ("A1", "UNKNOWN", "SUCCESS"),
        ("F1", "UNKNOWN", "FAIL"),
        ("I1", "UNKNOWN", "INIT"),
        ("P1", "UNKNOWN", "PROCESSING"),
        ("S1", "UNKNOWN", "SUCCESS"),
        ("U1", "UNKNOWN", "SUCCESS"),
    ]
    # A1 succeeded for another amount than expected: flagged, not announced as a success.
    assert sorted(t for n, t, _ in received if n == "refund_succeeded") == ["S1", "U1"]
    assert [t for n, t, _ in received if n == "refund_failed"] == ["F1"]
    assert sorted((t, k["reason"]) for n, t, k in received if n == "refund_needs_attention") == [
        ("A1", "amount_mismatch"),
        ("N2", "not_found"),
        ("X1", "expired"),
    ]


def test_signals_wait_for_the_commit(
    refunds, sandbox, received, django_capture_on_commit_callbacks
):
    refunds([{"transNo": "S1"}])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        sync_refunds()
    assert received == []
    for callback in callbacks:
        callback()
    assert [n for n, _t, _k in received] == ["refund_status_changed", "refund_succeeded"]


def test_a_second_run_finds_nothing_due(refunds, sandbox):
    refunds(MIX)
    sync_refunds()
    again = sync_refunds()
    assert again.selected == 0 and again.queried == 0 and again.ok
    assert again.summary() == "No refunds to sync."
    assert max(sandbox.query_counts().values()) == 1


def test_a_refund_moves_on_with_its_timeline(refunds, sandbox):
    [refund] = refunds(
        [
            {
                "transNo": "R1",
                "timeline": [{"status": "PROCESSING", "seconds": 3600}, {"status": "SUCCESS"}],
            }
        ]
    )
    sync_refund(refund)
    refund.refresh_from_db()
    assert refund.status == "PROCESSING"
    sandbox.add_refund("R1", amount=1500, timeline=[{"status": "SUCCESS"}])
    report = sync_refund(refund)
    refund.refresh_from_db()
    assert refund.status == "SUCCESS"
    assert report.status_changes == {("PROCESSING", "SUCCESS"): 1}
    assert refund.query_count == 2 and RefundQuery.objects.filter(refund=refund).count() == 2


def test_a_final_refund_that_hsq_contradicts_keeps_its_status(
    refunds, sandbox, received, django_capture_on_commit_callbacks
):
    [refund] = refunds([{"transNo": "R1", "status": "SUCCESS", "timeline": [{"status": "FAIL"}]}])
    with django_capture_on_commit_callbacks(execute=True):
        report = sync_refund(refund)
    refund.refresh_from_db()
    assert refund.status == "SUCCESS"
    assert refund.needs_attention and refund.attention_reason == "contradiction"
    # The contradicting answer is evidence in the audit row; the refund's result stays its own.
    assert refund.last_result == ""
    audit = RefundQuery.objects.get(refund=refund)
    assert audit.status_seen == "FAIL" and json.loads(audit.result)["orderStatus"] == "FAIL"
    assert report.flagged == {"contradiction": 1} and not report.status_changes
    assert [(n, k.get("reason")) for n, _t, k in received] == [
        ("refund_needs_attention", "contradiction")
    ]


# --------------------------------------------------------------------------- selection


def test_explicit_refunds_are_queried_even_when_not_due_or_final(refunds, sandbox):
    rows = refunds(
        [
            {"transNo": "L1", "due": False},
            {"transNo": "S0", "status": "SUCCESS", "next_query_at": None},
            {"transNo": "D1"},
        ]
    )
    report = sync_refunds(rows[:2])
    assert report.queried == 2
    assert sandbox.query_counts() == {"L1": 1, "S0": 1}
    # By id, and as a queryset.
    sync_refunds([rows[2].pk])
    sync_refunds(Refund.objects.filter(trans_no="L1"))
    assert sandbox.query_counts() == {"L1": 2, "S0": 1, "D1": 1}


def test_trans_nos_select_refunds_and_unknown_ones_are_errors(refunds, sandbox):
    refunds([{"transNo": "L1", "due": False}])
    report = sync_refunds(trans_nos=["L1", "NOPE"])
    assert sandbox.query_counts() == {"L1": 1}
    assert report.queried == 1
    assert report.errors == [
        RefundFailure("NOPE", "", "unknown", "", "transNo NOPE is not tracked")
    ]
    assert not report.ok and not report.configuration_errors


def test_all_takes_every_unfinished_refund_and_include_final_the_rest(refunds, sandbox):
    refunds(
        [
            {"transNo": "L1", "due": False},
            {"transNo": "G1", "next_query_at": None},  # given up: still unfinished
            {"transNo": "S0", "status": "SUCCESS", "next_query_at": None},
        ]
    )
    assert sync_refunds(due_only=False).queried == 2
    assert set(sandbox.query_counts()) == {"L1", "G1"}
    sandbox.reset()
    sandbox.add_refunds(
        [
            {"transNo": t, "amount": 1500, "timeline": [{"status": "SUCCESS"}]}
            for t in ("L1", "G1", "S0")
        ]
    )
    assert sync_refunds(due_only=False, include_final=True).queried == 3


def test_errored_only_retries_refunds_whose_last_query_failed(refunds, sandbox):
    refunds([{"transNo": "E1", "error_count": 2, "due": False}, {"transNo": "OK1", "due": False}])
    report = sync_refunds(due_only=False, errored_only=True)
    assert report.queried == 1 and sandbox.query_counts() == {"E1": 1}
    assert Refund.objects.get(trans_no="E1").error_count == 0


def test_merchant_filter(refunds, sandbox, merchant_no):
    refunds([{"transNo": "M1"}, {"transNo": "M2", "merchant_no": "999"}])
    report = sync_refunds(merchant_no=merchant_no)
    assert sandbox.query_counts() == {"M1": 1} and report.ok
    with pytest.raises(ConfigurationError, match="'999'"):
        sync_refunds(merchant_no="999")


def test_limit_caps_the_refunds_queried(refunds, sandbox):
    refunds([{"transNo": f"R{i}"} for i in range(7)])
    assert sync_refunds(limit=3).queried == 3
    assert sync_refunds(limit=0).queried == 0
    assert sync_refunds().queried == 4
    assert sum(sandbox.query_counts().values()) == 7


def test_pages_through_a_table_larger_than_a_chunk(refunds, sandbox, configure):
    configure(CHUNK_SIZE=3)
    refunds([{"transNo": f"R{i:02d}"} for i in range(20)])
    report = sync_refunds(concurrency=2)
    assert report.queried == 20
    assert sandbox.query_counts() == {f"R{i:02d}": 1 for i in range(20)}
    assert RefundQuery.objects.count() == 20


def test_few_statements_per_refund(refunds, sandbox):
    refunds([{"transNo": f"R{i:02d}"} for i in range(40)])
    with CaptureQueriesContext(connection) as queries:
        report = sync_refunds()
    assert report.queried == 40
    # RELEASE SAVEPOINT stands for the COMMIT that is not logged outside a test's transaction.
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith("RELEASE")]
    assert len(statements) <= 40 / 2, [sql[:60] for sql in statements]
    # Claims and results are written several refunds at a time, never one UPDATE per refund.
    updates = sum(sql.startswith("UPDATE") for sql in statements)
    assert 1 < updates <= 40 / 4, [sql[:60] for sql in statements]
    inserts = [sql for sql in statements if sql.startswith("INSERT")]
    assert all("hsq_refunds_refundquery" in sql for sql in inserts)


def test_a_refund_the_database_refuses_does_not_hold_up_the_others(refunds, sandbox):
    refunds([{"transNo": "R1"}, {"transNo": "BAD"}, {"transNo": "R3"}])
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION hsq_refuse() RETURNS trigger AS $$ BEGIN "
                "IF NEW.trans_no = 'BAD' AND NEW.query_count > 0 THEN "
                "RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER hsq_refuse BEFORE UPDATE ON hsq_refunds_refund "
                "FOR EACH ROW EXECUTE FUNCTION hsq_refuse()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER hsq_refuse BEFORE UPDATE ON hsq_refunds_refund "
                "WHEN NEW.trans_no = 'BAD' AND NEW.query_count > 0 "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
    report = sync_refunds()
    statuses = dict(Refund.objects.values_list("trans_no", "status"))
    assert statuses == {"R1": "SUCCESS", "BAD": "UNKNOWN", "R3": "SUCCESS"}
    assert [(e.trans_no, e.error_type) for e in report.errors] == [("BAD", "internal")]
    assert "refused" in report.errors[0].message
    assert Refund.objects.get(trans_no="BAD").claim_token == ""  # released
    assert set(RefundQuery.objects.values_list("refund__trans_no", flat=True)) == {"R1", "R3"}


# --------------------------------------------------------------------------- claims


def test_refunds_claimed_by_another_run_are_skipped(refunds, sandbox):
    rows = refunds([{"transNo": "C1"}, {"transNo": "C2"}, {"transNo": "C3"}])
    Refund.objects.filter(pk=rows[0].pk).update(
        claimed_until=timezone.now() + timedelta(minutes=5), claim_token="other"
    )
    Refund.objects.filter(pk=rows[1].pk).update(  # an expired lease: free again
        claimed_until=timezone.now() - timedelta(seconds=1), claim_token="dead"
    )
    report = sync_refunds()
    assert report.skipped == 1 and report.queried == 2 and report.selected == 3
    assert set(sandbox.query_counts()) == {"C2", "C3"}
    assert Refund.objects.get(pk=rows[0].pk).claim_token == "other"
    assert "1 skipped (claimed by another run)" in report.summary()


def test_a_run_that_lost_its_claim_writes_nothing(refunds, sandbox, monkeypatch):
    [refund] = refunds([{"transNo": "C1"}])
    real_decide = pipeline.decide

    def decide_after_losing_the_claim(row, answer, **kwargs):
        # Meanwhile the lease ran out and another run claimed the refund.
        Refund.objects.filter(pk=row.pk).update(claim_token="thief")
        return real_decide(row, answer, **kwargs)

    monkeypatch.setattr(pipeline, "decide", decide_after_losing_the_claim)
    report = sync_refunds()
    refund.refresh_from_db()
    assert refund.status == "UNKNOWN" and refund.claim_token == "thief"
    assert report.skipped == 1 and report.queried == 0
    assert not RefundQuery.objects.exists()


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("fault", "params", "error_type"),
    [
        ("http_error", {"status": 503}, "transport"),
        ("drop", {}, "transport"),
        ("spring_error", {"status": 500}, "transport"),
        ("bad_signature", {}, "signature"),
        ("malformed_json", {}, "transport"),
        ("wrong_trans_no", {}, "response"),
        ("wrong_merchant_no", {}, "response"),
        ("unsigned_failure", {}, "gateway"),
        ("signed_failure", {"error_code": "SYSTEM_BUSY"}, "gateway"),
    ],
)
def test_faults_leave_the_data_untouched_and_are_reported(
    refunds, sandbox, fault, params, error_type
):
    rows = refunds([{"transNo": "R1", "status": "PROCESSING"}, {"transNo": "R2"}])
    sandbox.set_fault(fault, trans_no="R1", **params)
    report = sync_refunds()
    bad = Refund.objects.get(pk=rows[0].pk)
    assert bad.status == "PROCESSING" and bad.last_result == "" and bad.resp_code == ""
    assert bad.error_count == 1 and bad.last_error_type == error_type
    assert bad.query_count == 1 and bad.next_query_at > timezone.now()
    assert Refund.objects.get(pk=rows[1].pk).status == "SUCCESS"
    assert [(e.trans_no, e.error_type) for e in report.errors] == [("R1", error_type)]
    assert report.outcomes[f"{error_type}_error"] == 1 and report.queried == 2
    audit = RefundQuery.objects.get(refund=bad)
    assert audit.outcome == f"{error_type}_error" and audit.error_type == error_type
    assert audit.result == "" and audit.status_seen == ""


def test_a_signed_gateway_error_keeps_its_code(refunds, sandbox):
    refunds([{"transNo": "R1"}])
    sandbox.set_fault("signed_failure", trans_no="R1", error_code="SYSTEM_BUSY", error_msg="忙")
    report = sync_refunds()
    refund = Refund.objects.get()
    assert (refund.last_error_code, refund.last_error_message) == (
        "SYSTEM_BUSY",
        "忙",
    )
    assert report.errors[0].code == "SYSTEM_BUSY"


def test_an_unexpected_exception_stays_with_its_refund(refunds, sandbox, monkeypatch):
    refunds([{"transNo": "R1"}, {"transNo": "BOOM"}, {"transNo": "R3"}])
    real_decide = pipeline.decide

    def decide(refund, answer, **kwargs):
        if refund.trans_no == "BOOM":
            raise ZeroDivisionError("a bug")
        return real_decide(refund, answer, **kwargs)

    monkeypatch.setattr(pipeline, "decide", decide)
    report = sync_refunds()
    statuses = dict(Refund.objects.values_list("trans_no", "status"))
    assert statuses == {"R1": "SUCCESS", "BOOM": "UNKNOWN", "R3": "SUCCESS"}
    assert [(e.trans_no, e.error_type, e.message) for e in report.errors] == [
        ("BOOM", "internal", "ZeroDivisionError: a bug")
    ]
    assert Refund.objects.get(trans_no="BOOM").claim_token == ""  # released


def test_a_merchant_without_configuration_is_a_configuration_error(refunds, sandbox):
    refunds([{"transNo": "R1", "merchant_no": "777"}, {"transNo": "R2"}])
    started = timezone.now()
    report = sync_refunds()
    refund = Refund.objects.get(trans_no="R1")
    # Nothing was asked at HSQ, but the refund backs off like any failure and leaves a trace.
    assert refund.status == "UNKNOWN" and refund.last_error_type == "configuration"
    assert refund.query_count == 0 and refund.last_queried_at is None
    assert refund.error_count == 1
    assert refund.next_query_at >= started + timedelta(seconds=60)
    assert refund.claim_token == ""
    assert refund.queries.get().outcome == "config_error"
    assert not refund.needs_attention  # flagged only after ATTENTION_AFTER_ERRORS in a row
    assert report.configuration_errors and report.queried == 1
    assert report.outcomes == {"config_error": 1, "ok": 1}
    assert "'777'" in report.errors[0].message
    assert set(sandbox.query_counts()) == {"R2"}


def test_an_invalid_setting_raises_before_anything_is_selected(refunds, sandbox, configure):
    refunds([{"transNo": "R1"}])
    configure(CONCURRENCY=0)
    with pytest.raises(ConfigurationError, match='HSQ_REFUNDS\\["CONCURRENCY"\\]'):
        sync_refunds()
    assert sandbox.query_counts() == {}


# --------------------------------------------------------------------------- dry run


def test_a_dry_run_queries_and_reports_but_writes_nothing(
    refunds, sandbox, received, django_capture_on_commit_callbacks
):
    refunds(MIX)
    before = snapshot()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with CaptureQueriesContext(connection) as queries:
            report = sync_refunds(dry_run=True)
    assert snapshot() == before
    assert not RefundQuery.objects.exists()
    assert callbacks == [] and received == []
    assert all(q["sql"].startswith("SELECT") for q in queries.captured_queries)
    assert report.dry_run and report.queried == 10
    assert report.status_changes[("UNKNOWN", "SUCCESS")] == 3
    assert report.summary().startswith("Dry run, nothing written: 10 refunds: HSQ answered 9")
    assert sum(sandbox.query_counts().values()) == 10


# --------------------------------------------------------------------------- report


def test_progress_is_reported(refunds, sandbox):
    refunds([{"transNo": f"R{i}"} for i in range(5)])
    calls = []
    sync_refunds(progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_one_log_line_per_query_with_the_trans_no(refunds, sandbox, caplog):
    refunds([{"transNo": "LOG1"}, {"transNo": "LOG2", "known": False}])
    with caplog.at_level(logging.INFO, logger="hsq_refunds.sync"):
        sync_refunds()
    lines = [r.getMessage() for r in caplog.records if "transNo=" in r.getMessage()]
    assert sorted(lines) == [
        "transNo=LOG1 merchantNo=888000000001 outcome=ok status=SUCCESS (was UNKNOWN)",
        "transNo=LOG2 merchantNo=888000000001 outcome=not_found status=UNKNOWN",
    ]


def test_report_round_trips_through_json():
    report = SyncReport(selected=3, queried=2, skipped=1)
    report.outcomes.update({"ok": 1, "transport_error": 1})
    report.status_changes[("UNKNOWN", "SUCCESS")] += 1
    report.by_status.update({"SUCCESS": 1, "UNKNOWN": 1})
    report.errors.append(RefundFailure("R2", "888", "transport", "", "timed out"))
    data = json.loads(json.dumps(report.as_dict()))
    assert SyncReport.from_dict(data) == report
    assert data["ok"] is False and data["status_changes"] == [
        {"from": "UNKNOWN", "to": "SUCCESS", "count": 1}
    ]


def test_summary_sentence():
    report = SyncReport(selected=4, queried=4)
    report.outcomes.update({"ok": 3, "signature_error": 1})
    report.by_status.update({"SUCCESS": 1, "PROCESSING": 3})
    report.answered.update({"SUCCESS": 1, "PROCESSING": 2})
    report.errors.append(RefundFailure("R4", "888", "signature", "", "does not verify"))
    assert report.summary() == (
        "4 refunds: HSQ answered 3 (1 succeeded, 2 still processing); "
        "1 could not be queried: signature invalid."
    )
    report.outcomes.update({"transport_error": 1})
    report.errors.append(RefundFailure("R5", "888", "transport", "", "timed out"))
    report.flagged["not_found"] += 1
    assert report.summary() == (
        "5 refunds: HSQ answered 3 (1 succeeded, 2 still processing); 2 could not be queried: "
        "1 signature invalid, 1 network error; 1 needs attention."
    )
