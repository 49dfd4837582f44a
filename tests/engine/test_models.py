"""Refund and RefundQuery: tracking refunds, their properties, querysets and pruning."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, connections
from django.utils import timezone

from hsq_refunds.models import Refund, RefundQuery


@pytest.fixture
def two_merchants(settings, hsq_sandbox_settings):
    entry = next(iter(hsq_sandbox_settings["MERCHANTS"].values()))
    settings.HSQ_REFUNDS = {**hsq_sandbox_settings, "MERCHANTS": {"111": entry, "222": entry}}


@pytest.mark.django_db
class TestTrack:
    def test_creates_a_refund_due_after_the_first_query_delay(self, configure, merchant_no):
        configure(FIRST_QUERY_DELAY=90)
        applied = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
        refund = Refund.objects.track("R1", orig_trans_no="P1", amount=1234, applied_at=applied)
        refund.refresh_from_db()
        assert (refund.merchant_no, refund.trans_no, refund.orig_trans_no) == (
            merchant_no,
            "R1",
            "P1",
        )
        assert refund.amount == 1234 and refund.status == Refund.Status.UNKNOWN
        assert refund.applied_at == applied
        assert refund.next_query_at == applied + timedelta(seconds=90)
        assert not refund.needs_attention and refund.query_count == 0

    def test_defaults_to_now(self, configure):
        before = timezone.now()
        refund = Refund.objects.track("R1")
        assert before <= refund.applied_at <= timezone.now()
        assert refund.next_query_at == refund.applied_at + timedelta(seconds=60)
        assert refund.amount is None and refund.orig_trans_no == ""

    def test_is_idempotent(self, configure):
        first = Refund.objects.track("R1", amount=100)
        again = Refund.objects.track("R1", amount=999)
        assert again.pk == first.pk and again.amount == 100
        assert Refund.objects.count() == 1

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"trans_no": ""}, "1 to 64 characters"),
            ({"trans_no": "x" * 65}, "1 to 64 characters"),
            ({"trans_no": 123}, "must be text"),
            ({"trans_no": " R1"}, "surrounding spaces"),
            ({"trans_no": "R\n1"}, "control characters"),
            ({"trans_no": "R1", "amount": -1}, "whole number of fen"),
            ({"trans_no": "R1", "amount": 1.5}, "whole number of fen"),
            ({"trans_no": "R1", "amount": True}, "whole number of fen"),
            ({"trans_no": "R1", "applied_at": datetime(2024, 5, 1)}, "timezone-aware"),
            ({"trans_no": "R1", "merchant_no": "999"}, "'999' is not configured"),
            ({"trans_no": "R1", "orig_trans_no": "x" * 65}, "origTransNo"),
        ],
    )
    def test_refuses_bad_input_and_writes_nothing(self, configure, kwargs, message):
        with pytest.raises(ValueError, match=message):
            Refund.objects.track(**kwargs)
        assert not Refund.objects.exists()

    def test_needs_a_merchant_when_several_are_configured(self, two_merchants):
        with pytest.raises(ValueError, match="Several merchants"):
            Refund.objects.track("R1")
        assert Refund.objects.track("R1", merchant_no="222").merchant_no == "222"
        # The same transNo at another merchant is another refund.
        assert Refund.objects.track("R1", merchant_no="111").merchant_no == "111"
        assert Refund.objects.count() == 2

    def test_needs_a_configured_merchant(self, settings):
        settings.HSQ_REFUNDS = {"MERCHANTS": {}}
        with pytest.raises(ValueError, match="No merchant is configured"):
            Refund.objects.track("R1")

    def test_the_database_refuses_duplicates(self, configure, merchant_no):
        Refund.objects.create(merchant_no=merchant_no, trans_no="R1")
        with pytest.raises(IntegrityError):
            Refund.objects.create(merchant_no=merchant_no, trans_no="R1")

    def test_the_database_refuses_negative_amounts(self, configure, merchant_no):
        with pytest.raises(IntegrityError):
            Refund.objects.create(merchant_no=merchant_no, trans_no="R2", amount=-5)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_track_is_safe_when_several_threads_track_one_refund_at_once(configure):
    barrier = threading.Barrier(8)
    results: list[int] = []
    errors: list[BaseException] = []

    def track() -> None:
        try:
            barrier.wait()
            results.append(Refund.objects.track("SAME", amount=5).pk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=track) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 8
    assert Refund.objects.count() == 1


def test_amounts_in_yuan():
    assert Refund(amount=1234).amount_yuan == Decimal("12.34")
    assert str(Refund(amount=5).amount_yuan) == "0.05"
    assert Refund(amount=None).amount_yuan is None
    assert Refund(reported_amount=100000).reported_amount_yuan == Decimal("1000.00")


def test_final_states():
    assert Refund(status="SUCCESS").is_final and Refund(status="FAIL").is_final
    assert not any(Refund(status=s).is_final for s in ("UNKNOWN", "INIT", "PROCESSING"))


def test_labels_are_translatable():
    from django.utils import translation

    with translation.override("en"):
        assert str(Refund.Status.SUCCESS.label) == "Succeeded"
        assert str(Refund._meta.verbose_name) == "refund"
    assert ("refresh_refund", "Can refresh refund status from HSQ") in [
        (codename, str(name)) for codename, name in Refund._meta.permissions
    ]


@pytest.mark.django_db
def test_querysets(configure, merchant_no):
    now = timezone.now()
    make = lambda trans_no, **kw: Refund.objects.create(  # noqa: E731
        merchant_no=merchant_no, trans_no=trans_no, **kw
    )
    make("due", next_query_at=now - timedelta(seconds=1))
    make("later", next_query_at=now + timedelta(hours=1))
    make("never", next_query_at=None, status="SUCCESS")
    make("flagged", needs_attention=True, attention_reason="not_found", attention_detail="d")
    assert list(Refund.objects.due(now).values_list("trans_no", flat=True)) == ["due"]
    assert set(Refund.objects.open().values_list("trans_no", flat=True)) == {
        "due",
        "later",
        "flagged",
    }
    assert Refund.objects.filter(needs_attention=True).count() == 1
    assert Refund.objects.all().clear_attention() == 1
    assert not Refund.objects.filter(needs_attention=True).exists()
    assert Refund.objects.get(trans_no="flagged").attention_reason == ""


@pytest.mark.django_db
def test_prune_deletes_old_query_records_in_batches(configure, merchant_no, monkeypatch):
    from hsq_refunds import models

    monkeypatch.setattr(models, "_PRUNE_BATCH", 3)
    refund = Refund.objects.create(merchant_no=merchant_no, trans_no="R1")
    now = timezone.now()
    RefundQuery.objects.bulk_create(
        RefundQuery(refund=refund, outcome="ok", queried_at=now - timedelta(days=days))
        for days in [1, 2, 89, 91, 92, 93, 94, 95, 96, 365]
    )
    assert RefundQuery.objects.prune() == 7  # default: 90 days
    assert RefundQuery.objects.count() == 3
    assert RefundQuery.objects.prune(timedelta(days=1, hours=12)) == 2
    assert RefundQuery.objects.prune(now) == 1
    assert not RefundQuery.objects.exists()


@pytest.mark.django_db
def test_prune_keeps_everything_without_a_retention(configure, merchant_no):
    configure(QUERY_LOG_RETENTION_DAYS=None)
    refund = Refund.objects.create(merchant_no=merchant_no, trans_no="R1")
    RefundQuery.objects.create(
        refund=refund, outcome="ok", queried_at=timezone.now() - timedelta(days=999)
    )
    assert RefundQuery.objects.prune() == 0
    assert RefundQuery.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_due_query_uses_the_partial_index(configure, merchant_no):
    """On PostgreSQL, "what is due now" must not scan the table."""
    now = timezone.now()
    Refund.objects.bulk_create(
        Refund(
            merchant_no=merchant_no,
            trans_no=f"R{i}",
            status="SUCCESS",
            next_query_at=None if i % 100 else now - timedelta(seconds=1),
        )
        for i in range(20000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE hsq_refunds_refund")
    plan = (
        Refund.objects.filter(next_query_at__lte=now)
        .order_by("next_query_at", "id")
        .values_list("id")[:100]
        .explain()
    )
    assert "hsq_refund_due_idx" in plan, plan
