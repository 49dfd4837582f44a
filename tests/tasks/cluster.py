"""``manage.py qcluster`` children that run one scheduled cycle: the distributed tests' driver.

:func:`running_clusters` starts the clusters and stops them however the block ends;
:func:`run_cycle` queues one cycle from a child process and waits until a cluster has run it;
:func:`wait_for_batches` waits until the cycle's batches are done and no refund is due.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.utils import timezone
from django_q.models import Task

from hsq_refunds import tasks
from hsq_refunds.models import Refund
from tests.processes import QCluster, run_manage


def wait_for(
    what: str, condition: Callable[[], bool], clusters: list[QCluster], deadline: float
) -> None:
    """Until ``condition()``; fail if a cluster exits first or ``deadline`` (monotonic) passes."""
    while not condition():
        for cluster in clusters:
            tail = cluster.exited()
            if tail is not None:
                pytest.fail(f"a cluster exited early:\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.25)


@contextmanager
def running_clusters(
    env: Mapping[str, str], folder: Path, count: int, deadline: float
) -> Iterator[list[QCluster]]:
    """``count`` clusters started with ``env`` (logs ``cluster<n>.log`` in ``folder``), running."""
    clusters: list[QCluster] = []
    try:
        for number in range(count):
            clusters.append(QCluster(env, folder / f"cluster{number}.log"))
        wait_for(
            "the clusters to start", lambda: all(c.running() for c in clusters), clusters, deadline
        )
        yield clusters
    finally:
        for cluster in clusters:
            cluster.stop()


def run_cycle(env: Mapping[str, str], clusters: list[QCluster], deadline: float) -> Task:
    """Queue one scheduled cycle from a child process with ``env``; its ``Task`` once run."""
    queued = run_manage(
        [
            "shell",
            "-c",
            f"from django_q.tasks import async_task; print(async_task({tasks.CYCLE_TASK!r}))",
        ],
        env=env,
    )
    assert queued.returncode == 0, queued.stderr
    cycle_id = queued.stdout.strip().splitlines()[-1]

    wait_for("the cycle", lambda: Task.objects.filter(id=cycle_id).exists(), clusters, deadline)
    return Task.objects.get(id=cycle_id)


def wait_for_batches(group: str, batches: int, clusters: list[QCluster], deadline: float) -> None:
    """Until no refund is due and all ``batches`` tasks of ``group`` have a result."""

    def done() -> bool:
        due = Refund.objects.filter(next_query_at__lte=timezone.now()).exists()
        return not due and Task.objects.filter(group=group).count() == batches

    wait_for("every batch", done, clusters, deadline)
