"""A process killed (SIGKILL) half-way through a refund application, at the two seams of
``hsq_refunds.apply``: right after the refund's row is committed and before the request is
sent (``_before_send``), and after the request was sent and before HSQ's answer is written
(``_after_send``).

Either way the row is there, still ``sending``, and holds the order's money; nothing is sent
twice, and the poller settles it without anyone running anything again: it finds at HSQ a refund
whose answer was lost, and flags one that HSQ never received once ``NOT_FOUND_GRACE`` has
passed, without sending its application.

The children share the test's database (``tests/processes.py``), so this runs on SQLite as well
as on PostgreSQL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from hsq_refunds.apply import balance_of
from hsq_refunds.models import Refund
from hsq_refunds.sync import sync_refunds
from tests.processes import REPO, child_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ORDER = "PO-CRASH"
PAID = 5000
AMOUNT = 1200
GRACE = 60


def apply_and_die(seam: str, prefix: str) -> str:
    """Apply for one refund in a child that SIGKILLs itself at ``seam``; its transNo."""
    argv = [sys.executable, "-m", "tests.apply_child", "--kill", seam, "--prefix", prefix]
    argv += ["--orig-trans-no", ORDER, "--orig-amount", str(PAID), "--amount", str(AMOUNT)]
    child = subprocess.run(
        argv, env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stdout, child.stderr)
    assert child.stdout == ""  # it died before it could report anything
    return f"{prefix}000"


def sent(sandbox) -> dict[str, int]:
    return {no: counts["received"] for no, counts in sandbox.application_counts().items()}


def left_behind(trans_no: str) -> Refund:
    """The row the killed process left: committed, still sending, and counted against the
    order, with no answer recorded for it."""
    refund = Refund.objects.get(trans_no=trans_no)
    assert (refund.application, refund.status) == ("sending", "UNKNOWN")
    assert (refund.amount, refund.orig_amount, refund.orig_trans_no) == (AMOUNT, PAID, ORDER)
    assert not refund.queries.exists()
    assert balance_of(refund.merchant_no, ORDER).taken == AMOUNT
    return refund


def test_killed_before_sending_hsq_never_hears_of_it_and_the_poller_flags_it(sandbox, configure):
    configure(NOT_FOUND_GRACE=GRACE)
    trans_no = apply_and_die("before", "RK-B")

    refund = left_behind(trans_no)
    assert refund.apply_attempts == 0
    assert sent(sandbox) == {}

    # Later: the grace period has passed, and the refund's query is due.
    Refund.objects.filter(pk=refund.pk).update(
        applied_at=timezone.now() - timedelta(seconds=GRACE * 5), next_query_at=timezone.now()
    )
    report = sync_refunds()

    assert report.queried == 1
    refund.refresh_from_db()
    assert refund.needs_attention and refund.attention_reason == "not_received"
    assert (refund.application, refund.status, refund.apply_attempts) == ("sending", "UNKNOWN", 0)
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
