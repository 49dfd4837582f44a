"""A process killed (SIGKILL) half-way through a refund application, at the seams of
``hsq_refunds.apply``: right after the refund's row is committed and before its send is counted
(``_committed``), once the send is counted and before the request goes out (``_before_send``),
and after the request was sent and before HSQ's answer is written (``_after_send``).

Killed before its send is counted, the row is ``queued``, provably unsent: the next sync run
sends it, once. Killed after, the row is ``sending`` and may have reached HSQ: it is never sent
again by the app, and the poller settles it: it finds at HSQ a refund whose answer was lost, and
flags one that HSQ never received once ``NOT_FOUND_GRACE`` has passed. Either way the row holds
the order's money.

The children share the test's database (``tests/processes.py``), so this runs on SQLite as well
as on PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from hsq_refunds.apply import balance_of
from hsq_refunds.models import PaidOrder, Refund
from hsq_refunds.sync import sync_refunds
from tests.processes import REPO, child_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ORDER = "PO-CRASH"
PAID = 5000
AMOUNT = 1200
GRACE = 60


def apply_and_die(seam: str, prefix: str, *, atomic: bool = False) -> str:
    """Apply for one refund in a child that SIGKILLs itself at ``seam``; its transNo."""
    argv = [sys.executable, "-m", "tests.apply_child", "--kill", seam, "--prefix", prefix]
    argv += ["--orig-trans-no", ORDER, "--orig-amount", str(PAID), "--amount", str(AMOUNT)]
    argv += ["--atomic"] if atomic else []
    child = subprocess.run(
        argv, env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stdout, child.stderr)
    assert child.stdout == ""  # it died before it could report anything
    return f"{prefix}000"


def sent(sandbox) -> dict[str, int]:
    return {no: counts["received"] for no, counts in sandbox.application_counts().items()}


def left_behind(trans_no: str, application: str = "sending") -> Refund:
    """The row the killed process left: committed, queued or sending, and counted against the
    order, with no answer recorded for it."""
    refund = Refund.objects.get(trans_no=trans_no)
    assert (refund.application, refund.status) == (application, "UNKNOWN")
    assert (refund.amount, refund.orig_amount, refund.orig_trans_no) == (AMOUNT, PAID, ORDER)
    assert not refund.queries.exists()
    assert balance_of(refund.merchant_no, ORDER).taken == AMOUNT
    return refund


def test_killed_before_sending_hsq_never_hears_of_it_and_the_poller_flags_it(sandbox, configure):
    configure(NOT_FOUND_GRACE=GRACE)
    trans_no = apply_and_die("before", "RK-B")

    refund = left_behind(trans_no)
    assert refund.apply_attempts == 1  # counted: it may have gone out
    assert sent(sandbox) == {}

    # Later: the grace period has passed, and the refund's query is due.
    Refund.objects.filter(pk=refund.pk).update(
        applied_at=timezone.now() - timedelta(seconds=GRACE * 5), next_query_at=timezone.now()
    )
    report = sync_refunds()

    assert report.queried == 1
    refund.refresh_from_db()
    assert refund.needs_attention and refund.attention_reason == "not_received"
    assert (refund.application, refund.status, refund.apply_attempts) == ("sending", "UNKNOWN", 1)
    assert refund.next_query_at is not None  # still asked about: it may yet appear
    assert list(refund.queries.values_list("source", "outcome")) == [("query", "not_found")]
    assert sandbox.query_counts() == {trans_no: 1}
    assert sent(sandbox) == {}  # the poller never applies


def test_killed_after_sending_the_poller_finds_it_at_hsq(sandbox):
    sandbox.configure_apply(balance_seconds=0)  # HSQ finishes it at once
    trans_no = apply_and_die("after", "RK-A")

    refund = left_behind(trans_no)
    assert refund.apply_attempts == 1
    assert sent(sandbox) == {trans_no: 1}

    Refund.objects.filter(pk=refund.pk).update(next_query_at=timezone.now())
    report = sync_refunds()

    assert report.queried == 1
    refund.refresh_from_db()
    assert (refund.status, refund.application, refund.apply_attempts) == ("SUCCESS", "accepted", 1)
    assert refund.trade_no and refund.final_sign and refund.final_source == "query"
    assert not refund.needs_attention and refund.next_query_at is None
    assert list(refund.queries.values_list("source", "outcome")) == [("query", "ok")]
    assert sandbox.query_counts() == {trans_no: 1}
    assert sent(sandbox) == {trans_no: 1}  # sent once, by the process that died


@pytest.mark.parametrize("atomic", [False, True], ids=["autocommit", "atomic"])
def test_killed_after_the_commit_the_next_sync_sends_it_once(sandbox, atomic):
    """Killed between the row's commit (its own, or the caller's ``atomic()``) and the count of
    its send: ``queued``, never sent, and not queried; the next sync run sends it, once."""
    sandbox.configure_apply(balance_seconds=0)
    trans_no = apply_and_die("committed", "RK-Q", atomic=atomic)

    refund = left_behind(trans_no, "queued")
    assert (refund.apply_attempts, refund.next_query_at) == (0, None)
    assert sent(sandbox) == {}

    first = sync_refunds()
    again = sync_refunds()

    refund.refresh_from_db()
    assert sent(sandbox) == {trans_no: 1}
    assert (refund.application, refund.apply_attempts) == ("accepted", 1)
    assert refund.status in ("PROCESSING", "SUCCESS")
    assert first.queried == again.queried == 0  # sent, and its first query not due yet
    assert sandbox.query_counts() == {}


KILLS = 50


def test_fifty_kills_at_random_points_after_the_commit_none_sent_twice_none_left(sandbox):
    """50 applications, each in a process SIGKILLed at a random line between the commit of its
    row and the ``UPDATE`` that counts its send (half of them committed by a caller's
    ``atomic()``): one sync run sends every one, exactly once; the next sends nothing."""
    sandbox.configure_apply(balance_seconds=0)
    argv = [sys.executable, "-m", "tests.apply_child", "--random-kills", str(KILLS)]
    argv += ["--seed", "20", "--prefix", "RK-R", "--orig-trans-no", ORDER]
    argv += ["--orig-amount", str(PAID), "--amount", str(PAID // KILLS)]
    child = subprocess.run(
        argv, env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert child.returncode == 0, child.stderr
    runs = json.loads(child.stdout)["runs"]
    trans_nos = [run["transNo"] for run in runs]
    assert [run["signal"] for run in runs] == [signal.SIGKILL] * KILLS
    assert len({run["point"] for run in runs}) > 10  # killed at many different points
    assert sent(sandbox) == {}
    assert set(Refund.objects.values_list("application", "apply_attempts")) == {("queued", 0)}
    assert balance_of(Refund.objects.first().merchant_no, ORDER).taken == PAID

    sync_refunds()
    sync_refunds()

    assert sent(sandbox) == dict.fromkeys(trans_nos, 1)
    assert set(Refund.objects.values_list("application", "apply_attempts")) == {("accepted", 1)}


@pytest.mark.postgres
def test_sync_runs_at_once_send_each_queued_application_once(sandbox, merchant_no):
    """Four sync runs at once over 40 queued applications: the conditional ``UPDATE`` lets one
    writer send each; none is sent twice, none is left."""
    sandbox.configure_apply(balance_seconds=0)
    trans_nos = [f"RK-S{number:03d}" for number in range(40)]
    PaidOrder.objects.create(merchant_no=merchant_no, orig_trans_no=ORDER, amount=PAID)
    Refund.objects.bulk_create(
        Refund(
            merchant_no=merchant_no,
            trans_no=trans_no,
            orig_trans_no=ORDER,
            orig_amount=PAID,
            amount=100,
            application="queued",
            applied_at=timezone.now(),
            next_query_at=None,
        )
        for trans_no in trans_nos
    )
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(timeout=30)
            sync_refunds()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sent(sandbox) == dict.fromkeys(trans_nos, 1)
    assert set(Refund.objects.values_list("application", "apply_attempts")) == {("accepted", 1)}
