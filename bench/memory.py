"""Memory of due-selection and of a sync pass against the size of the refund table.

Grows one table to each size of ``--rows`` (inserted in bulk: ``INSERT ... SELECT
generate_series`` on PostgreSQL, ``executemany`` in one transaction on SQLite; every row due),
and at each size runs a fresh process that
  1. walks the engine's due-selection over the whole table (every due id, page by page, each
     page timed; stopped after ``--select-seconds`` so that a slow selection shows as such
     instead of running for ever), then
  2. syncs ``--limit`` due refunds against the sandbox (``sync_refunds(limit=...)``),
and reports its peak RSS (``VmHWM``) after start-up and after each phase. The target is on
the growth of the peak from the smallest to the largest table.

    .venv/bin/python bench/memory.py [--db postgres|sqlite] [--rows 10000,1000000]
        [--limit 2000] [--latency 0.02] [--concurrency 16] [--select-seconds 120]

The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from _common import (
    AMOUNT,
    DATABASES,
    MERCHANT_NO,
    RssSampler,
    SandboxProcess,
    Targets,
    bench_database,
    figure,
    machine,
    peak_rss_mb,
    print_machine,
    print_summary,
    run_self,
    setup_django,
)

GROWTH_TARGET_MB = 50.0
PREFIX = "MEM"
INSERT_BATCH = 100_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=DATABASES, default="postgres")
    parser.add_argument("--rows", default="10000,1000000", help="table sizes, ascending")
    parser.add_argument("--limit", type=int, default=2000, help="refunds synced per size (2000)")
    parser.add_argument("--latency", type=float, default=0.02, help="sandbox delay (0.02 s)")
    parser.add_argument("--concurrency", type=int, default=16, help="queries in flight (16)")
    parser.add_argument(
        "--select-seconds",
        type=float,
        default=120,
        help="stop walking the due-selection after this long (120)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print_summary(_measure_here(args))
        return 0

    sizes = sorted(int(size) for size in args.rows.split(","))
    host = machine()
    results = []
    with SandboxProcess(latency=args.latency) as sandbox, bench_database(args.db) as database:
        setup_django(database, sandbox.settings(CONCURRENCY=args.concurrency))
        print_machine(host)
        print(
            f"memory on {args.db}: table sizes {', '.join(f'{s:,}' for s in sizes)} (every row "
            f"due); selection over the whole table, then a sync of {args.limit} refunds",
            flush=True,
        )
        rows = 0
        for size in sizes:
            started = time.perf_counter()
            _insert(rows, size)
            rows = size
            print(f"table at {size:,} rows (inserted in {time.perf_counter() - started:.1f} s)")
            sandbox.add_successes(_next_due(args.limit))
            child = ["--child", "--db", args.db, "--limit", str(args.limit)]
            child += ["--concurrency", str(args.concurrency)]
            child += ["--select-seconds", str(args.select_seconds)]
            results.append({"rows": size, **run_self(__file__, child)})
    return _report(results, args, host)


# --------------------------------------------------------------------------- the parent: rows


def _insert(start: int, stop: int) -> None:
    """Insert refunds number ``start`` to ``stop - 1``, all due, in bulk."""
    from django.db import connection

    for low in range(start, stop, INSERT_BATCH):
        high = min(low + INSERT_BATCH, stop)
        if connection.vendor == "postgresql":
            _insert_postgres(low, high)
        else:
            _insert_sqlite(low, high)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {_table()}")


def _table() -> str:
    from django.db import connection

    from hsq_refunds.models import Refund

    return connection.ops.quote_name(Refund._meta.db_table)


def _constant_columns() -> dict[str, Any]:
    """Every column's value that is the same on every row (``NULL`` columns left out)."""
    from django.db import connection
    from django.utils import timezone

    from hsq_refunds.models import Refund

    applied = timezone.now() - timedelta(hours=1)
    template = Refund(
        merchant_no=MERCHANT_NO,
        amount=AMOUNT,
        applied_at=applied,
        created_at=applied,
        updated_at=applied,
    )
    values = {}
    for field in Refund._meta.concrete_fields:
        if field.primary_key or field.attname in ("trans_no", "next_query_at"):
            continue
        value = field.get_db_prep_save(getattr(template, field.attname), connection)
        if value is not None:
            values[connection.ops.quote_name(field.column)] = value
    return values


def _due_base() -> datetime:
    """Row ``g`` is due at this time plus ``g`` milliseconds: all in the past, all distinct."""
    from django.utils import timezone

    return timezone.now() - timedelta(days=1)


def _insert_postgres(low: int, high: int) -> None:
    from django.db import connection, transaction

    constants = _constant_columns()
    columns = [*constants, '"trans_no"', '"next_query_at"']
    select = ["%s"] * len(constants)
    select += ["%s || lpad(g::text, 10, '0')", "%s + g * interval '1 millisecond'"]
    sql = (
        f"INSERT INTO {_table()} ({', '.join(columns)}) "
        f"SELECT {', '.join(select)} FROM generate_series(%s, %s) AS g"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [*constants.values(), PREFIX, _due_base(), low, high - 1])


