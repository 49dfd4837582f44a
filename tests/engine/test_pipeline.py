"""The engine's pipeline: every query slot kept busy while the main thread writes, few
statements per refund, and batch writes guarded row by row. Against the sandbox over real
HTTP; the queries are only counted (and, where the test must decide when each one ends, held
back) by a wrapper around the client's ``query_refund``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.db.backends.signals import connection_created
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hsq_refunds import pipeline
from hsq_refunds.clients import get_client
from hsq_refunds.conf import get_settings
from hsq_refunds.gateway import HsqClient, TransportError
from hsq_refunds.models import Refund, RefundQuery
from hsq_refunds.recording import AnsweredRefund, write_answers
from hsq_refunds.rules import Decision, decide
from hsq_refunds.sync import sync_refunds

pytestmark = pytest.mark.django_db

#: How long a test waits for something the engine must do before it calls it a failure; not
#: a timing that is asserted, only a bound on a hang.
PATIENCE = 60.0
#: The statements per refund the engine stays below (bench/sync_throughput.py's target).
STATEMENTS_PER_REFUND = 0.5


def _batched() -> bool:
    """Whether this database gets one UPDATE per batch (PostgreSQL, SQLite 3.35+)."""
    import sqlite3

    return connection.vendor == "postgresql" or (
        connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)
    )


class Slots:
    """Wraps ``HsqClient.query_refund``: counts the queries in flight and, when ``gated``, holds
    each query back until the test lets one more through (:meth:`let_through`)."""

    def __init__(self, *, gated: bool) -> None:
        self.gated = gated
        self._permits = threading.Semaphore(0)
        self._changed = threading.Condition()
        self.in_flight = 0
        self.peak = 0
        self.started = 0
        self.threads: set[str] = set()

    def wrap(self, query: Callable[[HsqClient, str], Any]) -> Callable[[HsqClient, str], Any]:
        def counted(client: HsqClient, trans_no: str) -> Any:
            with self._changed:
                self.in_flight += 1
                self.started += 1
                self.peak = max(self.peak, self.in_flight)
                self.threads.add(threading.current_thread().name)
                self._changed.notify_all()
            try:
                if self.gated and not self._permits.acquire(timeout=PATIENCE):
                    raise AssertionError("the test never let this query through")
                return query(client, trans_no)
            finally:
                with self._changed:
                    self.in_flight -= 1
                    self._changed.notify_all()

        return counted

    def let_through(self, count: int = 1) -> None:
        for _ in range(count):
            self._permits.release()

    def wait_for(self, condition: Callable[[], bool]) -> bool:
        with self._changed:
            return self._changed.wait_for(condition, timeout=PATIENCE)


@pytest.fixture
def slots(monkeypatch) -> Callable[..., Slots]:
    def install(*, gated: bool = False) -> Slots:
        counter = Slots(gated=gated)
        monkeypatch.setattr(HsqClient, "query_refund", counter.wrap(HsqClient.query_refund))
        return counter

    return install


@contextmanager
def no_connections_from_other_threads() -> Iterator[list[str]]:
    """The names of threads other than this one that opened a database connection meanwhile."""
    others: list[str] = []
    me = threading.current_thread()

    def opened(sender: Any, connection: Any, **kwargs: Any) -> None:
        if threading.current_thread() is not me:
            others.append(threading.current_thread().name)

    connection_created.connect(opened, weak=False)
    try:
        yield others
    finally:
        connection_created.disconnect(opened)


@contextmanager
def held_result_writes() -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold back the first batch write of results on this thread's connection (the engine's
    main thread) until ``go`` is set; ``holding`` is set once it is held."""
    holding, go = threading.Event(), threading.Event()

    def hold(execute, sql, params, many, context):
        writes_result = sql.startswith("UPDATE") and '"version" = ' in sql  # not a claim
        if writes_result and not holding.is_set():
            holding.set()
            go.wait(PATIENCE)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(hold):
        yield holding, go


# --------------------------------------------------------------------------- query slots


