"""Speed of the admin dashboard's queries, and of the health checks', at 1,000,000 refunds.

Fills a PostgreSQL bench database in bulk (``INSERT ... SELECT generate_series``) with
``--rows`` refunds applied over the last 180 days (the recent ones partly unfinished, a few
old ones flagged), ``--queries`` audit rows over the last 30 days and a month of sync runs
(one a minute), runs ``VACUUM ANALYZE`` as autovacuum would, and then, for every SQL statement
that :func:`hsq_refunds.dashboard.dashboard_data` and :func:`hsq_refunds.health.check_health`
send, prints its median time over ``--repeat`` runs and its ``EXPLAIN (ANALYZE, BUFFERS)``
plan. With ``--compare`` (the default) the dashboard is timed again without the indexes of
migration 0002 (dropped inside a transaction that is rolled back).

    .venv/bin/python bench/dashboard.py [--rows 1000000] [--queries 1000000] [--repeat 5]
        [--no-compare] [--no-plans]

The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import (
    MERCHANT_NO,
    Targets,
    bench_database,
    figure,
    machine,
    print_machine,
    print_summary,
    setup_django,
)

#: The dashboard is "fast" when one computation of its figures takes at most this long.
DASHBOARD_TARGET_MS = 250.0
#: Indexes that migration 0002 adds for the dashboard and the health checks.
INDEXES = ("hsq_refund_status_applied_idx", "hsq_refund_claimed_idx")
DASHBOARD_QUERIES = (
    "per status, today and 7 days",
    "attention queue",
    "unfinished by age",
    "last sync runs",
)
DAYS = 180


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="refunds (1,000,000)")
    parser.add_argument("--queries", type=int, default=1_000_000, help="audit rows (1,000,000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query (5)")
    parser.add_argument("--no-compare", dest="compare", action="store_false")
    parser.add_argument("--no-plans", dest="plans", action="store_false")
    args = parser.parse_args(argv)

    host = machine()
    with bench_database("postgres") as database:
        setup_django(database, {"MERCHANTS": {}})
        print_machine(host)
        started = time.perf_counter()
        _fill(args.rows, args.queries)
        print(
            f"filled {args.rows:,} refunds, {args.queries:,} audit rows and "
            f"{30 * 1440:,} sync runs in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        result = _measure(args)
    return _report(result, args, host)


# --------------------------------------------------------------------------- filling


def _fill(rows: int, queries: int) -> None:
    from django.db import connection
    from django.utils import timezone

    now = timezone.now()
    step = DAYS * 86400 / rows  # seconds between two refunds
    open_ = "('UNKNOWN', 'INIT', 'PROCESSING')"
    with connection.cursor() as cursor:
        # Refund g was applied (rows - 1 - g) * step seconds ago: the last ones are the newest.
        # Recent refunds are partly unfinished; an old straggler (1 in 997) is still open and
        # flagged, and 1 in 1511 is flagged for a wrong amount.
        cursor.execute(
            f"""
            INSERT INTO hsq_refunds_refund (
                merchant_no, trans_no, orig_trans_no, trade_no, amount, status, finished_at,
                resp_code, resp_msg, extend, last_result, applied_at, created_at, updated_at,
                last_queried_at, next_query_at, query_count, error_count, last_error_type,
                last_error_code, last_error_message, needs_attention, attention_reason,
                attention_detail, claimed_until, claim_token)
            SELECT %(merchant)s, 'DASH' || lpad(g::text, 10, '0'), 'PO' || g, '', amount, status,
                CASE WHEN status IN ('SUCCESS', 'FAIL') THEN applied + interval '3 minutes' END,
                '', '', '', '', applied, applied, applied, applied,
                CASE WHEN status IN {open_} AND age < 3 * 86400
                     THEN %(now)s + (g %% 3600) * interval '1 second' END,
                3, 0, '', '', '', flag <> '', flag, '',
                CASE WHEN g %% 100003 = 0 THEN %(now)s - interval '20 minutes' END,
                CASE WHEN g %% 100003 = 0 THEN md5(g::text) ELSE '' END
            FROM (
                SELECT g, age, %(now)s - age * interval '1 second' AS applied,
                    100 + (g * 7919) %% 200000 AS amount,
                    CASE
                        WHEN age < 3 * 86400 AND g %% 10 = 0 THEN 'PROCESSING'
                        WHEN age < 3 * 86400 AND g %% 20 = 1 THEN 'INIT'
                        WHEN age < 86400 AND g %% 20 = 3 THEN 'UNKNOWN'
                        WHEN g %% 997 = 0 THEN 'PROCESSING'
                        WHEN g %% 67 = 0 THEN 'FAIL'
                        ELSE 'SUCCESS'
                    END AS status,
                    CASE
                        WHEN g %% 997 = 0 AND age >= 3 * 86400 THEN 'gave_up'
                        WHEN g %% 1511 = 0 THEN 'amount_mismatch'
                        ELSE ''
                    END AS flag
                FROM (SELECT g, (%(rows)s - 1 - g) * %(step)s AS age
                      FROM generate_series(0::bigint, %(rows)s - 1) AS g) AS ages
            ) AS refunds
            """,
            {"merchant": MERCHANT_NO, "now": now, "rows": rows, "step": step},
        )
        # Audit rows over the last 30 days, spread over the refunds; 2% failed, a few bad
        # signatures.
        cursor.execute(
            """
            INSERT INTO hsq_refunds_refundquery (
                refund_id, queried_at, duration_ms, outcome, error_type, error_code,
                error_message, resp_code, status_seen, result)
            SELECT first.id + (g * 104729) %% %(rows)s,
                %(now)s - (%(queries)s - 1 - g) * %(step)s * interval '1 second', 80,
                CASE WHEN g %% 50 = 0 THEN 'transport_error'
                     WHEN g %% 5003 = 0 THEN 'signature_error' ELSE 'ok' END,
                CASE WHEN g %% 50 = 0 THEN 'transport'
                     WHEN g %% 5003 = 0 THEN 'signature' ELSE '' END,
                '', '', CASE WHEN g %% 50 = 0 THEN '' ELSE '200007' END, '', ''
            FROM generate_series(0::bigint, %(queries)s - 1) AS g,
                 (SELECT min(id) AS id FROM hsq_refunds_refund) AS first
            """,
            {"now": now, "rows": rows, "queries": queries, "step": 30 * 86400 / max(queries, 1)},
        )
        cursor.execute(
            """
            INSERT INTO hsq_refunds_syncrun (
                started_at, finished_at, trigger, selected, queried, error_count,
                errors_by_type, ok, summary)
            SELECT %(now)s - m * interval '1 minute' - interval '4 seconds',
                %(now)s - m * interval '1 minute', 'task', 40, 40,
                CASE WHEN m %% 60 = 0 THEN 2 ELSE 0 END,
                CASE WHEN m %% 60 = 0 THEN '{"transport": 2}'::jsonb ELSE '{}'::jsonb END,
                m %% 60 <> 0, '40 refunds queried: 40 still processing.'
            FROM generate_series(1, 30 * 1440) AS m
            """,
            {"now": now},
        )
        for table in ("hsq_refunds_refund", "hsq_refunds_refundquery", "hsq_refunds_syncrun"):
            cursor.execute(f"VACUUM ANALYZE {table}")


# --------------------------------------------------------------------------- measuring


def _statements(function: Callable[[], Any]) -> list[str]:
    """The SQL ``function`` sends (the parameters bound in, as psycopg sends them)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        function()
    # SELECTs only: savepoints around the health checks are no queries to time.
    return [
        query["sql"] for query in captured.captured_queries if query["sql"].startswith("SELECT")
    ]


