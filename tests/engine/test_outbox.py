"""``apply()`` inside a caller's transaction: the application row is written in that
transaction and sent only once it commits (the transactional outbox). Real HTTP to the sandbox,
on SQLite and PostgreSQL; what the sandbox sees is read from its side, over another database
connection, when the application arrives.

And the one rule for every entry point that writes: inside a caller's ``atomic()`` each either
works or raises ``TransactionManagementError`` saying what to do.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import close_old_connections, connection, connections, transaction
from django.test import Client, override_settings
from django.utils import timezone

from hsq_refunds import apply as apply_module
from hsq_refunds import tasks
from hsq_refunds.models import PaidOrder, Refund
from hsq_refunds.sync import sync_claimed, sync_refund, sync_refunds

from .urls_atomic import ShopError

pytestmark = pytest.mark.django_db(transaction=True)


class Rollback(Exception):
    pass


def apply(trans_no: str, order: str = "PO-OUT", amount: int = 1200) -> Refund:
    return Refund.objects.apply(
        orig_trans_no=order, orig_amount=5000, amount=amount, trans_no=trans_no
    )


def sent(sandbox) -> dict[str, int]:
    return {no: counts["received"] for no, counts in sandbox.application_counts().items()}


@pytest.fixture
def seen_by_the_sandbox(sandbox, monkeypatch) -> list[tuple[str, str, int] | None]:
    """Per application the sandbox receives: the refund's row as another database connection
    reads it at that moment, ``(transNo, application, apply_attempts)``, or ``None`` if that
    connection cannot see it (not committed)."""
    seen: list[tuple[str, str, int] | None] = []
    answer = sandbox._answer_application

    def reading_the_row(fields: Any) -> Any:
        trans_no = (fields or {}).get("signContent", "")
        try:  # the sandbox's handler thread: a database connection of its own
            rows = [
                row
                for row in Refund.objects.values_list("trans_no", "application", "apply_attempts")
                if f'"{row[0]}"' in trans_no
            ]
            seen.append(rows[0] if rows else None)
        finally:
            connection.close()
        return answer(fields)

    monkeypatch.setattr(sandbox, "_answer_application", reading_the_row)
    return seen


# --------------------------------------------------------------------------- apply() in atomic()


def test_a_rolled_back_application_is_neither_sent_nor_kept(sandbox):
    with pytest.raises(Rollback), transaction.atomic():
        refund = apply("RO-1")
        assert (refund.application, refund.apply_attempts) == ("queued", 0)
        raise Rollback

    assert sent(sandbox) == {}
    assert not Refund.objects.exists()
    assert not PaidOrder.objects.exists()


def test_a_committed_application_is_sent_once_after_the_commit(sandbox, seen_by_the_sandbox):
    sandbox.configure_apply(balance_seconds=0)
    with transaction.atomic():
        refund = apply("RO-2")
        assert refund.application == "queued"
        assert sent(sandbox) == {}  # not while the transaction is open

    assert sent(sandbox) == {"RO-2": 1}
    # When the POST arrived, the row was committed, and counted as sent.
    assert seen_by_the_sandbox == [("RO-2", "sending", 1)]
    refund.refresh_from_db()
    assert (refund.application, refund.apply_attempts) == ("accepted", 1)
    assert refund.status in ("PROCESSING", "SUCCESS")
    sync_refunds()
    assert sent(sandbox) == {"RO-2": 1}


def test_a_rolled_back_savepoint_takes_its_application_with_it(sandbox, seen_by_the_sandbox):
    with transaction.atomic():
        with pytest.raises(Rollback), transaction.atomic():
            apply("RO-3")
            raise Rollback
        apply("RO-4")

    assert sent(sandbox) == {"RO-4": 1}
    assert seen_by_the_sandbox == [("RO-4", "sending", 1)]
    assert list(Refund.objects.values_list("trans_no", flat=True)) == ["RO-4"]


def test_outside_a_transaction_it_is_sent_at_once(sandbox, seen_by_the_sandbox):
    refund = apply("RO-5")

    assert (refund.application, refund.apply_attempts) == ("accepted", 1)
    assert seen_by_the_sandbox == [("RO-5", "sending", 1)]


def test_an_order_counts_its_queued_refunds(sandbox):
    """A queued application holds its money like any other: the order's total counts it
    before it is sent, in the same transaction and in others."""
    with transaction.atomic():
        apply("RO-6", amount=3000)
        with pytest.raises(apply_module.RefundRefused):
            apply("RO-7", amount=2500)
    assert sent(sandbox) == {"RO-6": 1}


# --------------------------------------------------------------------------- ATOMIC_REQUESTS


@pytest.fixture
def atomic_requests(monkeypatch):
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    with override_settings(ROOT_URLCONF="tests.engine.urls_atomic"):
        yield Client(raise_request_exception=False)


def test_a_view_that_applies_then_fails_sends_nothing(sandbox, atomic_requests):
    response = atomic_requests.post("/apply-then-fail/", {"order": "PO-V", "trans_no": "RV-1"})

    assert response.status_code == 500
    assert sent(sandbox) == {}
    assert not Refund.objects.exists()


def test_a_view_that_applies_sends_once_and_the_next_sync_finishes_it(
    sandbox, atomic_requests, seen_by_the_sandbox
):
    sandbox.configure_apply(balance_seconds=0.2)  # PROCESSING when applied, then SUCCESS
    response = atomic_requests.post("/apply/", {"order": "PO-V", "trans_no": "RV-2"})

    assert (response.status_code, response.content) == (200, b"RV-2 queued")
    assert sent(sandbox) == {"RV-2": 1}
    assert seen_by_the_sandbox == [("RV-2", "sending", 1)]
    assert Refund.objects.get().status == "PROCESSING"
    time.sleep(0.3)
    Refund.objects.update(next_query_at=timezone.now())
    sync_refunds()
    refund = Refund.objects.get()
    assert (refund.status, refund.application, refund.final_source) == (
        "SUCCESS",
        "accepted",
        "query",
    )
    assert sent(sandbox) == {"RV-2": 1}


def test_the_shops_error_is_its_own(sandbox, atomic_requests):
    client = Client()  # raises what the view raised
    with pytest.raises(ShopError):
        client.post("/apply-then-fail/", {"order": "PO-V", "trans_no": "RV-3"})
    assert sent(sandbox) == {}


# --------------------------------------------------------------------------- every entry point


def _command(*args: str) -> Callable[[Refund], object]:
    return lambda _refund: call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())


def _in_worker(call: Callable[[Refund], object]) -> Callable[[Refund], object]:
    def in_worker(refund: Refund) -> object:
        with override_settings(Q_CLUSTER={"name": "t", "orm": "default", "timeout": 60}):
            return call(refund)

    return in_worker


def _due(refund: Refund) -> Refund:
    Refund.objects.filter(pk=refund.pk).update(next_query_at=timezone.now())
    return refund


#: Each public entry point that writes, and whether it works inside a caller's transaction
#: (``True``) or refuses with ``TransactionManagementError`` (``False``).
ENTRY_POINTS: dict[str, tuple[Callable[[Refund], object], bool]] = {
    "Refund.objects.apply": (lambda _refund: apply("RE-NEW", order="PO-NEW"), True),
    "Refund.objects.track": (lambda _refund: Refund.objects.track("RE-TRACKED"), True),
    "send_again": (lambda refund: apply_module.send_again(refund), False),
    "send_queued": (lambda _refund: apply_module.send_queued(), False),
    "sync_refunds": (lambda _refund: sync_refunds(), False),
    "sync_refunds(dry_run=True)": (lambda _refund: sync_refunds(dry_run=True), True),
    "sync_refund": (lambda refund: sync_refund(_due(refund)), False),
    "sync_claimed": (lambda refund: sync_claimed([refund.pk], "token"), False),
    # In a cluster's worker, and run inline as django-q2's "sync" mode does, in the caller's
    # transaction (the mode's own design).
    "tasks.sync_due_refunds": (_in_worker(lambda _refund: tasks.sync_due_refunds()), False),
    "tasks.sync_refund_batch": (
        _in_worker(lambda refund: tasks.sync_refund_batch([refund.pk])),
        False,
    ),
    "tasks.sync_due_refunds (sync mode)": (lambda _refund: tasks.sync_due_refunds(), True),
    "tasks.sync_refund_batch (sync mode)": (
        lambda refund: tasks.sync_refund_batch([refund.pk]),
        True,
    ),
    "manage.py sync_refunds": (_command("sync_refunds"), False),
    "manage.py sync_refunds --dry-run": (_command("sync_refunds", "--dry-run"), True),
    "manage.py prune_refund_queries": (_command("prune_refund_queries"), True),
    "manage.py export_refunds": (_command("export_refunds"), True),
    "manage.py hsq_refunds_verify": (_command("hsq_refunds_verify"), True),
    "manage.py hsq_refunds_schedule": (_command("hsq_refunds_schedule"), True),
}


@pytest.fixture
def unconfirmed(sandbox, merchant_no) -> Refund:
    """A refund whose application HSQ never confirmed (the case for send_again)."""
    refund = apply("RE-1", order="PO-E")
    Refund.objects.filter(pk=refund.pk).update(
        application="unknown",
        needs_attention=True,
        attention_reason="not_received",
        applied_at=timezone.now() - timedelta(minutes=10),
    )
    refund.refresh_from_db()
    return refund


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_entry_point_works_or_refuses_inside_atomic(sandbox, unconfirmed, name):
    call, works = ENTRY_POINTS[name]
    before = sent(sandbox)

    with transaction.atomic():
        if works:
            call(unconfirmed)
        else:
            with pytest.raises(transaction.TransactionManagementError) as refused:
                call(unconfirmed)
            assert "cannot run inside a transaction" in str(refused.value)
            assert "outside the transaction" in str(refused.value)

    if not works:  # nothing sent, nothing asked
        assert sent(sandbox) == before
        assert sandbox.query_counts() == {}
    if name == "Refund.objects.apply":
        assert sent(sandbox) == {**before, "RE-NEW": 1}
    unconfirmed.refresh_from_db()
    assert unconfirmed.apply_attempts == 1


def test_concurrent_commits_send_each_application_once(sandbox):
    """Threads applying in their own transactions at once: each application sent once, after
    its commit; the order's total holds."""
    sandbox.configure_apply(balance_seconds=0)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def shop(number: int) -> None:
        try:
            start.wait(timeout=30)
            with transaction.atomic():
                apply(f"RC-{number}", order="PO-C", amount=1000)
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=shop, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sent(sandbox) == {f"RC-{n}": 1 for n in range(4)}
    assert set(Refund.objects.values_list("application", flat=True)) == {"accepted"}
