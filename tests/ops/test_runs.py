"""A record of each sync run: written by the engine at the end of every run that is not a dry
run, with what started it, and never in the engine's way."""

from __future__ import annotations

import io
import logging
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone, translation

from hsq_refunds.models import Refund, SyncRun, SyncTrigger
from hsq_refunds.runs import record_sync_run
from hsq_refunds.sync import SyncReport, sync_refunds
from hsq_refunds.tasks import sync_refund_batch

pytestmark = pytest.mark.django_db


@pytest.fixture
def tracked(sandbox):
    """``tracked(trans_no, fault=None)``: a due refund, SUCCESS at the sandbox gateway."""

    def track(trans_no: str, fault: str | None = None) -> Refund:
        sandbox.add_refund(trans_no, amount=1234, timeline=[{"status": "SUCCESS"}])
        if fault:
            sandbox.set_fault(fault, trans_no=trans_no)
        return Refund.objects.track(
            trans_no, amount=1234, applied_at=timezone.now() - timedelta(minutes=2)
        )

    return track


def test_a_run_is_recorded_with_its_figures(tracked, django_capture_on_commit_callbacks):
    tracked("R1")
    tracked("R2", fault="bad_signature")
    tracked("R3", fault="malformed_json")
    before = timezone.now()

    with django_capture_on_commit_callbacks(execute=True):
        report = sync_refunds()

    run = SyncRun.objects.get()
    assert (run.selected, run.queried, run.error_count) == (3, 3, 2)
    assert run.errors_by_type == {"signature": 1, "transport": 1}, run.errors_by_type
    assert run.ok is False and report.ok is False
    assert run.trigger == "api"
    assert before <= run.started_at <= run.finished_at <= timezone.now()
    with translation.override("en"):
        assert run.summary == report.summary()


def test_a_dry_run_is_not_recorded(tracked, django_capture_on_commit_callbacks):
    tracked("R1")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        sync_refunds(dry_run=True)

    assert callbacks == []
    assert not SyncRun.objects.exists()


def test_a_run_with_nothing_to_do_is_recorded_too(sandbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        sync_refunds()

    run = SyncRun.objects.get()
    assert run.ok and (run.selected, run.queried, run.error_count) == (0, 0, 0)
    assert run.summary == "No refunds to sync."


def test_the_summary_is_kept_in_the_site_language(tracked, django_capture_on_commit_callbacks):
    tracked("R1")
    with translation.override("zh-hans"), django_capture_on_commit_callbacks(execute=True):
        sync_refunds()

    assert SyncRun.objects.get().summary == "1 refund queried: 1 succeeded."


def test_the_management_command_is_the_trigger(tracked, django_capture_on_commit_callbacks):
    tracked("R1")

    with django_capture_on_commit_callbacks(execute=True):
        call_command("sync_refunds", stdout=io.StringIO(), stderr=io.StringIO())

    assert SyncRun.objects.get().trigger == "command"


def test_a_django_q2_task_is_the_trigger(tracked, django_capture_on_commit_callbacks):
    refund = tracked("R1")

    with django_capture_on_commit_callbacks(execute=True):
        sync_refund_batch([refund.pk])

    assert SyncRun.objects.get().trigger == "task"


def test_the_admin_is_the_trigger(tracked, admin_client, django_capture_on_commit_callbacks):
    refund = tracked("R1")

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/hsq_refunds/refund/",
            {"action": "refresh_status", "_selected_action": [refund.pk]},
        )

    assert SyncRun.objects.get().trigger == "admin"


def test_the_trigger_given_is_recorded(tracked, django_capture_on_commit_callbacks):
    tracked("R1")

    with django_capture_on_commit_callbacks(execute=True):
        sync_refunds(trigger=SyncTrigger.TASK)

    assert SyncRun.objects.get().trigger == "task"
    with pytest.raises(ValueError, match="trigger must be one of"):
        sync_refunds(trigger="cron")


def test_nothing_is_recorded_when_the_callers_transaction_rolls_back(
    tracked, django_capture_on_commit_callbacks
):
    tracked("R1")

    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            sync_refunds(allow_transaction=True)  # as django-q2's sync mode runs it
            raise RuntimeError("the caller changes its mind")

    assert not SyncRun.objects.exists()


def test_recording_never_raises_into_the_engine(caplog, django_capture_on_commit_callbacks):
    class Broken(SyncReport):
        def summary(self) -> str:
            raise RuntimeError("no summary today")

    now = timezone.now()
    with caplog.at_level(logging.ERROR, logger="hsq_refunds.sync"):
        with django_capture_on_commit_callbacks(execute=True):
            record_sync_run(Broken(), started_at=now, finished_at=now, trigger="api")

    assert not SyncRun.objects.exists()
    assert "could not record the sync run" in caplog.text


def test_a_failed_write_is_logged_not_raised(caplog, django_capture_on_commit_callbacks):
    report = SyncReport(selected=-1)  # refused by the column's check
    now = timezone.now()

    with caplog.at_level(logging.ERROR, logger="hsq_refunds.sync"):
        with django_capture_on_commit_callbacks(execute=True):
            record_sync_run(report, started_at=now, finished_at=now, trigger="api")

    assert "could not record the sync run that finished at" in caplog.text


def test_old_runs_are_pruned_when_a_run_is_recorded(
    make_run, settings, django_capture_on_commit_callbacks
):
    settings.HSQ_REFUNDS = {"MERCHANTS": {}, "HEALTH": {"RUN_RETENTION_DAYS": 7}}
    old = make_run(ago=timedelta(days=8))
    recent = make_run(ago=timedelta(days=6))
    now = timezone.now()

    with django_capture_on_commit_callbacks(execute=True):
        record_sync_run(SyncReport(), started_at=now, finished_at=now, trigger="command")

    assert not SyncRun.objects.filter(pk=old.pk).exists()
    assert SyncRun.objects.filter(pk=recent.pk).exists()
    assert SyncRun.objects.count() == 2


def test_prune_by_age(make_run):
    make_run(ago=timedelta(days=40))
    make_run(ago=timedelta(days=1))

    assert SyncRun.objects.prune(timedelta(days=30)) == 1
    assert SyncRun.objects.count() == 1
