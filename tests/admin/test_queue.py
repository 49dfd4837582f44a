"""Above ADMIN_SYNC_LIMIT selected refunds the admin queues the work or refuses: never syncs."""

from __future__ import annotations

import pytest
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from hsq_refunds import tasks

from .conftest import message_texts, run_action

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_refunds(make_refund, settings):
    settings.HSQ_REFUNDS = {**settings.HSQ_REFUNDS, "ADMIN_SYNC_LIMIT": 2}
    return [make_refund(f"R{i}") for i in range(1, 4)]


@pytest.fixture
def queue_not_run(monkeypatch):
    """The suite's django-q2 cluster queues on the ORM broker instead of running tasks inline."""
    monkeypatch.setattr(Conf, "SYNC", False)


def test_too_many_with_a_cluster_are_queued(admin_client, three_refunds, sandbox, queue_not_run):
    response = run_action(admin_client, "refresh_status", three_refunds)

    ((level, text),) = message_texts(response)
    assert level == "info"
    assert text.startswith("3 refunds are queued for a refresh in the background (task ")
    queued = [SignedPackage.loads(row.payload) for row in OrmQ.objects.all()]
    assert len(queued) == 1
    (task,) = queued
    assert task["func"] == tasks.BATCH_TASK
    assert sorted(task["args"][0]) == sorted(refund.pk for refund in three_refunds)
    assert task["group"] in text
    assert sandbox.query_counts() == {}


def test_on_the_limit_they_are_refreshed_inline(admin_client, three_refunds, sandbox):
    response = run_action(admin_client, "refresh_status", three_refunds[:2])

    assert message_texts(response) == [("success", "2 refunds queried: 2 succeeded.")]
    assert OrmQ.objects.count() == 0
    assert sandbox.query_counts() == {"R1": 1, "R2": 1}


def test_too_many_without_a_cluster_are_refused(admin_client, three_refunds, sandbox, settings):
    settings.Q_CLUSTER = None
    assert not tasks.cluster_configured()

    response = run_action(admin_client, "refresh_status", three_refunds)

    ((level, text),) = message_texts(response)
    assert level == "warning"
    assert text.startswith("3 refunds selected, but the admin refreshes at most 2 at once")
    assert "manage.py sync_refunds" in text
    assert OrmQ.objects.count() == 0
    assert sandbox.query_counts() == {}
