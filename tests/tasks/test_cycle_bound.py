"""One scheduled cycle, and one bulk refresh in the admin, queue at most ``CYCLE_LIMIT`` refunds.

django-q2's sync mode is off here: tasks stay in the ORM broker's table, where the test reads
what each cycle queued before it runs them as a worker would.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone, translation
from django_q.models import OrmQ

from hsq_refunds import tasks
from hsq_refunds.models import Refund
from tests.admin.conftest import message_texts, run_action

pytestmark = pytest.mark.django_db

LIMIT, BATCH, DUE = 250, 100, 600


def queued_batches() -> list[list[int]]:
    """The refund ids of each batch task waiting in the queue, oldest task first."""
    return [
        list(row.task["args"][0])
        for row in OrmQ.objects.order_by("id")
        if row.task["func"] == tasks.BATCH_TASK
    ]


@pytest.fixture
def backlog(configure, sandbox, make_refunds) -> list[int]:
    """600 due refunds, the highest ids due longest: their ids, oldest due first."""
    configure(CYCLE_LIMIT=LIMIT, TASK_BATCH_SIZE=BATCH)
    ids = make_refunds(DUE, "B")
    now = timezone.now()
    for age, refund_id in enumerate(ids):
        Refund.objects.filter(id=refund_id).update(
            next_query_at=now - timedelta(minutes=1, seconds=age)
        )
    return list(reversed(ids))


def test_a_cycle_queues_at_most_cycle_limit_oldest_due_first(backlog, sandbox, queued):
    first = tasks.sync_due_refunds()
    first_batches = queued_batches()
    second = tasks.sync_due_refunds()  # the workers have not started yet
    second_batches = queued_batches()[len(first_batches) :]
    third = tasks.sync_due_refunds()

    assert (first["batches"], first["queued"]) == (3, LIMIT)
    assert [len(batch) for batch in first_batches] == [100, 100, 50]
    assert [i for batch in first_batches for i in batch] == backlog[:LIMIT]
    assert (second["batches"], second["queued"]) == (3, LIMIT)
    assert [len(batch) for batch in second_batches] == [100, 100, 50]
    assert [i for batch in second_batches for i in batch] == backlog[LIMIT : 2 * LIMIT]
    # The last hundred are one batch's worth: the cycle syncs them itself.
    assert third["batches"] == 0
    assert third["report"]["queried"] == DUE - 2 * LIMIT
    assert sandbox.query_counts() == dict.fromkeys(trans_nos(backlog[2 * LIMIT :]), 1)

    results = queued()
    assert sum(result["queried"] for result in results) == 2 * LIMIT
    assert sandbox.query_counts() == dict.fromkeys(trans_nos(backlog), 1)
    assert set(Refund.objects.values_list("status", flat=True)) == {"SUCCESS"}
    assert not Refund.objects.exclude(claim_token="").exists()
    assert tasks.sync_due_refunds()["report"]["queried"] == 0


def test_a_cycle_limit_below_the_batch_size_bounds_the_inline_sync(
    configure, sandbox, make_refunds
):
    configure(CYCLE_LIMIT=5, TASK_BATCH_SIZE=10)
    ids = make_refunds(8, "S")

    first = tasks.sync_due_refunds()
    second = tasks.sync_due_refunds()

    assert first["report"]["queried"] == 5
    assert second["report"]["queried"] == 3
    assert sandbox.query_counts() == dict.fromkeys(trans_nos(ids), 1)


def test_queue_refresh_queues_cycle_limit_and_leaves_the_rest(
    configure, sandbox, make_refunds, queued
):
    configure(CYCLE_LIMIT=5, TASK_BATCH_SIZE=2)
    ids = make_refunds(8, "Q", due=False)

    result = tasks.queue_refresh([*ids, ids[0]])

    assert result.queued == tuple(ids[:5])
    assert result.left == tuple(ids[5:])
    assert queued_batches() == [ids[0:2], ids[2:4], ids[4:5]]
    assert {row.task["group"] for row in OrmQ.objects.all()} == {result.group}
    assert tasks.queue_refresh(ids[5:]).group != result.group
    assert queued_batches()[3:] == [ids[5:7], ids[7:8]]


def test_the_admin_bulk_refresh_queues_cycle_limit_and_says_how_many_are_left(
    backlog, sandbox, admin_client, queued
):
    """Run again on the same selection, the action takes the refunds queried least recently:
    in three rounds every selected refund is refreshed, none twice before all once."""
    selection = [SimpleNamespace(pk=refund_id) for refund_id in backlog]
    rounds = []
    for _round in range(3):
        response = run_action(admin_client, "refresh_status", selection)
        rounds.append((message_texts(response), queued_batches()))
        queued()  # the workers refresh what was queued before the action is run again

    for messages, batches in rounds:
        assert [len(batch) for batch in batches] == [100, 100, 50]
        assert [level for level, _text in messages] == ["info", "warning"]
        assert messages[0][1].startswith("250 refunds are queued for a refresh in the background")
        assert messages[1][1].startswith(
            "350 more selected refunds were left for later: one background refresh queues at "
            "most 250 refunds. Run this action again on the same selection"
        )
    first, second, third = ([i for batch in batches for i in batch] for _m, batches in rounds)
    assert len(set(first + second)) == 2 * LIMIT
    assert set(first + second + third[:100]) == set(backlog)  # the rest first, in round three
    assert set(third[100:]) <= set(first)  # then those refreshed longest ago
    counts = sandbox.query_counts()
    assert len(counts) == DUE
    assert sum(counts.values()) == 3 * LIMIT


def test_a_selection_within_cycle_limit_is_queued_whole(
    configure, sandbox, make_refunds, admin_client, queued
):
    configure(CYCLE_LIMIT=30, TASK_BATCH_SIZE=10, ADMIN_SYNC_LIMIT=5)
    ids = make_refunds(30, "W")

    response = run_action(admin_client, "refresh_status", [SimpleNamespace(pk=i) for i in ids])

    ((level, text),) = message_texts(response)
    assert level == "info"
    assert text.startswith("30 refunds are queued for a refresh in the background")
    assert sorted(i for batch in queued_batches() for i in batch) == ids


@pytest.fixture
def back_in_english():
    """The locale middleware leaves the request's language active in this thread."""
    yield
    translation.activate("en")


def test_the_admin_says_so_in_chinese(backlog, admin_client, queued, back_in_english):
    selection = [SimpleNamespace(pk=refund_id) for refund_id in backlog]

    response = run_action(
        admin_client, "refresh_status", selection, headers={"accept-language": "zh-CN,zh;q=0.9"}
    )

    (_info, (level, text)) = message_texts(response)
    assert level == "warning"
    assert text.startswith("另有 350 笔所选退款留待稍后处理：一次后台刷新最多排队 250 笔退款。")


def trans_nos(ids: list[int]) -> list[str]:
    return list(Refund.objects.filter(id__in=ids).values_list("trans_no", flat=True))
