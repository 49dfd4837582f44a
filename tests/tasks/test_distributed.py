"""A real distributed run: two ``manage.py qcluster`` processes, Redis, PostgreSQL, the sandbox.

The test process runs the sandbox gateway (with latency, so that the work takes a while and
spreads) and holds the due refunds in its PostgreSQL test database. Two clusters of several
workers each read one Redis queue. A child process queues one scheduled cycle; the cycle fans
the refunds out in batches, and both clusters must take part, with no refund asked twice.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest
from django_q.models import Task

from hsq_refunds.models import Refund, RefundQuery
from tests.processes import child_env
from tests.services import ServiceUnavailable, ensure_redis
from tests.tasks.cluster import run_cycle, running_clusters, wait_for_batches

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(240),
]

REFUNDS = 2000
BATCH_SIZE = 50
CLUSTERS = 2
WORKERS = 4
DEADLINE = 180  # seconds for the whole run; it takes a small fraction of that here


@pytest.fixture
def redis_url() -> str:
    try:
        return ensure_redis()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def cluster_env(redis_url) -> Iterator[dict[str, str]]:
    """Environment of the qcluster processes: the test's database, a queue of their own."""
    name = f"hsq_refunds_test_{uuid.uuid4().hex[:12]}"
    yield {
        "DJANGO_SETTINGS_MODULE": "tests.tasks.cluster_settings",
        "HSQ_TEST_REDIS_URL": redis_url,
        "HSQ_TEST_Q_NAME": name,
        "HSQ_TEST_Q_WORKERS": str(WORKERS),
    }
    import redis

    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        client.delete(f"django_q:{name}:q")


def test_two_clusters_share_the_due_refunds(
    transactional_db, configure, sandbox, make_refunds, cluster_env, tmp_path
):
    configure(TASK_BATCH_SIZE=BATCH_SIZE, CONCURRENCY=8)
    sandbox.set_fault("latency", seconds=0.05)
    ids = make_refunds(REFUNDS, "C")
    env = child_env(cluster_env)
    deadline = time.monotonic() + DEADLINE

    with running_clusters(env, tmp_path, CLUSTERS, deadline) as clusters:
        cycle = run_cycle(cluster_env, clusters, deadline)
        assert cycle.success, cycle.result
        group, batches = cycle.result["group"], cycle.result["batches"]
        assert batches == REFUNDS // BATCH_SIZE
        assert cycle.result["queued"] == REFUNDS

        wait_for_batches(group, batches, clusters, deadline)
        processes = [cluster.pids() for cluster in clusters]

    # Every refund synced, each asked exactly once.
    assert set(Refund.objects.filter(id__in=ids).values_list("status", flat=True)) == {"SUCCESS"}
    counts = sandbox.query_counts()
    assert len(counts) == REFUNDS
    assert set(counts.values()) == {1}
    assert RefundQuery.objects.count() == REFUNDS
    assert not Refund.objects.exclude(claim_token="").exists()

    # Every batch succeeded, and both clusters did part of the work.
    results = [task.result for task in Task.objects.filter(group=group)]
    assert all(task.success for task in Task.objects.filter(group=group))
    assert sum(result["refunds"] for result in results) == REFUNDS
    assert sum(result["queried"] for result in results) == REFUNDS
    work = [sum(r["refunds"] for r in results if r["pid"] in pids) for pids in processes]
    assert all(share > 0 for share in work), f"refunds synced per cluster: {work}"
    assert sum(work) == REFUNDS