def test_every_slot_stays_busy_while_the_main_thread_writes(refunds, sandbox, slots):
    """Workers take claimed refunds from the queue on their own: with the main thread held
    in its first write, the slots freed meanwhile are filled again; later, each slot freed
    is filled again until no refund is left to start."""
    concurrency, count = 4, 40
    refunds([{"transNo": f"R{i:02d}"} for i in range(count)])
    sandbox.set_fault("latency", seconds=0.02)
    counter = slots(gated=True)
    seen: dict[str, Any] = {"refilled": []}

    def conduct() -> None:
        try:
            # Every slot is filled before any answer has come back.
            seen["filled"] = counter.wait_for(lambda: counter.in_flight == concurrency)
            counter.let_through(concurrency)
            seen["first_write_held"] = holding.wait(PATIENCE)
            # The main thread is stuck in its write: only the workers can fill the slots.
            started = counter.started
            counter.let_through(concurrency)
            seen["filled_while_writing"] = counter.wait_for(
                lambda: (
                    counter.started == started + concurrency and counter.in_flight == concurrency
                )
            )
            seen["write_still_held"] = not go.is_set()
            go.set()
            while counter.started < count:
                started = counter.started
                counter.let_through()
                seen["refilled"].append(
                    counter.wait_for(
                        lambda started=started: (
                            counter.started == count
                            or (counter.started > started and counter.in_flight == concurrency)
                        )
                    )
                )
        finally:
            go.set()
            counter.let_through(count)

    with held_result_writes() as (holding, go):
        conductor = threading.Thread(target=conduct, name="conductor")
        conductor.start()
        report = sync_refunds(concurrency=concurrency)
        conductor.join(PATIENCE)

    assert seen["filled"] and seen["first_write_held"], seen
    assert seen["filled_while_writing"] and seen["write_still_held"]
    assert seen["refilled"] and all(seen["refilled"])
    assert counter.peak == concurrency
    assert report.queried == count and report.ok
    assert Refund.objects.filter(status="SUCCESS").count() == count
    assert sandbox.query_counts() == {f"R{i:02d}": 1 for i in range(count)}
    assert all(name.startswith("hsq-sync") for name in counter.threads)


def test_few_statements_per_refund_and_none_from_the_workers(refunds, sandbox, slots):
    count = 200
    refunds([{"transNo": f"R{i:03d}"} for i in range(count)])
    sandbox.set_fault("latency", seconds=0.02)
    counter = slots()
    with no_connections_from_other_threads() as others:
        with CaptureQueriesContext(connection) as queries:
            report = sync_refunds(concurrency=8)

    assert report.queried == count and report.ok
    assert counter.peak == 8
    assert others == []  # the workers never touched the database
    # RELEASE SAVEPOINT stands for the COMMIT that is not logged outside a test's transaction.
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith("RELEASE")]
    assert len(statements) / count < STATEMENTS_PER_REFUND, statements
    if _batched():
        updates = [sql for sql in statements if sql.startswith("UPDATE")]
        assert len(updates) < count / 8, updates  # claims and results, in batches
    assert RefundQuery.objects.count() == count


def test_a_claim_too_old_to_start_its_query_is_renewed_first(
    refunds, sandbox, slots, configure, monkeypatch
):
    """With one slot held up past the time the others' claims allow, they are claimed
    afresh before they are queried; each refund is still asked exactly once."""
    configure(CLAIM_LEASE=2)  # a query may start up to a second after its claim
    refunds([{"transNo": f"R{i}"} for i in range(3)])
    counter = slots(gated=True)
    renewed: list[int] = []
    real_renew = pipeline._Claims.renew

    def renew(claims, ids):
        renewed.extend(ids)
        return real_renew(claims, ids)

    monkeypatch.setattr(pipeline._Claims, "renew", renew)

    def conduct() -> None:
        counter.wait_for(lambda: counter.in_flight == 1)
        first = time.monotonic()
        while time.monotonic() < first + 1.5:  # the other two claims are now too old
            time.sleep(0.05)
        counter.let_through(3)

    conductor = threading.Thread(target=conduct, name="conductor")
    conductor.start()
    report = sync_refunds(concurrency=1)
    conductor.join(PATIENCE)

    assert sorted(renewed) == sorted(r.pk for r in Refund.objects.exclude(trans_no="R0"))
    assert report.queried == 3 and report.skipped == 0
    assert sandbox.query_counts() == {"R0": 1, "R1": 1, "R2": 1}
    assert not Refund.objects.exclude(claim_token="").exists()


# --------------------------------------------------------------------------- batch writes


def answered(refund: Refund, reply: Any) -> AnsweredRefund:
    return AnsweredRefund(
        refund, decide(refund, reply, now=timezone.now(), policy=get_settings()), at=None
    )


