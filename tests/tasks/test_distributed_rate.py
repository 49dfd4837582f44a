"""``RATE_LIMIT`` across real processes: two ``manage.py qcluster`` of three workers each.

Like :mod:`tests.tasks.test_distributed` (Redis broker, PostgreSQL, the sandbox in the test
process), with ``RATE_LIMIT = 20`` shared through a cache on the same Redis server. Six workers
of eight threads each could query far faster than that; the sandbox records when each query
arrives, and in no one-second window does it receive more than the limit and a margin of two
(the limiter's spread allows for a way to the gateway that varies by 0.1 s; a loaded machine
can do worse).
"""

from __future__ import annotations

import bisect
import time

import pytest
from django_q.models import Task

from hsq_refunds.models import Refund, RefundQuery
from hsq_refunds.sandbox import SandboxServer
from tests.processes import child_env
from tests.tasks.cluster import run_cycle, running_clusters, wait_for_batches
from tests.tasks.test_distributed import cluster_env, redis_url  # noqa: F401

REFUNDS = 400
RATE = 20
MARGIN = 2
BATCH_SIZE = 20
CLUSTERS = 2
WORKERS = 3
DEADLINE = 150  # seconds for the whole run; it needs about 22 (20 / 1.1 queries a second)


def most_in_a_second(times: list[float]) -> int:
    """The most arrivals in any window ``[t, t + 1)``."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, start + 1) - index for index, start in enumerate(ordered)),
        default=0,
    )


def test_the_sandbox_records_when_each_query_arrived(sandbox: SandboxServer, configure):
    from hsq_refunds.clients import get_client

    sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
    before = time.time()
    get_client().query_refund("R1")
    get_client().query_refund("R1")
    after = time.time()

    times = sandbox.query_times()
    assert len(times) == 2
    assert before <= times[0] <= times[1] <= after
    assert sandbox.control.query_times() == times
    sandbox.reset()
    assert sandbox.query_times() == []


@pytest.fixture
def rate_env(cluster_env, redis_url) -> dict[str, str]:  # noqa: F811
    """The clusters' environment, with three workers each and the rate counted on Redis."""
    return {**cluster_env, "HSQ_TEST_Q_WORKERS": str(WORKERS), "HSQ_TEST_RATE_CACHE_URL": redis_url}


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(240)
def test_two_clusters_keep_one_rate_limit(
    transactional_db, configure, sandbox, make_refunds, rate_env, tmp_path, capsys
):
    configure(TASK_BATCH_SIZE=BATCH_SIZE, CONCURRENCY=8, RATE_LIMIT=RATE, RATE_LIMIT_CACHE="rate")
    sandbox.set_fault("latency", seconds=0.05)
    ids = make_refunds(REFUNDS, "T")
    env = child_env(rate_env)
    deadline = time.monotonic() + DEADLINE

    with running_clusters(env, tmp_path, CLUSTERS, deadline) as clusters:
        cycle = run_cycle(rate_env, clusters, deadline)
        assert cycle.success, cycle.result
        group, batches = cycle.result["group"], cycle.result["batches"]
        assert (batches, cycle.result["queued"]) == (REFUNDS // BATCH_SIZE, REFUNDS)

        wait_for_batches(group, batches, clusters, deadline)
        processes = [cluster.pids() for cluster in clusters]

    # Every refund synced, each asked exactly once.
    assert set(Refund.objects.filter(id__in=ids).values_list("status", flat=True)) == {"SUCCESS"}
    assert set(sandbox.query_counts().values()) == {1}
    assert RefundQuery.objects.count() == REFUNDS
    results = [task.result for task in Task.objects.filter(group=group)]
    work = [sum(r["refunds"] for r in results if r["pid"] in pids) for pids in processes]
    assert all(share > 0 for share in work), f"refunds synced per cluster: {work}"

    # ... and never faster than the one limit, whichever worker of which cluster asked.
    times = sandbox.query_times()
    assert len(times) == REFUNDS
    peak = most_in_a_second(times)
    with capsys.disabled():
        print(f"\nmost queries the sandbox received in one second: {peak} (RATE_LIMIT {RATE})")
    assert peak <= RATE + MARGIN
