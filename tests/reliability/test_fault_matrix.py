"""Every fault the sandbox gateway can inject, through every way a sync is started.

Each run holds a refund that meets the fault and a healthy one. Whatever the entry point (the
command, the admin action, the admin button, the django-q2 task), the faulty refund keeps its
status and amount, gets the error on its row and in its audit row, is not flagged for a person,
and is asked again later; the healthy refund of the same run is synced all the same.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import Task
from django_q.tasks import async_task

from hsq_refunds import tasks
from hsq_refunds.choices import ERROR_OUTCOMES
from hsq_refunds.models import Refund, RefundQuery
from hsq_refunds.sync import sync_refunds

from .conftest import READ_TIMEOUT

pytestmark = pytest.mark.django_db

FAULTY, HEALTHY = "R-FAULTY", "R-HEALTHY"

#: (fault, its parameters, the error type recorded on the refund)
FAULTS = [
    pytest.param("latency", {"seconds": READ_TIMEOUT * 4}, "transport", id="latency-past-timeout"),
    pytest.param("http_error", {"status": 503}, "transport", id="http-503"),
    pytest.param("http_error", {"status": 500}, "transport", id="http-500"),
    pytest.param("drop", {}, "transport", id="connection-dropped"),
    pytest.param("bad_signature", {}, "signature", id="bad-signature"),
    pytest.param("malformed_json", {}, "transport", id="malformed-json"),
    pytest.param("wrong_trans_no", {}, "response", id="wrong-transNo"),
    pytest.param("wrong_merchant_no", {}, "response", id="wrong-merchantNo"),
    pytest.param(
        "unsigned_failure",
        {"error_code": "SYSTEM_ERROR", "error_msg": "系统繁忙"},
        "gateway",
        id="unsigned-failure",
    ),
    # A Spring Boot error page served with 200: only its body tells it apart.
    pytest.param("spring_error", {"status": 200}, "transport", id="spring-error-body"),
    pytest.param(
        "signed_failure",
        {"error_code": "SYSTEM_BUSY", "error_msg": "稍后再试"},
        "gateway",
        id="signed-failure",
    ),
    pytest.param("double_encoding_missing", {}, "response", id="result-not-double-encoded"),
    # An amount no refund can have, as a JSON number past 2^64 or as text past 10^16 fen.
    pytest.param("huge_amount", {}, "response", id="amount-past-2-64"),
    pytest.param(
        "verbatim_result",
        {"result": '{"transNo":"R-FAULTY","orderStatus":"SUCCESS","orderAmt":"99999999999999999"}'},
        "response",
        id="amount-past-10-16",
    ),
    # An answer sent a few bytes at a time: the query's deadline ends it.
    pytest.param("trickle", {"chunk": 2, "interval": 0.3}, "transport", id="trickled-answer"),
]


# --------------------------------------------------------------------------- entry points
#
# Each runs a sync over both refunds the way a person or a scheduler would, and returns the
# text the person or the scheduler gets to see.


def by_command(client: Client, faulty: Refund, healthy: Refund) -> str:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("sync_refunds", stdout=out, stderr=err)
    assert failed.value.returncode == 1  # some query failed (not a configuration error: 2)
    return out.getvalue() + err.getvalue() + str(failed.value)


def by_admin_action(client: Client, faulty: Refund, healthy: Refund) -> str:
    response = client.post(
        reverse("admin:hsq_refunds_refund_changelist"),
        {"action": "refresh_status", "_selected_action": [faulty.pk, healthy.pk]},
        follow=True,
    )
    assert response.status_code == 200
    return messages_of(response)


def by_admin_button(client: Client, faulty: Refund, healthy: Refund) -> str:
    """The button refreshes one refund: press it on the faulty one, then on the healthy one."""
    texts = []
    for refund in (faulty, healthy):
        response = client.post(
            reverse("admin:hsq_refunds_refund_refresh", args=[refund.pk]), follow=True
        )
        assert response.status_code == 200
        assert response.redirect_chain == [
            (reverse("admin:hsq_refunds_refund_change", args=[refund.pk]), 302)
        ]
        texts.append(messages_of(response))
    return "\n".join(texts)


def by_task(client: Client, faulty: Refund, healthy: Refund) -> str:
    """The scheduled django-q2 task, run by django-q2 itself (sync mode in the test settings)."""
    task = Task.objects.get(id=async_task(tasks.CYCLE_TASK))
    assert task.success, task.result  # a failed refund is an outcome, not a failed task
    assert task.result["batches"] == 0  # two refunds are synced inline
    report = task.result["report"]
    assert report["queried"] == 2
    return "\n".join(
        f"{error['trans_no']}: {error['error_type']} {error['code']} {error['message']}"
        for error in report["errors"]
    )


ENTRY_POINTS: dict[str, Callable[[Client, Refund, Refund], str]] = {
    "command": by_command,
    "admin-action": by_admin_action,
    "admin-button": by_admin_button,
    "task": by_task,
}


def messages_of(response: Any) -> str:
    return "\n".join(f"{m.level_tag}: {m}" for m in response.context["messages"])


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize(("fault", "params", "error_type"), FAULTS)
def test_a_fault_is_recorded_and_the_run_goes_on(
    admin_client, make_refunds, sandbox, entry, fault, params, error_type
):
    faulty, healthy = make_refunds([FAULTY, HEALTHY], status="PROCESSING", amount=1500)
    before = Refund.objects.get(pk=faulty.pk)
    sandbox.set_fault(fault, trans_no=FAULTY, **params)

    shown = ENTRY_POINTS[entry](admin_client, faulty, healthy)

    # The person or scheduler is told which refund failed.
    assert FAULTY in shown, shown
    assert HEALTHY not in shown.replace(f"Refund {HEALTHY} refreshed", ""), shown
    assert sandbox.query_counts() == {FAULTY: 1, HEALTHY: 1}

    after = Refund.objects.get(pk=faulty.pk)
    # Nothing the gateway said was taken in.
    for name in ("status", "amount", "reported_amount", "finished_at", "trade_no", "extend"):
        assert getattr(after, name) == getattr(before, name), name
    assert (after.last_result, after.resp_code, after.resp_msg) == ("", "", "")
    # The error is on the refund, and it is a transient one: no person is called.
    assert after.last_error_type == error_type
    assert after.last_error_message
    assert after.error_count == 1 and after.query_count == 1
    assert not after.needs_attention and after.attention_reason == ""
    # It is asked again, later.
    assert after.next_query_at is not None and after.next_query_at > timezone.now()
    assert (after.claim_token, after.claimed_until) == ("", None)

    (audit,) = RefundQuery.objects.filter(refund=faulty)
    assert audit.outcome in ERROR_OUTCOMES and audit.outcome == f"{error_type}_error"
    assert audit.error_type == error_type and audit.error_message == after.last_error_message
    assert (audit.status_seen, audit.result) == ("", "")

    healthy = Refund.objects.get(pk=healthy.pk)
    assert healthy.status == "SUCCESS" and healthy.error_count == 0
    assert list(RefundQuery.objects.filter(refund=healthy).values_list("outcome", flat=True)) == [
        "ok"
    ]


@pytest.mark.parametrize(("fault", "params", "error_type"), FAULTS)
def test_once_the_fault_is_gone_the_next_due_sync_finishes_the_refund(
    make_refunds, sandbox, fault, params, error_type
):
    (refund,) = make_refunds([FAULTY])
    sandbox.set_fault(fault, trans_no=FAULTY, times=1, **params)
    sync_refunds()
    assert Refund.objects.get(pk=refund.pk).last_error_type == error_type
    assert sync_refunds().queried == 0  # not due yet: it waits for its backoff

    # Its time comes.
    Refund.objects.filter(pk=refund.pk).update(next_query_at=timezone.now() - timedelta(seconds=1))
    report = sync_refunds()

    assert report.ok and report.queried == 1
    refund.refresh_from_db()
    assert refund.status == "SUCCESS" and refund.next_query_at is None
    assert (refund.error_count, refund.last_error_type, refund.last_error_message) == (0, "", "")
    assert refund.query_count == 2
    assert list(RefundQuery.objects.filter(refund=refund).values_list("outcome", flat=True)) == [
        "ok",
        f"{error_type}_error",
    ]
    assert sandbox.query_counts() == {FAULTY: 2}