def test_a_batch_write_is_guarded_row_by_row(
    refunds, sandbox, received, django_capture_on_commit_callbacks
):
    rows = refunds([{"transNo": t} for t in ("OK1", "MOVED", "TAKEN", "DOWN")])
    Refund.objects.update(claim_token="mine", claimed_until=timezone.now() + timedelta(minutes=5))
    rows = list(Refund.objects.order_by("id"))
    ok, moved, taken, down = rows
    client = get_client()
    answers = [answered(r, client.query_refund(r.trans_no)) for r in (ok, moved, taken)]
    answers.append(answered(down, TransportError("the gateway is down")))  # other fields
    # Since they were read: another answer was written onto MOVED (its version moved on),
    # another run took TAKEN's claim, and a person edited OK1's reason (no version change).
    Refund.objects.filter(pk=moved.pk).update(version=F("version") + 1, status="PROCESSING")
    Refund.objects.filter(pk=taken.pk).update(claim_token="other")
    Refund.objects.filter(pk=ok.pk).update(reason="kept")

    with django_capture_on_commit_callbacks(execute=True):
        with CaptureQueriesContext(connection) as queries:
            written = write_answers(answers, claim_token="mine")

    assert written == {ok.pk, down.pk}
    if _batched():
        updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
        assert len(updates) == 2  # one per set of fields changed, not one per refund
    stored = {r.trans_no: r for r in Refund.objects.all()}
    assert (stored["OK1"].status, stored["OK1"].reason, stored["OK1"].claim_token) == (
        "SUCCESS",
        "kept",
        "",
    )
    assert stored["OK1"].version == 1 and stored["OK1"].final_source == "query"
    assert (stored["DOWN"].status, stored["DOWN"].error_count) == ("UNKNOWN", 1)
    assert stored["DOWN"].last_error_type == "transport" and stored["DOWN"].claim_token == ""
    assert (stored["MOVED"].status, stored["MOVED"].version) == ("PROCESSING", 1)
    assert stored["MOVED"].claim_token == "mine"  # not written, not released
    assert (stored["TAKEN"].status, stored["TAKEN"].claim_token) == ("UNKNOWN", "other")
    # Only the instances written show the write; the others are as they were read.
    assert (ok.status, ok.version, down.error_count) == ("SUCCESS", 1, 1)
    assert (moved.status, moved.version, taken.status, taken.version) == (
        "UNKNOWN",
        0,
        "UNKNOWN",
        0,
    )
    assert sorted(RefundQuery.objects.values_list("refund__trans_no", "outcome")) == [
        ("DOWN", "transport_error"),
        ("OK1", "ok"),
    ]
    assert [(name, trans_no) for name, trans_no, _kwargs in received] == [
        ("refund_status_changed", "OK1"),
        ("refund_succeeded", "OK1"),
    ]


#: Text that an array or a VALUES list could get wrong: quotes, braces, the word NULL, empty.
AWKWARD = ["NULL", "null", 'a"b\\c{d},e 中文', "", " ", "{}", '"', "\\", "a\nb\tc", "x" * 300]


@pytest.mark.parametrize("rows_as", ["json", "values"])
def test_a_batch_write_stores_every_value_exactly(refunds, sandbox, monkeypatch, rows_as):
    if rows_as == "values":  # SQLite built without JSON: a VALUES list instead
        if connection.vendor != "sqlite":
            pytest.skip("only SQLite writes its rows as a VALUES list when it reads no JSON")
        monkeypatch.setattr(connection.features, "supports_json_field", False)
    rows = refunds([{"transNo": f"W{i}"} for i in range(len(AWKWARD))])
    later = timezone.now() + timedelta(hours=1)
    answers = []
    for index, (refund, text) in enumerate(zip(rows, AWKWARD, strict=True)):
        changes = {
            "resp_msg": text,
            "extend": text,
            "next_query_at": later if index % 2 else None,
            "amount": index if index % 3 else None,
            "needs_attention": bool(index % 2),
        }
        log = {"outcome": "ok", "error_message": text, "result": text}
        decision = Decision("ok", "UNKNOWN", "UNKNOWN", changes=changes, log=log)
        answers.append(AnsweredRefund(refund, decision, duration_ms=index or None))
    with CaptureQueriesContext(connection) as queries:
        assert write_answers(answers) == {refund.pk for refund in rows}
    if _batched():
        writes = [q["sql"] for q in queries.captured_queries]
        writes = [sql for sql in writes if sql.startswith(("UPDATE", "INSERT"))]
        assert len(writes) == 2
        assert all(("VALUES" in sql) == (rows_as == "values") for sql in writes), writes
    stored = {r.trans_no: r for r in Refund.objects.all()}
    audit = {q.refund.trans_no: q for q in RefundQuery.objects.select_related("refund")}
    for index, text in enumerate(AWKWARD):
        refund, query = stored[f"W{index}"], audit[f"W{index}"]
        assert (refund.resp_msg, refund.extend) == (text[:255], text), index
        assert refund.next_query_at == (later if index % 2 else None), index
        assert refund.amount == (index if index % 3 else None), index
        assert refund.needs_attention is bool(index % 2) and refund.version == 1, index
        assert (query.error_message, query.result) == (text, text), index
        assert query.duration_ms == (index or None) and query.outcome == "ok", index


