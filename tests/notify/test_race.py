"""HSQ's notifications racing the poller, on PostgreSQL: the newer answer wins, once.

200 refunds are PROCESSING, at the app and at the sandbox. A sync asks about all of them at once
and the sandbox holds every answer (``latency``); while those answers, all PROCESSING, are on
their way back, a SUCCESS notification for each refund is POSTed to the view over real HTTP
from a thread pool. Every refund ends SUCCESS with exactly one ``refund_succeeded``, sent by the
server that took the notification; the sync's answers, read before the notifications and older
than them, are recorded as ``superseded`` audit rows and applied nowhere.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection

from hsq_refunds import signals
from hsq_refunds.models import Refund, RefundQuery
from hsq_refunds.sync import SyncReport, sync_refunds

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REFUNDS = 200
#: How long the sandbox holds each answer (seconds): far longer than 200 notifications take.
LATENCY = 12.0
POSTERS = 16
SYNC_THREAD = "race-sync"


@pytest.fixture
def received():
    """``refund_succeeded`` and ``refund_status_changed`` from every thread, as
    ``(signal, transNo, thread name)``."""
    log: list[tuple[str, str, str]] = []
    lock = threading.Lock()
    hooks = []
    for name in ("refund_succeeded", "refund_status_changed"):
        signal = getattr(signals, name)

        def receiver(sender, refund, _name=name, **kwargs):
            with lock:
                log.append((_name, refund.trans_no, threading.current_thread().name))

        signal.connect(receiver, weak=False)
        hooks.append((signal, receiver))
    yield log
    for signal, receiver in hooks:
        signal.disconnect(receiver)


def wait_until(what: str, condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def test_notifications_landing_while_the_sync_waits_win_and_its_answers_are_superseded(
    refunds, sandbox, configure, notification, notify_url, received
):
    configure(READ_TIMEOUT=LATENCY * 4, CLAIM_LEASE=LATENCY * 20)
    trans_nos = [f"NR{i:03d}" for i in range(REFUNDS)]
    refunds(
        [
            {"transNo": t, "status": "PROCESSING", "timeline": [{"status": "PROCESSING"}]}
            for t in trans_nos
        ]
    )
    forms = [notification(t, "SUCCESS") for t in trans_nos]  # signed before the race starts
    sandbox.set_fault("latency", seconds=LATENCY, method="POLYMERIZE_REFUND_QUERY")

    outcome: dict[str, SyncReport | BaseException] = {}

    def run_sync() -> None:
        try:
            outcome["report"] = sync_refunds(concurrency=REFUNDS)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    sync = threading.Thread(target=run_sync, name=SYNC_THREAD)
    sync.start()
    try:
        # Every refund was read and claimed, and its query is waiting at the sandbox.
        wait_until(
            "the sandbox holds a query for every refund",
            lambda: len(sandbox.query_counts()) == REFUNDS or not sync.is_alive(),
        )
        assert sandbox.query_counts() == dict.fromkeys(trans_nos, 1), outcome

        local = threading.local()

        def post(form: dict[str, str]) -> tuple[int, str]:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            reply = local.session.post(notify_url, data=form, timeout=60)
            return reply.status_code, reply.text

        with ThreadPoolExecutor(POSTERS, thread_name_prefix="hsq-notify") as pool:
            replies = list(pool.map(post, forms))
        # The race took place as meant: every notification was recorded while every one of
        # the sync's answers was still on its way (otherwise raise LATENCY on this machine).
        written_by_sync = RefundQuery.objects.filter(source="query").count()
    finally:
        sync.join(LATENCY * 10)
    assert not sync.is_alive(), "the sync did not finish"
    assert written_by_sync == 0, "the sync's answers came back before the notifications landed"
    assert replies == [(200, "SUCCESS")] * REFUNDS
    assert "error" not in outcome, outcome.get("error")

    # Every refund SUCCESS, from its notification, and nothing left claimed or due.
    rows = Refund.objects.filter(trans_no__in=trans_nos)
    assert rows.count() == REFUNDS
    assert set(rows.values_list("status", "final_source", "claim_token")) == {
        ("SUCCESS", "notification", "")
    }
    assert not rows.filter(next_query_at__isnull=False).exists()
    assert not rows.filter(needs_attention=True).exists()
    assert set(rows.values_list("query_count", flat=True)) == {0}  # no query answer applied

    # One refund_succeeded per refund, sent by the server's threads, none by the sync.
    succeeded = Counter(t for name, t, _thread in received if name == "refund_succeeded")
    assert succeeded == dict.fromkeys(trans_nos, 1)
    changed = Counter(t for name, t, _thread in received if name == "refund_status_changed")
    assert changed == dict.fromkeys(trans_nos, 1)
    threads = {thread for _name, _t, thread in received}
    assert not any(thread == SYNC_THREAD or thread.startswith("hsq-sync") for thread in threads)

    # Per refund: the notification applied, the sync's stale PROCESSING answer superseded.
    audit = Counter(
        RefundQuery.objects.filter(refund__trans_no__in=trans_nos).values_list(
            "refund__trans_no", "source", "outcome", "status_seen"
        )
    )
    expected = Counter()
    for t in trans_nos:
        expected[(t, "notification", "ok", "SUCCESS")] = 1
        expected[(t, "query", "superseded", "PROCESSING")] = 1
    assert audit == expected

    report = outcome["report"]
    assert (report.selected, report.skipped) == (REFUNDS, REFUNDS)
    assert not report.outcomes  # not one answer of the sync's was written
    assert sandbox.query_counts() == dict.fromkeys(trans_nos, 1)