def _time_ms(sql: str, repeat: int) -> float:
    from django.db import connection

    times = []
    with connection.cursor() as cursor:
        for _ in range(repeat):
            started = time.perf_counter()
            cursor.execute(sql)
            cursor.fetchall()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _plan(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def _call_ms(function: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _queries(function: Callable[[], Any], names: tuple[str, ...], args: argparse.Namespace):
    statements = _statements(function)
    results = []
    for number, sql in enumerate(statements):
        name = names[number] if len(names) == len(statements) else f"query {number + 1}"
        results.append(
            {
                "name": name,
                "ms": _time_ms(sql, args.repeat),
                "sql": sql,
                "plan": _plan(sql) if args.plans else "",
            }
        )
    return results


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection, transaction

    from hsq_refunds.dashboard import dashboard_data
    from hsq_refunds.health import check_health

    dashboard_data()  # warm the caches once, as a page that is looked at often has them
    result: dict[str, Any] = {
        "dashboard_ms": _call_ms(dashboard_data, args.repeat),
        "dashboard_queries": _queries(dashboard_data, DASHBOARD_QUERIES, args),
        "health_ms": _call_ms(check_health, args.repeat),
        "health_queries": _queries(check_health, (), args),
    }
    if args.compare:
        with transaction.atomic():
            with connection.cursor() as cursor:
                for index in INDEXES:
                    cursor.execute(f"DROP INDEX {index}")
            result["dashboard_without_indexes_ms"] = _call_ms(dashboard_data, args.repeat)
            result["without_indexes"] = [
                {"name": query["name"], "ms": query["ms"]}
                for query in _queries(dashboard_data, DASHBOARD_QUERIES, args)
            ]
            result["health_without_indexes_ms"] = _call_ms(check_health, args.repeat)
            transaction.set_rollback(True)
    return result


# --------------------------------------------------------------------------- the report


def _report(result: dict[str, Any], args: argparse.Namespace, host: dict) -> int:
    print(f"dashboard at {args.rows:,} refunds (medians of {args.repeat} runs):", flush=True)
    figure("dashboard_data(), every query", f"{result['dashboard_ms']:.1f} ms")
    without = {item["name"]: item["ms"] for item in result.get("without_indexes", [])}
    for query in result["dashboard_queries"]:
        extra = f" (without the new indexes: {without[query['name']]:.1f} ms)" if without else ""
        figure(f"  {query['name']}", f"{query['ms']:.1f} ms{extra}")
    if "dashboard_without_indexes_ms" in result:
        figure(
            "dashboard_data() without the new indexes",
            f"{result['dashboard_without_indexes_ms']:.1f} ms",
        )
    figure("check_health(), every query", f"{result['health_ms']:.1f} ms")
    for query in result["health_queries"]:
        figure(f"  {query['sql'][:60]}...", f"{query['ms']:.1f} ms")
    if "health_without_indexes_ms" in result:
        figure(
            "check_health() without the new indexes",
            f"{result['health_without_indexes_ms']:.1f} ms",
        )
    if args.plans:
        for query in [*result["dashboard_queries"], *result["health_queries"]]:
            print(f"\n-- {query['name']}: {query['ms']:.1f} ms\n{query['sql']}\n{query['plan']}")
        print(flush=True)
    targets = Targets()
    targets.check(
        "dashboard",
        f"the dashboard's figures in <= {DASHBOARD_TARGET_MS:.0f} ms at {args.rows:,} refunds",
        result["dashboard_ms"] <= DASHBOARD_TARGET_MS,
        f"{result['dashboard_ms']:.1f} ms",
    )
    summary = {
        "benchmark": "dashboard",
        "rows": args.rows,
        "queries": args.queries,
        **host,
        **{key: value for key, value in result.items() if key.endswith("_ms")},
        "dashboard_queries_ms": {q["name"]: q["ms"] for q in result["dashboard_queries"]},
        "health_queries_ms": [q["ms"] for q in result["health_queries"]],
        "without_indexes_ms": without,
        "targets": targets.results,
    }
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