def test_a_batch_that_fails_changes_no_instance(refunds, sandbox):
    rows = refunds([{"transNo": "R1"}, {"transNo": "R2"}])
    client = get_client()
    answers = [answered(r, client.query_refund(r.trans_no)) for r in rows]
    with connection.cursor() as cursor:  # the audit INSERT fails, after the UPDATE
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION hsq_no_audit() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'no audit'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER hsq_no_audit BEFORE INSERT ON hsq_refunds_refundquery "
                "FOR EACH ROW EXECUTE FUNCTION hsq_no_audit()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER hsq_no_audit BEFORE INSERT ON hsq_refunds_refundquery "
                "BEGIN SELECT RAISE(ABORT, 'no audit'); END"
            )
    with pytest.raises(Exception, match="no audit"):
        write_answers(answers)
    assert [(r.status, r.version, r.query_count) for r in rows] == [("UNKNOWN", 0, 0)] * 2
    assert set(Refund.objects.values_list("status", "version")) == {("UNKNOWN", 0)}


# --------------------------------------------------------------------------- claims


def test_claim_and_fetch_returns_the_rows_claimed_as_they_are_now(refunds, sandbox):
    now = timezone.now()
    rows = refunds([{"transNo": t} for t in ("FREE", "HELD", "EXPIRED")])
    free, held, expired = rows
    Refund.objects.filter(pk=held.pk).update(claim_token="other", claimed_until=now + timedelta(1))
    Refund.objects.filter(pk=expired.pk).update(
        claim_token="dead", claimed_until=now - timedelta(seconds=1), query_count=7
    )
    until = now + timedelta(minutes=5)
    with CaptureQueriesContext(connection) as queries:
        claimed = Refund.objects.filter(pk__in=[r.pk for r in rows]).claimable(now)
        claimed = claimed.claim_and_fetch("mine", until)

    assert sorted(r.trans_no for r in claimed) == ["EXPIRED", "FREE"]
    fresh = {r.trans_no: r for r in claimed}
    assert fresh["EXPIRED"].query_count == 7 and fresh["EXPIRED"].claim_token == "mine"
    assert fresh["FREE"].claimed_until == until and fresh["FREE"].applied_at == free.applied_at
    assert Refund.objects.get(pk=held.pk).claim_token == "other"
    if _batched():
        assert len(queries.captured_queries) == 1  # UPDATE ... RETURNING


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_claim_waiting_on_another_runs_rows_skips_those_it_took(refunds, sandbox):
    """The second UPDATE waits for the first run's row locks and then re-checks its whole
    condition on the rows as committed: it never takes a refund the first run holds."""
    rows = refunds([{"transNo": f"R{i}"} for i in range(10)])
    ids = [r.pk for r in rows]
    until = timezone.now() + timedelta(minutes=5)
    outcome: dict[str, Any] = {}

    def second_run() -> None:
        try:
            now = timezone.now()
            taken = Refund.objects.filter(pk__in=ids).claimable(now).claim_and_fetch("B", until)
            outcome["B"] = sorted(r.trans_no for r in taken)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connections.close_all()

    with transaction.atomic():
        now = timezone.now()
        first = Refund.objects.filter(pk__in=ids[:6]).claimable(now).claim_and_fetch("A", until)
        other = threading.Thread(target=second_run)
        other.start()
        with connection.cursor() as cursor:
            waiting = False
            deadline = time.monotonic() + PATIENCE
            while not waiting and time.monotonic() < deadline:
                cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                waiting = cursor.fetchone()[0] > 0
        assert waiting, "the second run did not wait for the first one's rows"
    other.join(PATIENCE)

    assert "error" not in outcome
    assert sorted(r.trans_no for r in first) == [f"R{i}" for i in range(6)]
    assert outcome["B"] == [f"R{i}" for i in range(6, 10)]
    assert dict(Refund.objects.values_list("trans_no", "claim_token")) == {
        f"R{i}": "A" if i < 6 else "B" for i in range(10)
    }
