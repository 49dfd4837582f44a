"""What only PostgreSQL shows: row locks held by a caller's transaction, and query plans."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from hsq_refunds import tasks
from hsq_refunds.admin import RefundAdmin
from hsq_refunds.models import Refund

pytestmark = pytest.mark.postgres


@pytest.mark.django_db(transaction=True)
def test_an_admin_refresh_waiting_on_hsq_does_not_hold_up_the_scheduled_sync(
    refunds, sandbox, configure, monkeypatch
):
    """With ``ATOMIC_REQUESTS``, a refresh's claim would stay uncommitted while HSQ answers
    slowly, and the scheduled sync would wait on its row lock. The admin's views are not atomic,
    so the sync passes the claimed refund over and finishes while the refresh still waits."""
    configure(READ_TIMEOUT=30)
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    [slow, *others] = refunds([{"transNo": "SLOW"}] + [{"transNo": f"R{i:02d}"} for i in range(49)])
    sandbox.set_fault("latency", trans_no="SLOW", seconds=8)
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")

    def refresh() -> None:
        client = Client()
        client.force_login(user)
        response = client.post(reverse("admin:hsq_refunds_refund_refresh", args=[slow.pk]))
        outcome["status"] = response.status_code
        connection.close()

    outcome: dict[str, int] = {}
    admin_request = threading.Thread(target=refresh)
    admin_request.start()
    deadline = time.monotonic() + 30
    while "SLOW" not in sandbox.query_counts() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "SLOW" in sandbox.query_counts()  # the refresh is waiting on HSQ now

    result = tasks.sync_due_refunds()

    still_waiting = admin_request.is_alive()
    admin_request.join(30)
    assert still_waiting, "the scheduled sync waited for the admin's request"
    assert result["report"]["queried"] == 49 and result["report"]["skipped"] == 1
    assert (
        Refund.objects.filter(trans_no__in=[r.trans_no for r in others], status="SUCCESS").count()
        == 49
    )
    assert outcome["status"] == 302
    assert Refund.objects.get(pk=slow.pk).status == "SUCCESS"
    assert sandbox.query_counts()["SLOW"] == 1


@pytest.mark.django_db
def test_the_admins_number_search_is_served_by_indexes(refunds, sandbox):
    now = timezone.now()
    Refund.objects.bulk_create(
        Refund(
            merchant_no="888000000001",
            trans_no=f"RF{i:08d}",
            orig_trans_no=f"PO{i:08d}",
            trade_no=f"12000{i:010d}",
            applied_at=now - timedelta(minutes=i),
        )
        for i in range(2000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE hsq_refunds_refund")
        cursor.execute("SET LOCAL enable_seqscan = off")  # as on a table of 1,000,000 rows
    model_admin = RefundAdmin(Refund, admin.site)

    found, _distinct = model_admin.get_search_results(None, Refund.objects.all(), "rf0000012")
    plan = found.order_by().explain()

    assert sorted(found.values_list("trans_no", flat=True)) == [f"RF0000012{d}" for d in range(10)]
    assert "Seq Scan" not in plan and "Index Cond" in plan, plan
    # What the default case-insensitive search would do: no index can serve its condition.
    default = Refund.objects.filter(trans_no__istartswith="rf0000012").order_by().explain()
    assert "Index Cond" not in default, default
