"""Throughput of one sync run against the sandbox gateway, on SQLite and on PostgreSQL.

Seeds N due refunds, starts the sandbox (in its own process) answering after L seconds, and
syncs them all with ``sync_refunds(concurrency=C)``. Prints the wall time against the ideal
N*L/C, how busy the query slots were, refunds per second, the syncing process's CPU per
refund (its main thread's share, which claims, decides and writes, and the workers' share,
which query) against the sign-plus-verify floor of ``bench/crypto.py`` and against the
client's own cost of one query, database statements per refund (from every thread), memory,
and the sandbox's CPU per answer (a warning when the sandbox, not the sync, sets the pace).

    .venv/bin/python bench/sync_throughput.py [--db sqlite|postgres|both]
        [--preset standard|wide|both] [-n N] [--concurrency C] [--latency 0.05] [--repeat 3]
        [--write-path sql|orm|both]

Presets: ``standard`` is N=2,000 at C=16, where the targets apply; ``wide`` is N=10,000 at
C=64, where the CPU per refund decides (the same figures, and the targets shown for
reference). ``-n`` and ``--concurrency`` give a single configuration of their own instead.
``--write-path`` measures the engine's own write (``sql``), the plain ORM (``orm``, see
:data:`WRITE_PATHS`) or both, side by side; the targets count for ``sql``. Each database,
configuration and write path is measured in a child process of its own, so that CPU and
memory figures are its alone; its figures are the medians of ``--repeat`` runs (fresh due
refunds each). The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from _common import (
    DATABASES,
    RssSampler,
    SandboxProcess,
    SlotMeter,
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

EFFICIENCY_TARGET = 0.95
CPU_MARGIN_MS = 1.0
STATEMENTS_TARGET = 0.5
#: The sandbox busier than this (CPU seconds per wall second) may be what sets the pace.
SANDBOX_BUSY_LIMIT = 0.5
#: Queries sent one at a time, before the runs, to measure the client's own CPU per query.
CLIENT_PROBES = 40
PRESETS = {"standard": (2000, 16), "wide": (10000, 64)}
#: How ``write_answers`` writes the answers: ``sql``, one ``UPDATE ... FROM`` per set of fields
#: changed and one ``INSERT`` per batch; ``orm``, the plain ORM it falls back to where the
#: database has no ``UPDATE ... RETURNING`` (one ``update()`` per refund, one ``bulk_create``).
WRITE_PATHS = ("sql", "orm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=[*DATABASES, "both"], default="both")
    parser.add_argument("--preset", choices=[*PRESETS, "both"], default="both")
    parser.add_argument("-n", type=int, help="due refunds per run (instead of a preset)")
    parser.add_argument("--concurrency", type=int, help="queries in flight (instead of a preset)")
    parser.add_argument(
        "--latency", type=float, default=0.05, help="sandbox answer delay, seconds (0.05)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per database; medians are printed (3)"
    )
    parser.add_argument("--write-path", choices=[*WRITE_PATHS, "both"], default="both")
    args = parser.parse_args(argv)

    if args.n is not None or args.concurrency is not None:
        default_n, default_c = PRESETS["standard"]
        configs = [(args.n or default_n, args.concurrency or default_c)]
    else:
        names = list(PRESETS) if args.preset == "both" else [args.preset]
        configs = [PRESETS[name] for name in names]
    kinds = list(DATABASES) if args.db == "both" else [args.db]
    paths = list(WRITE_PATHS) if args.write_path == "both" else [args.write_path]

    if len(kinds) == 1 and len(configs) == 1 and len(paths) == 1:
        n, concurrency = configs[0]
        print_summary(measure(kinds[0], n, args.latency, concurrency, args.repeat, paths[0]))
        return 0

    runs = []
    for n, concurrency in configs:
        for kind in kinds:
            for path in paths:
                options = ["--db", kind, "-n", str(n), "--concurrency", str(concurrency)]
                options += ["--latency", str(args.latency), "--repeat", str(args.repeat)]
                runs.append(run_self(__file__, [*options, "--write-path", path]))
    _print_side_by_side(runs)
    standard = [run for run in runs if _is_standard(run) and run["write_path"] == "sql"]
    # None when the standard preset was not run: its targets were neither met nor missed.
    met = all(all(run["targets"].values()) for run in standard) if standard else None
    print_summary({"benchmark": "sync_throughput", "runs": runs, "standard_targets_met": met})
    return 0


def _is_standard(run: dict[str, Any]) -> bool:
    return (run["n"], run["concurrency"]) == PRESETS["standard"]


def measure(
    kind: str, n: int, latency: float, concurrency: int, repeat: int, write_path: str
) -> dict[str, Any]:
    """Sync ``n`` due refunds ``repeat`` times on a fresh ``kind`` database, the answers
    written by ``write_path``; print the medians."""
    host = machine()
    floor = floor_ms()  # measured here, in this run, on this machine
    with SandboxProcess(latency=latency) as sandbox, bench_database(kind) as database:
        setup_django(database, sandbox.settings(CONCURRENCY=concurrency))

        from hsq_refunds import recording
        from hsq_refunds.clients import get_client

        if write_path == "orm":
            recording._updates_return_rows = lambda connection: False

        get_client()  # keys are loaded once per process, not per run: keep that out
        print_machine(host)
        print(
            f"sync_throughput on {kind}, {write_path} write path: {n} due refunds per run, "
            f"sandbox latency {latency * 1000:.0f} ms, concurrency {concurrency}, {repeat} run(s)",
            flush=True,
        )
        client_ms = _client_ms(sandbox)
        runs = []
        for number in range(repeat):
            sandbox.add_successes(seed_due_refunds(n, prefix=f"R{number}-"))
            runs.append(_run(sandbox, n, latency, concurrency))
            _print_run(number + 1, runs[-1])
    figures = {
        "db": kind,
        "write_path": write_path,
        "n": n,
        "latency_s": latency,
        "concurrency": concurrency,
        "repeat": repeat,
        **host,
        "load_1min_end": os.getloadavg()[0],
        **{key: statistics.median(run[key] for run in runs) for key in _MEDIANS},
        "floor_ms": floor,
        "client_ms_per_query": client_ms,
        "statements": runs[-1]["statements"],
        "statement_threads": sorted(set().union(*(run["threads"] for run in runs))),
        "peak_in_flight": max(run["peak_in_flight"] for run in runs),
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
    "slots_busy",
    "refunds_per_s",
    "cpu_ms_per_refund",
    "main_cpu_ms_per_refund",
    "worker_cpu_ms_per_refund",
    "cpu_busy",
    "statements_per_refund",
    "calls_per_refund",
    "rss_growth_during_sync_mb",
    "sandbox_cpu_ms_per_answer",
    "sandbox_busy",
)


def _client_ms(sandbox: SandboxProcess) -> float:
    """CPU milliseconds one ``query_refund`` costs the client, queries sent one at a time
    (nothing else runs meanwhile): what the HTTP client, signing and verifying cost alone."""
    from hsq_refunds.clients import get_client

    client = get_client()
    probes = [f"PROBE{index:04d}" for index in range(CLIENT_PROBES)]
    sandbox.add_successes(probes)
    client.query_refund(probes[0])  # a connection, opened outside the measurement
    started = time.thread_time()
    for trans_no in probes[1:]:
        client.query_refund(trans_no)
    return (time.thread_time() - started) * 1000 / (len(probes) - 1)


def _run(sandbox: SandboxProcess, n: int, latency: float, concurrency: int) -> dict[str, Any]:
    from hsq_refunds.sync import sync_refunds

    sandbox_cpu = sandbox.cpu_seconds()
    with StatementCounter() as statements, RssSampler() as rss, SlotMeter() as slots:
        cpu = cpu_seconds()
        main_cpu = time.thread_time()  # the engine's main thread: claims, rules, writes
        started = time.perf_counter()
        report = sync_refunds(concurrency=concurrency)
        wall = time.perf_counter() - started
        main_cpu = time.thread_time() - main_cpu
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
        "slots_busy": slots.busy(concurrency, wall),
        "peak_in_flight": slots.peak,
        "refunds_per_s": report.queried / wall,
        "cpu_ms_per_refund": cpu * 1000 / handled,
        "main_cpu_ms_per_refund": main_cpu * 1000 / handled,
        "worker_cpu_ms_per_refund": (cpu - main_cpu) * 1000 / handled,
        "cpu_busy": cpu / wall,
        "statements_per_refund": statements.total / handled,
        "calls_per_refund": statements.calls / handled,
        "statements": dict(statements.by_verb),
        "threads": statements.threads,
        "rss_growth_during_sync_mb": rss.growth_mb,
        "sandbox_cpu_ms_per_answer": sandbox_cpu * 1000 / handled,
        "sandbox_busy": sandbox_cpu / wall,
    }


def _print_run(number: int, run: dict[str, Any]) -> None:
    print(
        f"  run {number}: {run['queried']} queried, {run['errors']} errors, "
        f"{run['still_due']} still due; wall {run['wall_s']:.2f} s, efficiency "
        f"{run['efficiency']:.3f}, slots busy {run['slots_busy']:.3f}, CPU "
        f"{run['cpu_ms_per_refund']:.3f} ms/refund, "
        f"{run['statements_per_refund']:.3f} statements/refund, sandbox busy "
        f"{run['sandbox_busy']:.2f}",
        flush=True,
    )


def _print_side_by_side(runs: list[dict[str, Any]]) -> None:
    print("medians side by side:", flush=True)
    print(
        f"  {'db':<9} {'N':>6} {'C':>3} {'write':<5} {'efficiency':>10} {'CPU ms':>8} "
        f"{'main ms':>8} {'stmts':>6}",
        flush=True,
    )
    for run in runs:
        print(
            f"  {run['db']:<9} {run['n']:>6} {run['concurrency']:>3} {run['write_path']:<5} "
            f"{run['efficiency']:>10.3f} {run['cpu_ms_per_refund']:>8.3f} "
            f"{run['main_cpu_ms_per_refund']:>8.3f} {run['statements_per_refund']:>6.3f}",
            flush=True,
        )


def _print(f: dict[str, Any]) -> None:
    where = f"{f['db']}, {f['write_path']} write path"
    print(f"medians of {f['repeat']} run(s) on {where}:", flush=True)
    figure("wall time", f"{f['wall_s']:.2f} s")
    figure("ideal N*L/C", f"{f['ideal_s']:.2f} s")
    figure("efficiency (ideal / wall)", f"{f['efficiency']:.3f}")
    figure("query slots busy (time in queries / C*wall)", f"{f['slots_busy']:.3f}")
    figure("most queries in flight at once", f"{f['peak_in_flight']}")
    figure("refunds per second", f"{f['refunds_per_s']:.0f}")
    figure("CPU of the syncing process per refund", f"{f['cpu_ms_per_refund']:.3f} ms")
    figure("  main thread (claims, rules, writes)", f"{f['main_cpu_ms_per_refund']:.3f} ms")
    figure("  workers (queries)", f"{f['worker_cpu_ms_per_refund']:.3f} ms")
    figure("sign+verify floor (bench/crypto.py)", f"{f['floor_ms']:.3f} ms")
    figure("client's CPU per query, one at a time", f"{f['client_ms_per_query']:.3f} ms")
    figure("CPU busy (CPU seconds / wall seconds)", f"{f['cpu_busy']:.2f} of one core")
    verbs = ", ".join(f"{verb} {count}" for verb, count in sorted(f["statements"].items()))
    figure("database statements per refund", f"{f['statements_per_refund']:.3f}")
    figure("  of which, in the last run", verbs)
    figure("database calls (round trips) per refund", f"{f['calls_per_refund']:.3f}")
    figure("threads that sent statements", ", ".join(f["statement_threads"]) or "-")
    figure("peak RSS of the syncing process", f"{f['peak_rss_mb']:.1f} MB")
    figure("RSS growth during a sync", f"{f['rss_growth_during_sync_mb']:.1f} MB")
    figure("sandbox CPU per answer (other process)", f"{f['sandbox_cpu_ms_per_answer']:.3f} ms")
    figure("sandbox busy (CPU seconds / wall seconds)", f"{f['sandbox_busy']:.2f} of one core")
    load = f"{f['load_1min']:.1f} / {f['load_1min_end']:.1f}"
    figure("load average at the start / the end", load)
    if f["sandbox_busy"] > SANDBOX_BUSY_LIMIT:
        print(
            f"warning: the sandbox was busy {f['sandbox_busy']:.2f} of a core (over "
            f"{SANDBOX_BUSY_LIMIT}): on this machine it may be the sandbox, not the sync, "
            "that sets the pace",
            flush=True,
        )
    if f["load_1min"] > (f["cpus"] or 1):
        print(
            f"warning: load average {f['load_1min']:.1f} on {f['cpus']} CPUs: other work "
            "competes for the CPU, and wall-time figures suffer first",
            flush=True,
        )
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
        f"database statements per refund <= {STATEMENTS_TARGET}",
        f["statements_per_refund"] <= STATEMENTS_TARGET,
        f"{f['statements_per_refund']:.3f}",
    )
    return targets.results


if __name__ == "__main__":
    sys.exit(main())
