"""Three ``sync_refunds`` processes over the same due refunds, one of them SIGKILLed mid-run.

The killed run leaves claims behind. The two others pass over those refunds; once the lease has
run out, a later run syncs them. In the end every refund is synced exactly once (one audit row,
one recorded query); at the gateway, only a refund the killed run had claimed can have been asked
twice, and then only after its lease ran out.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta

import psutil
import pytest
from django.db.models import Count
from django.utils import timezone

from hsq_refunds.models import Refund, RefundQuery
from tests.processes import REPO, child_env, manage_argv, run_manage

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REFUNDS = 300
#: Long enough that a surviving run renews its claims in time on a loaded machine (with 3 s, one
#: run in a few at load 10 lost a claim to the other survivor, which then asked HSQ again).
LEASE = 6.0
LATENCY = 0.2


def start_sync() -> subprocess.Popen[str]:
    return subprocess.Popen(
        manage_argv("sync_refunds", "--json", "--concurrency", "8"),
        env=child_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def talks_to(process: subprocess.Popen[str], port: int) -> bool:
    """Whether ``process`` has a connection open to the gateway: it has sent its queries."""
    try:
        connections = psutil.Process(process.pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.raddr and c.raddr.port == port for c in connections)


def wait_for(what: str, condition: Callable[[], bool], *watched: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        for process in watched:
            assert process.poll() is None, f"a run ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def claim_tokens() -> set[str]:
    return set(Refund.objects.exclude(claim_token="").values_list("claim_token", flat=True))


def test_a_run_killed_among_others_costs_no_refund_a_second_sync(make_refunds, sandbox, configure):
    configure(CLAIM_LEASE=LEASE, CONNECT_TIMEOUT=0.5, READ_TIMEOUT=1.0, CHUNK_SIZE=50)
    trans_nos = [f"X{index:04d}" for index in range(REFUNDS)]
    make_refunds(trans_nos)
    sandbox.set_fault("latency", seconds=LATENCY)  # every run is mid-flight most of the time

    # The victim starts first, so that its claims can be told apart by their token.
    port = sandbox.port
    victim = start_sync()
    tokens: set[str] = set()

    def victim_queries() -> bool:
        tokens.update(claim_tokens())
        return bool(tokens and sum(sandbox.query_counts().values()) and talks_to(victim, port))

    wait_for("the sandbox counted the victim's first queries", victim_queries, victim)
    (victim_token,) = tokens
    others = [start_sync(), start_sync()]
    wait_for(
        "all three runs query at once",
        lambda: all(talks_to(run, port) for run in others),
        victim,
        *others,
    )
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    held = dict(
        Refund.objects.filter(claim_token=victim_token).values_list("trans_no", "claimed_until")
    )
    assert held, "the killed run held no claims"
    asked_before_kill = {t for t, count in sandbox.query_counts().items() if count}

    for run in others:
        out, err = run.communicate(timeout=240)
        assert run.returncode == 0, err
        assert json.loads(out)["ok"]

    # Once the killed run's lease has run out (the children hold the short one), the next run
    # syncs what it left.
    lease_end = max(held.values())
    assert lease_end <= timezone.now() + timedelta(seconds=LEASE)
    while timezone.now() <= lease_end:
        time.sleep(0.05)
    final = run_manage(["sync_refunds", "--json"])
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["ok"]

    # Every refund synced, exactly once: one recorded query, one audit row, no claim left.
    assert Refund.objects.filter(status="SUCCESS", query_count=1).count() == REFUNDS
    assert not Refund.objects.exclude(claim_token="").exists()
    audits = RefundQuery.objects.values("refund__trans_no").annotate(n=Count("id"))
    assert {row["refund__trans_no"]: row["n"] for row in audits} == dict.fromkeys(trans_nos, 1)

    # At the gateway: once per refund, twice at most for a refund the killed run held (asked
    # by it, then again after its lease), and that second time only after the lease.
    counts = sandbox.query_counts()
    assert set(counts) == set(trans_nos)
    twice = {t for t, count in counts.items() if count == 2}
    assert max(counts.values()) <= 2
    assert twice <= set(held) & asked_before_kill
    assert all(counts[t] == 1 for t in trans_nos if t not in held)
    for trans_no, claimed_until in held.items():
        (audit,) = RefundQuery.objects.filter(refund__trans_no=trans_no)
        assert audit.queried_at > claimed_until, trans_no
