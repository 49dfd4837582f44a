"""Two processes applying for refunds of one order at once, on PostgreSQL: never more than paid.

Each child (``tests/apply_child.py``) applies for 25 refunds of 1,000 fen against the same
10,000-fen order, one after the other, and both start together. The order's row lock decides
them one at a time, so exactly ten are accepted whichever process wins each, the forty others
are refused before anything is written or sent, and HSQ receives exactly ten applications.
Each application dawdles inside its transaction, as on a slow database, so that two
applications not decided one after the other would both pass the check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from django.db.models import Sum

from hsq_refunds.models import PaidOrder, Refund
from tests import services
from tests.processes import REPO, child_env

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ORDER = "PO-RACE"
PAID = 10_000
AMOUNT = 1_000
PER_PROCESS = 25
#: Seconds each application waits between adding up the order's refunds and writing its row:
#: without the order's lock, the two processes would then see the same total and both write.
DAWDLE = 0.02


def start_child(prefix: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.apply_child", "--wait", "--prefix", prefix]
    argv += ["--orig-trans-no", ORDER, "--orig-amount", str(PAID), "--amount", str(AMOUNT)]
    argv += ["--count", str(PER_PROCESS), "--dawdle", str(DAWDLE)]
    return subprocess.Popen(
        argv,
        env=child_env(),
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def server_log() -> Path:
    return services.PG_DIR / "server.log"


def test_two_processes_at_once_never_refund_more_than_was_paid(sandbox, merchant_no):
    log_start = server_log().stat().st_size if server_log().exists() else 0
    children = [start_child("RA"), start_child("RB")]
    try:
        for child in children:  # both have Django, a connection and the keys ready
            line = child.stdout.readline()
            assert line.strip() == "ready", child.communicate(timeout=60)
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=240) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    outcomes = []
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        outcomes += json.loads(out)
    assert len(outcomes) == 2 * PER_PROCESS
    refused = [o["transNo"] for o in outcomes if o.get("refused")]
    accepted = [o["transNo"] for o in outcomes if not o.get("refused")]
    assert len(refused) == 40 and len(accepted) == 10
    assert all(o["application"] == "accepted" for o in outcomes if not o.get("refused"))

    rows = Refund.objects.filter(merchant_no=merchant_no, orig_trans_no=ORDER)
    live = rows.exclude(status="FAIL")
    assert sorted(live.values_list("trans_no", flat=True)) == sorted(accepted)
    assert rows.count() == 10  # a refused application writes nothing
    assert live.aggregate(total=Sum("amount"))["total"] == PAID
    assert set(live.values_list("application", "apply_attempts")) == {("accepted", 1)}
    assert PaidOrder.objects.get(merchant_no=merchant_no, orig_trans_no=ORDER).amount == PAID

    counts = sandbox.application_counts()
    assert sorted(counts) == sorted(accepted)
    assert Counter(c["received"] for c in counts.values()) == {1: 10}
    assert Counter(c["accepted"] for c in counts.values()) == {1: 10}

    # The order's row is created with ON CONFLICT DO NOTHING: no duplicate-key error in the
    # server's log for a monitoring tool to find (the two first applications raced).
    if server_log().exists():
        with server_log().open("rb") as log:
            log.seek(log_start)
            assert b"hsq_paid_order_uniq" not in log.read()
