"""Speedup of the django-q2 sync from 1 to 2 to 4 workers (Redis broker, PostgreSQL, sandbox).

For each worker count K: starts ``python -m django qcluster`` with K workers (settings
``tests.tasks.cluster_settings``: Redis broker, this bench's database), seeds N due refunds,
runs one scheduled cycle (``hsq_refunds.tasks.sync_due_refunds``, called here: it claims the
due refunds in batches of ``TASK_BATCH_SIZE`` and queues one task per batch) and measures until
no refund is due any more; then stops the cluster. Every batch queries with the same
``CONCURRENCY``, so the speedup measures the workers alone.

    .venv/bin/python bench/scale_workers.py [-n 2000] [--latency 0.1] [--workers 1,2,4]
        [--concurrency 4] [--batch-size 50]

The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from _common import (
    SandboxProcess,
    Targets,
    bench_database,
    django_env,
    due_count,
    machine,
    print_machine,
    print_summary,
    seed_due_refunds,
    setup_django,
)

from tests.processes import QCluster

SETTINGS = "tests.tasks.cluster_settings"
SPEEDUP_TARGET = 3.5
START_TIMEOUT = 60.0


class Cluster(QCluster):
    """A qcluster for one measurement, its log in a temporary file."""

    def __init__(self, env: dict[str, str]) -> None:
        log = Path(tempfile.mkstemp(prefix="hsq_refunds_bench_qcluster_", suffix=".log")[1])
        super().__init__(env, log)

    def wait_running(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.running():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"qcluster did not start; see {self.log}")
            time.sleep(0.2)

    def check_alive(self) -> None:
        tail = self.exited()
        if tail is not None:
            raise RuntimeError(f"qcluster exited early:\n{tail}")

    def cpu_seconds(self) -> float:
        """CPU time of the cluster's processes (the command, its sentinel and workers)."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    def stop(self) -> None:
        super().stop()
        self.log.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="due refunds per worker count (2000)")
    parser.add_argument(
        "--latency", type=float, default=0.1, help="sandbox answer delay, seconds (0.1)"
    )
    parser.add_argument("--workers", default="1,2,4", help="worker counts to run (1,2,4)")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="CONCURRENCY of every batch's sync (4)"
    )
    parser.add_argument("--batch-size", type=int, default=50, help="TASK_BATCH_SIZE (50)")
    parser.add_argument(
        "--timeout", type=float, default=240, help="seconds allowed per worker count (240)"
    )
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.workers.split(",")]

    from tests.services import ensure_redis

    host = machine()
    queue = {
        "HSQ_TEST_REDIS_URL": ensure_redis(),
        "HSQ_TEST_Q_NAME": f"hsq_bench_{uuid.uuid4().hex}",
    }
    os.environ.update(queue)
    rows = []
    with SandboxProcess(latency=args.latency) as sandbox, bench_database("postgres") as database:
        # One cycle takes every due refund: the figure is the workers' speed, not the bound
        # CYCLE_LIMIT puts on a cycle (computed from the interval, rate and concurrency).
        hsq = sandbox.settings(
            CONCURRENCY=args.concurrency, TASK_BATCH_SIZE=args.batch_size, CYCLE_LIMIT=args.n
        )
        setup_django(database, hsq, settings_module=SETTINGS)
        logging.getLogger("django-q").setLevel(logging.WARNING)  # one line per queued task
        print_machine(host)
        print(
            f"scale_workers on PostgreSQL + Redis: {args.n} due refunds per worker count, sandbox "
            f"latency {args.latency * 1000:.0f} ms, batches of {args.batch_size}, CONCURRENCY "
            f"{args.concurrency} per batch",
            flush=True,
        )
        env = {**os.environ, **django_env(database, hsq, SETTINGS), **queue}
        try:
            for workers in counts:
                sandbox.add_successes(seed_due_refunds(args.n, prefix=f"W{workers}-"))
                rows.append(_measure(env, workers, args))
        finally:
            _drop_queue(queue)
    return _report(rows, args, host)


def _measure(env: dict[str, str], workers: int, args: argparse.Namespace) -> dict[str, Any]:
    from hsq_refunds.models import Refund
    from hsq_refunds.tasks import sync_due_refunds

    cluster = Cluster({**env, "HSQ_TEST_Q_WORKERS": str(workers)})
    try:
        cluster.wait_running()
        cpu = cluster.cpu_seconds()
        started = time.perf_counter()
        cycle = sync_due_refunds()
        deadline = time.monotonic() + args.timeout
        while due_count():
            cluster.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers: refunds still due after {args.timeout} s")
            time.sleep(0.05)
        wall = time.perf_counter() - started
        cpu = cluster.cpu_seconds() - cpu
    finally:
        cluster.stop()
    synced = Refund.objects.filter(trans_no__startswith=f"W{workers}-", status="SUCCESS").count()
    ideal = args.n * args.latency / (workers * args.concurrency)
    row = {
        "workers": workers,
        "batches": cycle["batches"],
        "synced": synced,
        "wall_s": wall,
        "ideal_s": ideal,
        "efficiency": ideal / wall,
        "refunds_per_s": synced / wall,
        "cluster_cpu_ms_per_refund": cpu * 1000 / max(synced, 1),
    }
    print(
        f"  {workers} worker(s): {synced}/{args.n} synced in {cycle['batches']} batches, "
        f"wall {wall:.2f} s (ideal {ideal:.2f} s, efficiency {ideal / wall:.3f}), "
        f"{row['refunds_per_s']:.1f} refunds/s, cluster CPU {row['cluster_cpu_ms_per_refund']:.3f}"
        " ms/refund",
        flush=True,
    )
    return row


def _drop_queue(queue: dict[str, str]) -> None:
    import redis

    with contextlib.closing(redis.Redis.from_url(queue["HSQ_TEST_REDIS_URL"])) as client:
        client.delete(f"django_q:{queue['HSQ_TEST_Q_NAME']}:q")


def _report(rows: list[dict[str, Any]], args: argparse.Namespace, host: dict[str, Any]) -> int:
    base = rows[0]["refunds_per_s"] or math.nan
    print(f"{'workers':>8} {'wall s':>8} {'refunds/s':>10} {'efficiency':>11} {'speedup':>8}")
    for row in rows:
        row["speedup"] = row["refunds_per_s"] / base
        print(
            f"{row['workers']:>8} {row['wall_s']:>8.2f} {row['refunds_per_s']:>10.1f} "
            f"{row['efficiency']:>11.3f} {row['speedup']:>7.2f}x",
            flush=True,
        )
    targets = Targets()
    by_workers = {row["workers"]: row for row in rows}
    if 1 in by_workers and 4 in by_workers:
        speedup = by_workers[4]["refunds_per_s"] / (by_workers[1]["refunds_per_s"] or math.nan)
        targets.check(
            "speedup",
            f"speedup from 1 to 4 workers >= {SPEEDUP_TARGET:g}x",
            speedup >= SPEEDUP_TARGET,
            f"{speedup:.2f}x",
        )
    else:
        print("target: speedup from 1 to 4 workers: not measured (give --workers with 1 and 4)")
    print_summary(
        {
            "benchmark": "scale_workers",
            "n": args.n,
            "latency_s": args.latency,
            "concurrency": args.concurrency,
            "batch_size": args.batch_size,
            **host,
            "runs": rows,
            "targets": targets.results,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
