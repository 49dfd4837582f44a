"""Throughput of one sync run against the sandbox gateway, on SQLite and on PostgreSQL.

Seeds N due refunds, starts the sandbox (in its own process) answering after L seconds, and
syncs them all with ``sync_refunds(concurrency=C)``. Prints the wall time against the ideal
N*L/C, refunds per second, the syncing process's CPU per refund against the sign-plus-verify
floor of ``bench/crypto.py``, database statements per refund (from every thread) and memory.

    .venv/bin/python bench/sync_throughput.py [--db sqlite|postgres|both] [-n 2000]
        [--latency 0.05] [--concurrency 16] [--repeat 3]

Each database is measured in a child process of its own, so that CPU and memory figures are
that database's alone; its figures are the medians of ``--repeat`` runs (fresh due refunds
each). The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from _common import (
    DATABASES,
    RssSampler,
    SandboxProcess,
    StatementCounter,
    Targets,
    bench_database,
    cpu_seconds,
    due_count,
    figure,
    machine,
    peak_rss_mb,
    print_machine,
    print_summary,
    run_self,
    seed_due_refunds,
    setup_django,
)
from crypto import floor_ms

EFFICIENCY_TARGET = 0.85
CPU_MARGIN_MS = 1.0
STATEMENTS_TARGET = 3.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=[*DATABASES, "both"], default="both")
    parser.add_argument("-n", type=int, default=2000, help="due refunds per run (2000)")
    parser.add_argument(
        "--latency", type=float, default=0.05, help="sandbox answer delay, seconds (0.05)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="queries in flight (16)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per database; medians are printed (3)"
    )
    args = parser.parse_args(argv)

    if args.db == "both":
        options = ["-n", str(args.n), "--latency", str(args.latency)]
        options += ["--concurrency", str(args.concurrency), "--repeat", str(args.repeat)]
        runs = {kind: run_self(__file__, ["--db", kind, *options]) for kind in DATABASES}
        met = all(all(run["targets"].values()) for run in runs.values())
        print_summary({"benchmark": "sync_throughput", "runs": runs, "all_targets_met": met})
        return 0

    print_summary(measure(args.db, args.n, args.latency, args.concurrency, args.repeat))
    return 0


def measure(kind: str, n: int, latency: float, concurrency: int, repeat: int) -> dict[str, Any]:
    """Sync ``n`` due refunds ``repeat`` times on a fresh ``kind`` database; print the medians."""
    host = machine()
    floor = floor_ms()  # measured here, in this run, on this machine
    with SandboxProcess(latency=latency) as sandbox, bench_database(kind) as database:
        setup_django(database, sandbox.settings(CONCURRENCY=concurrency))

        from hsq_refunds.conf import get_client

        get_client()  # keys are loaded once per process, not per run: keep that out
        print_machine(host)
        print(
            f"sync_throughput on {kind}: {n} due refunds per run, sandbox latency "
            f"{latency * 1000:.0f} ms, concurrency {concurrency}, {repeat} run(s)",
            flush=True,
        )
        runs = []
        for number in range(repeat):
            sandbox.add_successes(seed_due_refunds(n, prefix=f"R{number}-"))
            runs.append(_run(sandbox, n, latency, concurrency))
            _print_run(number + 1, runs[-1])
    figures = {
        "db": kind,
        "n": n,
        "latency_s": latency,
        "concurrency": concurrency,
        "repeat": repeat,
        **host,
        **{key: statistics.median(run[key] for run in runs) for key in _MEDIANS},
        "floor_ms": floor,
        "statements": runs[-1]["statements"],
        "statement_threads": sorted(set().union(*(run["threads"] for run in runs))),
        "peak_rss_mb": peak_rss_mb(),
        "errors": sum(run["errors"] for run in runs),
        "still_due": sum(run["still_due"] for run in runs),
    }
    _print(figures)
    return {"benchmark": "sync_throughput", **figures, "targets": _check(figures)}


#: Figures of one run of which the medians over the runs are printed.
_MEDIANS = (
    "wall_s",
    "ideal_s",
    "efficiency",
    "refunds_per_s",
    "cpu_ms_per_refund",
    "cpu_busy",
    "statements_per_refund",
    "calls_per_refund",
    "rss_growth_during_sync_mb",
    "sandbox_cpu_ms_per_answer",
)


def _run(sandbox: SandboxProcess, n: int, latency: float, concurrency: int) -> dict[str, Any]:
    from hsq_refunds.sync import sync_refunds

    sandbox_cpu = sandbox.cpu_seconds()
    with StatementCounter() as statements, RssSampler() as rss:
        cpu = cpu_seconds()
        started = time.perf_counter()
        report = sync_refunds(concurrency=concurrency)
        wall = time.perf_counter() - started
        cpu = cpu_seconds() - cpu
    sandbox_cpu = sandbox.cpu_seconds() - sandbox_cpu
    ideal = n * latency / concurrency
    handled = report.queried or 1
    return {
        "queried": report.queried,
        "errors": len(report.errors),
        "still_due": due_count(),
        "wall_s": wall,
        "ideal_s": ideal,
        "efficiency": ideal / wall,
        "refunds_per_s": report.queried / wall,
        "cpu_ms_per_refund": cpu * 1000 / handled,
        "cpu_busy": cpu / wall,
        "statements_per_refund": statements.total / handled,
        "calls_per_refund": statements.calls / handled,
        "statements": dict(statements.by_verb),
        "threads": statements.threads,
        "rss_growth_during_sync_mb": rss.growth_mb,
        "sandbox_cpu_ms_per_answer": sandbox_cpu * 1000 / handled,
    }


def _print_run(number: int, run: dict[str, Any]) -> None:
    print(
        f"  run {number}: {run['queried']} queried, {run['errors']} errors, "
        f"{run['still_due']} still due; wall {run['wall_s']:.2f} s, efficiency "
        f"{run['efficiency']:.3f}, CPU {run['cpu_ms_per_refund']:.3f} ms/refund, "
        f"{run['statements_per_refund']:.3f} statements/refund",
        flush=True,
    )


def _print(f: dict[str, Any]) -> None:
    print(f"medians of {f['repeat']} run(s) on {f['db']}:", flush=True)
    figure("wall time", f"{f['wall_s']:.2f} s")
    figure("ideal N*L/C", f"{f['ideal_s']:.2f} s")
    figure("efficiency (ideal / wall)", f"{f['efficiency']:.3f}")
    figure("refunds per second", f"{f['refunds_per_s']:.0f}")
    figure("CPU of the syncing process per refund", f"{f['cpu_ms_per_refund']:.3f} ms")
    figure("sign+verify floor (bench/crypto.py)", f"{f['floor_ms']:.3f} ms")
    figure("CPU busy (CPU seconds / wall seconds)", f"{f['cpu_busy']:.2f} of one core")
    verbs = ", ".join(f"{verb} {count}" for verb, count in sorted(f["statements"].items()))
    figure("database statements per refund", f"{f['statements_per_refund']:.3f}")
    figure("  of which, in the last run", verbs)
    figure("database calls (round trips) per refund", f"{f['calls_per_refund']:.3f}")
    figure("threads that sent statements", ", ".join(f["statement_threads"]) or "-")
    figure("peak RSS of the syncing process", f"{f['peak_rss_mb']:.1f} MB")
    figure("RSS growth during a sync", f"{f['rss_growth_during_sync_mb']:.1f} MB")
    figure("sandbox CPU per answer (other process)", f"{f['sandbox_cpu_ms_per_answer']:.3f} ms")
    if f["errors"] or f["still_due"]:
        print(f"warning: {f['errors']} errors, {f['still_due']} refunds left due", flush=True)


def _check(f: dict[str, Any]) -> dict[str, bool]:
    targets = Targets()
    targets.check(
        "efficiency",
        f"efficiency >= {EFFICIENCY_TARGET}",
        f["efficiency"] >= EFFICIENCY_TARGET,
        f"{f['efficiency']:.3f}",
    )
    cpu_limit = f["floor_ms"] + CPU_MARGIN_MS
    targets.check(
        "cpu",
        f"CPU per refund <= sign+verify floor + {CPU_MARGIN_MS:.0f} ms = {cpu_limit:.3f} ms",
        f["cpu_ms_per_refund"] <= cpu_limit,
        f"{f['cpu_ms_per_refund']:.3f} ms",
    )
    targets.check(
        "statements",
        f"database statements per refund <= {STATEMENTS_TARGET:.0f}",
        f["statements_per_refund"] <= STATEMENTS_TARGET,
        f"{f['statements_per_refund']:.3f}",
    )
    return targets.results


if __name__ == "__main__":
    sys.exit(main())
