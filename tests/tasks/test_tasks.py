"""The django-q2 tasks against the sandbox over real HTTP, with django-q2 in sync mode.

``tests.settings`` sets ``Q_CLUSTER["sync"]``: ``async_task`` runs the task at once, in this
process, through django-q2's own worker and monitor, and saves a ``Task`` row as a cluster
would. Where a test needs tasks to stay queued, it turns sync mode off and the ORM broker
keeps them in its table until the test runs them.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta

import django_q.tasks
import pytest
from django.test import override_settings
from django.utils import timezone
from django_q.models import OrmQ, Task
from django_q.tasks import async_task

from hsq_refunds import tasks
from hsq_refunds.models import Refund

pytestmark = pytest.mark.django_db


def statuses(ids: list[int]) -> set[str]:
    return set(Refund.objects.filter(id__in=ids).values_list("status", flat=True))


def trans_nos(ids: list[int]) -> list[str]:
    return list(Refund.objects.filter(id__in=ids).values_list("trans_no", flat=True))


def assert_no_claims_left() -> None:
    assert not Refund.objects.exclude(claim_token="").exists()
    assert not Refund.objects.filter(claimed_until__isnull=False).exists()


def batch_tasks(group: str) -> list[Task]:
    return list(Task.objects.filter(group=group, func=tasks.BATCH_TASK))


def test_a_small_due_set_is_synced_inline(configure, sandbox, make_refunds):
    configure(TASK_BATCH_SIZE=10)
    due = make_refunds(6, "D")
    later = make_refunds(3, "L", due=False)

    result = tasks.sync_due_refunds()

    assert result["batches"] == 0
    assert result["group"] is None
    assert result["report"]["queried"] == 6
    assert result["report"]["by_status"] == {"SUCCESS": 6}
    assert statuses(due) == {"SUCCESS"}
    assert statuses(later) == {"UNKNOWN"}
    assert sandbox.query_counts() == dict.fromkeys(trans_nos(due), 1)
    assert not Task.objects.filter(func=tasks.BATCH_TASK).exists()


def test_a_large_due_set_is_fanned_out_in_batches(configure, sandbox, make_refunds):
    configure(TASK_BATCH_SIZE=10)
    due = make_refunds(35, "D")
    later = make_refunds(4, "L", due=False)

    result = tasks.sync_due_refunds()

    assert result["batches"] == 4
    assert result["queued"] == 35
    assert result["report"] is None
    assert statuses(due) == {"SUCCESS"}
    assert statuses(later) == {"UNKNOWN"}
    assert sandbox.query_counts() == dict.fromkeys(trans_nos(due), 1)
    batches = batch_tasks(result["group"])
    assert len(batches) == 4
    assert all(task.success for task in batches)
    assert sorted(task.result["refunds"] for task in batches) == [5, 10, 10, 10]
    assert sum(task.result["queried"] for task in batches) == 35
    assert {task.result["pid"] for task in batches} == {os.getpid()}
    assert_no_claims_left()


def test_the_scheduled_cycle_runs_as_a_django_q_task(configure, sandbox, make_refunds):
    configure(TASK_BATCH_SIZE=5)
    due = make_refunds(12, "D")

    task_id = async_task(tasks.CYCLE_TASK)

    cycle = Task.objects.get(id=task_id)
    assert cycle.success, cycle.result
    assert cycle.result["batches"] == 3
    assert statuses(due) == {"SUCCESS"}
    assert set(sandbox.query_counts().values()) == {1}


def test_a_cycle_does_not_queue_again_what_an_earlier_cycle_queued(
    configure, sandbox, make_refunds, queued
):
    configure(TASK_BATCH_SIZE=10)
    due = make_refunds(25, "D")

    first = tasks.sync_due_refunds()
    assert first["batches"] == 3
    assert OrmQ.objects.count() == 3
    assert not Refund.objects.filter(id__in=due, claimed_until__isnull=True).exists()

    second = tasks.sync_due_refunds()  # the workers have not got to the batches yet
    assert second["batches"] == 0
    assert second["report"]["queried"] == 0
    assert OrmQ.objects.count() == 3
    assert sandbox.query_counts() == {}

    results = queued()
    assert sum(result["queried"] for result in results) == 25
    assert statuses(due) == {"SUCCESS"}
    assert sandbox.query_counts() == dict.fromkeys(trans_nos(due), 1)
    assert_no_claims_left()


def test_a_batch_whose_lease_ran_out_is_queued_again_and_the_old_task_does_nothing(
    configure, sandbox, make_refunds, queued
):
    configure(TASK_BATCH_SIZE=10)
    due = make_refunds(20, "D")
    tasks.sync_due_refunds()
    old_tokens = set(Refund.objects.values_list("claim_token", flat=True))
    # The tasks were lost, or the workers are far behind: the lease runs out.
    Refund.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))

    again = tasks.sync_due_refunds()

    assert again["batches"] == 2
    assert old_tokens.isdisjoint(Refund.objects.values_list("claim_token", flat=True))
    results = queued()  # the two old tasks first, then the two new ones
    assert [result["refunds"] for result in results] == [0, 0, 10, 10]
    assert statuses(due) == {"SUCCESS"}
    assert sandbox.query_counts() == dict.fromkeys(trans_nos(due), 1)


def test_a_batch_skips_refunds_that_are_no_longer_due(configure, sandbox, make_refunds, queued):
    configure(TASK_BATCH_SIZE=5)
    due = make_refunds(8, "D")
    tasks.sync_due_refunds()
    # Someone postponed two refunds while their batch waited in the queue.
    postponed = due[:2]
    Refund.objects.filter(id__in=postponed).update(
        next_query_at=timezone.now() + timedelta(hours=1)
    )

    results = queued()

    assert sum(result["refunds"] for result in results) == 6
    assert statuses(postponed) == {"UNKNOWN"}
    assert set(sandbox.query_counts()) == set(trans_nos(due[2:]))
    assert_no_claims_left()


def test_refunds_of_a_batch_the_broker_refuses_are_freed_at_once(
    configure, sandbox, make_refunds, monkeypatch
):
    configure(TASK_BATCH_SIZE=5)
    make_refunds(12, "D")

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(django_q.tasks, "async_task", broker_down)
    with pytest.raises(ConnectionError):
        tasks.sync_due_refunds()

    assert_no_claims_left()
    assert sandbox.query_counts() == {}


def test_the_queued_lease_covers_the_engine_lease_and_the_broker_retry(configure):
    configure(CLAIM_LEASE=30)
    with override_settings(Q_CLUSTER={"timeout": 240, "retry": 300}):
        assert tasks.queued_lease() == timedelta(seconds=300)
    configure(CLAIM_LEASE=900)
    with override_settings(Q_CLUSTER={"timeout": 240, "retry": 300}):
        assert tasks.queued_lease() == timedelta(seconds=900)
    configure(CLAIM_LEASE=30)
    with override_settings(Q_CLUSTER={"orm": "default"}):  # django-q2's default retry: 60
        assert tasks.queued_lease() == timedelta(seconds=60)


def test_queue_refresh_queries_the_given_refunds_due_or_not(configure, sandbox, make_refunds):
    configure(TASK_BATCH_SIZE=4)
    chosen = make_refunds(5, "D") + make_refunds(5, "L", due=False)
    Refund.objects.filter(id=chosen[0]).update(status="SUCCESS", next_query_at=None)
    bystanders = make_refunds(3, "B")

    group = tasks.queue_refresh(chosen).group

    batches = batch_tasks(group)
    assert len(batches) == math.ceil(10 / 4)
    assert sum(task.result["queried"] for task in batches) == 10
    assert statuses(chosen) == {"SUCCESS"}
    assert statuses(bystanders) == {"UNKNOWN"}
    assert sandbox.query_counts() == dict.fromkeys(trans_nos(chosen), 1)


def test_queue_refresh_only_queues_when_the_cluster_is_not_in_sync_mode(
    configure, sandbox, make_refunds, queued
):
    configure(TASK_BATCH_SIZE=3)
    chosen = make_refunds(7, "D")

    group = tasks.queue_refresh(chosen).group

    assert OrmQ.objects.count() == 3
    assert sandbox.query_counts() == {}
    assert {row.task["group"] for row in OrmQ.objects.all()} == {group}
    queued()
    assert statuses(chosen) == {"SUCCESS"}


def test_cluster_configured():
    assert tasks.cluster_configured()
    with override_settings(Q_CLUSTER={}):
        assert not tasks.cluster_configured()


def test_cluster_configured_needs_django_q_installed(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_q"]
    assert not tasks.cluster_configured()