def _insert_sqlite(low: int, high: int) -> None:
    from django.db import connection, transaction

    from hsq_refunds.models import Refund

    constants = _constant_columns()
    columns = [*constants, '"trans_no"', '"next_query_at"']
    sql = (
        f"INSERT INTO {_table()} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    )
    due = Refund._meta.get_field("next_query_at")
    base = _due_base()
    fixed = list(constants.values())
    rows = (
        [
            *fixed,
            f"{PREFIX}{g:010d}",
            due.get_db_prep_save(base + timedelta(milliseconds=g), connection),
        ]
        for g in range(low, high)
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _next_due(limit: int) -> list[str]:
    """The transNos the next sync will take (the earliest due), for the sandbox to know."""
    from hsq_refunds.models import Refund

    due = Refund.objects.due().order_by("next_query_at", "id")
    return list(due.values_list("trans_no", flat=True)[:limit])


# --------------------------------------------------------------------------- the child


def _measure_here(args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: start-up, the whole due-selection, a limited sync; peak RSS each."""
    import django

    django.setup()
    from django.utils import timezone

    from hsq_refunds.clients import get_client
    from hsq_refunds.conf import get_settings
    from hsq_refunds.models import Refund
    from hsq_refunds.sync import due_id_pages, sync_refunds

    get_client()
    startup = peak_rss_mb()

    # The engine's due-selection (``due_id_pages``: keyset pages of CHUNK_SIZE ids), walked
    # to the end or until --select-seconds have passed; each page is timed.
    due = Refund.objects.due().count()
    page_ms: list[float] = []
    selected = 0
    deadline = time.monotonic() + args.select_seconds
    started = time.perf_counter()
    with RssSampler() as select_rss:
        pages = due_id_pages(Refund.objects.due(timezone.now()), get_settings().CHUNK_SIZE)
        while time.monotonic() < deadline:
            page_started = time.perf_counter()
            page = next(pages, None)
            if page is None:
                break
            page_ms.append((time.perf_counter() - page_started) * 1000)
            selected += len(page)
    select_s = time.perf_counter() - started
    after_select = peak_rss_mb()

    started = time.perf_counter()
    with RssSampler() as sync_rss:
        report = sync_refunds(limit=args.limit, concurrency=args.concurrency)
    sync_s = time.perf_counter() - started
    return {
        "startup_peak_mb": startup,
        "select_peak_mb": after_select,
        "sync_peak_mb": peak_rss_mb(),
        "select_growth_mb": select_rss.growth_mb,
        "sync_growth_mb": sync_rss.growth_mb,
        "due": due,
        "selected": selected,
        "select_complete": selected >= due,
        "select_s": select_s,
        "pages": len(page_ms),
        "first_pages_ms": statistics.median(page_ms[:10]) if page_ms else 0.0,
        "last_pages_ms": statistics.median(page_ms[-10:]) if page_ms else 0.0,
        "synced": report.queried,
        "sync_errors": len(report.errors),
        "sync_s": sync_s,
    }


# --------------------------------------------------------------------------- the report


def _report(results: list[dict[str, Any]], args: argparse.Namespace, host: dict) -> int:
    for result in results:
        print(f"{result['rows']:,} rows:", flush=True)
        figure("peak RSS after start-up", f"{result['startup_peak_mb']:.1f} MB")
        figure("peak RSS after the due-selection", f"{result['select_peak_mb']:.1f} MB")
        figure(
            "  due ids selected",
            f"{result['selected']:,} of {result['due']:,} in {result['select_s']:.1f} s"
            + ("" if result["select_complete"] else f" (stopped after {args.select_seconds:g} s)"),
        )
        figure(
            "  ms per page: first 10 / last 10 (median)",
            f"{result['first_pages_ms']:.2f} / {result['last_pages_ms']:.2f} "
            f"({result['pages']:,} pages)",
        )
        figure("  RSS growth during the selection", f"{result['select_growth_mb']:+.1f} MB")
        figure(
            f"peak RSS after syncing {args.limit}",
            f"{result['sync_peak_mb']:.1f} MB ({result['synced']} queried, "
            f"{result['sync_errors']} errors, {result['sync_s']:.1f} s)",
        )
        figure("  RSS growth during the sync", f"{result['sync_growth_mb']:+.1f} MB")
    small, large = results[0], results[-1]
    growth = large["sync_peak_mb"] - small["sync_peak_mb"]
    for result in results:
        if not result["select_complete"]:
            print(
                f"note: at {result['rows']:,} rows the due-selection did not finish within "
                f"{args.select_seconds:g} s: a page took {result['last_pages_ms']:.1f} ms at the "
                f"end against {result['first_pages_ms']:.2f} ms at the start",
                flush=True,
            )
    targets = Targets()
    targets.check(
        "rss_growth",
        f"peak RSS grows < {GROWTH_TARGET_MB:.0f} MB from {small['rows']:,} to "
        f"{large['rows']:,} rows",
        growth < GROWTH_TARGET_MB,
        f"{growth:+.1f} MB"
        + ("" if large["select_complete"] else f"; selection read {large['selected']:,} ids only"),
    )
    print_summary(
        {
            "benchmark": "memory",
            "db": args.db,
            "limit": args.limit,
            **host,
            "sizes": results,
            "peak_growth_mb": growth,
            "targets": targets.results,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
