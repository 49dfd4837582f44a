"""One backlog synced by several ``sync_refunds`` processes at once: what more processes buy.

One process keeps its query slots busy, but its Python work (the HTTP client and the engine,
everything but the signing itself) shares one interpreter lock, so each query waits its turn
for it and takes longer than the gateway's latency. This script seeds N due refunds, starts P
processes that each run ``sync_refunds(concurrency=C / P)`` on the same database at the same
moment (their claims keep them apart), and prints the wall time against the ideal N*L/C, the
efficiency, refunds per second, CPU per refund over all the processes, and how many refunds
HSQ was asked about more than once (it must be none).

    .venv/bin/python bench/sync_processes.py [--db sqlite|postgres|both] [-n 2000]
        [--concurrency 16] [--processes 1,2] [--latency 0.05] [--repeat 3]

Each process count is measured ``--repeat`` times on fresh refunds; the medians are printed.
No targets: the figures say how far spreading one run over processes goes on this machine.
The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import (
    DATABASES,
    REPO,
    SandboxProcess,
    bench_database,
    django_env,
    due_count,
    figure,
    machine,
    print_machine,
    print_summary,
    run_self,
    seed_due_refunds,
    setup_django,
)

#: What each child runs: Django set up, the merchant's client built (keys loaded), "ready";
#: then, once told to go, one sync and its figures as a JSON line.
_CHILD = """
import json, sys, time
import django
django.setup()
from hsq_refunds.clients import get_client
from hsq_refunds.sync import sync_refunds
get_client()
print("ready", flush=True)
sys.stdin.readline()
cpu = time.process_time()
report = sync_refunds(concurrency=int(sys.argv[1]))
print(json.dumps({"queried": report.queried, "errors": len(report.errors),
                  "cpu_s": time.process_time() - cpu}), flush=True)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=[*DATABASES, "both"], default="both")
    parser.add_argument("-n", type=int, default=2000, help="due refunds per run (2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="queries in flight, all told")
    parser.add_argument("--processes", default="1,2", help="process counts to run (1,2)")
    parser.add_argument("--latency", type=float, default=0.05, help="sandbox latency (0.05)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per process count (3)")
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.processes.split(",")]
    for count in counts:
        if count < 1 or args.concurrency % count:
            parser.error(f"--processes {count} must divide --concurrency {args.concurrency}")
    if args.db == "both":  # Django is set up once per process: one child per database
        options = [*(argv if argv is not None else sys.argv[1:])]
        runs = []
        for kind in DATABASES:
            runs += run_self(__file__, [*_without_db(options), "--db", kind])["runs"]
        print_summary({"benchmark": "sync_processes", **machine(), "runs": runs})
        return 0
    host = machine()
    print_machine(host)
    results = []
    for kind in [args.db]:
        with SandboxProcess(latency=args.latency) as sandbox, bench_database(kind) as database:
            hsq = sandbox.settings()
            setup_django(database, hsq)
            env = {**os.environ, **django_env(database, hsq)}
            print(
                f"sync_processes on {kind}: {args.n} due refunds per run, sandbox latency "
                f"{args.latency * 1000:.0f} ms, concurrency {args.concurrency} in all",
                flush=True,
            )
            for count in counts:
                runs = []
                for number in range(args.repeat):
                    prefix = f"P{count}-{number}-"
                    sandbox.add_successes(seed_due_refunds(args.n, prefix=prefix))
                    runs.append(_run(sandbox, env, args, count, prefix))
                    _print_run(count, number + 1, runs[-1])
                medians = {key: statistics.median(run[key] for run in runs) for key in _MEDIANS}
                results.append(
                    {
                        "db": kind,
                        "processes": count,
                        **medians,
                        "asked_twice": sum(run["asked_twice"] for run in runs),
                    }
                )
                _print(kind, count, args, results[-1])
    print_summary({"benchmark": "sync_processes", **host, "runs": results})
    return 0


def _without_db(options: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for option in options:
        if skip:
            skip = False
        elif option == "--db":
            skip = True
        elif not option.startswith("--db="):
            kept.append(option)
    return kept


_MEDIANS = ("wall_s", "efficiency", "refunds_per_s", "cpu_ms_per_refund", "sandbox_busy")


def _run(
    sandbox: SandboxProcess,
    env: dict[str, str],
    args: argparse.Namespace,
    count: int,
    prefix: str,
) -> dict[str, Any]:
    each = args.concurrency // count
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(each)],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for child in children:
            line = child.stdout.readline() if child.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"a sync process did not start (it printed {line!r})")
        sandbox_cpu = sandbox.cpu_seconds()
        started = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=600)[0] for child in children]
        wall = time.perf_counter() - started
        sandbox_cpu = sandbox.cpu_seconds() - sandbox_cpu
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    figures = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    queried = sum(f["queried"] for f in figures)
    assert sandbox.control is not None
    counts = sandbox.control.query_counts()
    asked_twice = sum(
        1 for trans_no, asked in counts.items() if trans_no.startswith(prefix) and asked > 1
    )
    ideal = args.n * args.latency / args.concurrency
    return {
        "queried": queried,
        "per_process": [f["queried"] for f in figures],
        "errors": sum(f["errors"] for f in figures),
        "still_due": due_count(),
        "asked_twice": asked_twice,
        "wall_s": wall,
        "efficiency": ideal / wall,
        "refunds_per_s": queried / wall,
        "cpu_ms_per_refund": sum(f["cpu_s"] for f in figures) * 1000 / (queried or 1),
        "sandbox_busy": sandbox_cpu / wall,
    }


def _print_run(count: int, number: int, run: dict[str, Any]) -> None:
    print(
        f"  {count} process(es), run {number}: {run['queried']} queried "
        f"({' + '.join(map(str, run['per_process']))}), {run['errors']} errors, "
        f"{run['still_due']} still due, {run['asked_twice']} asked twice; wall "
        f"{run['wall_s']:.2f} s, efficiency {run['efficiency']:.3f}, CPU "
        f"{run['cpu_ms_per_refund']:.3f} ms/refund",
        flush=True,
    )


def _print(kind: str, count: int, args: argparse.Namespace, f: dict[str, Any]) -> None:
    each = args.concurrency // count
    print(f"medians on {kind}, {count} process(es) at concurrency {each} each:", flush=True)
    figure("wall time", f"{f['wall_s']:.2f} s")
    figure("ideal N*L/C", f"{args.n * args.latency / args.concurrency:.2f} s")
    figure("efficiency (ideal / wall)", f"{f['efficiency']:.3f}")
    figure("refunds per second", f"{f['refunds_per_s']:.0f}")
    figure("CPU per refund, all processes", f"{f['cpu_ms_per_refund']:.3f} ms")
    figure("sandbox busy (CPU seconds / wall seconds)", f"{f['sandbox_busy']:.2f} of one core")
    figure("refunds asked about twice (must be 0)", f"{f['asked_twice']}")
    figure("load average now", f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
