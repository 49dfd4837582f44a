"""Several ``sync_refunds`` processes at once, and one killed half-way (real child processes)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from django.utils import timezone

from hsq_refunds.models import Refund, RefundQuery
from tests.processes import REPO, child_env, manage_argv, run_manage

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        manage_argv("sync_refunds", *args),
        env=child_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.postgres
def test_three_runs_at_once_query_each_refund_exactly_once(refunds, sandbox, configure):
    configure(CHUNK_SIZE=40)
    trans_nos = [f"C{i:03d}" for i in range(300)]
    refunds([{"transNo": t} for t in trans_nos])
    # Slow answers, so that the three runs overlap for a good while.
    sandbox.set_fault("latency", seconds=0.02)

    runs = [start("--json", "--concurrency", "8") for _ in range(3)]
    outputs = [run.communicate(timeout=240) for run in runs]

    for run, (_out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
    reports = [json.loads(out) for out, _err in outputs]
    assert sandbox.query_counts() == dict.fromkeys(trans_nos, 1)
    assert sum(report["queried"] for report in reports) == 300
    assert Refund.objects.filter(status="SUCCESS").count() == 300
    assert RefundQuery.objects.count() == 300
    assert not Refund.objects.exclude(claim_token="").exists()


def test_a_run_killed_half_way_leaves_nothing_stuck(refunds, sandbox, configure):
    configure(CLAIM_LEASE=2)
    trans_nos = [f"K{i:02d}" for i in range(40)]
    refunds([{"transNo": t} for t in trans_nos])
    sandbox.set_fault("latency", seconds=0.3)

    run = start("--concurrency", "4")
    deadline = time.monotonic() + 120
    while Refund.objects.filter(query_count__gt=0).count() < 8:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.communicate()

    # Half-way: some refunds written, some claimed by the dead run, the rest untouched.
    written = set(Refund.objects.filter(query_count__gt=0).values_list("trans_no", flat=True))
    leases = list(Refund.objects.exclude(claim_token="").values_list("claimed_until", flat=True))
    assert 8 <= len(written) < 40
    assert leases, "the killed run held no claims"
    assert RefundQuery.objects.count() == len(written)  # state and audit row go together

    # Once the leases have run out, the next run syncs everything.
    while timezone.now() <= max(leases):
        time.sleep(0.1)
    sandbox.clear_faults()
    done = run_manage(["sync_refunds", "--json"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["queried"] == 40 - len(written)

    assert Refund.objects.filter(status="SUCCESS").count() == 40
    assert not Refund.objects.exclude(claim_token="").exists()
    assert RefundQuery.objects.count() == 40
    counts = sandbox.query_counts()
    assert set(counts) == set(trans_nos)
    # What the killed run wrote is not asked again.
    assert all(counts[t] == 1 for t in written)
