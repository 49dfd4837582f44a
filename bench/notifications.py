"""HSQ's refund notifications per second through a production WSGI server (waitress).

Seeds refunds that are PROCESSING and signs one SUCCESS notification for each with the platform
key (before anything is measured). Serves the test project's Django application with waitress
in ``--processes`` child processes on one port of 127.0.0.1 (each with a socket of its own and
``SO_REUSEPORT``, so the kernel spreads the connections over them; ``--threads`` each; database
connections kept, as a production server keeps them). Client processes POST the notifications
concurrently over keep-alive connections (a thread per connection, ``http.client``, bodies
prepared beforehand). A first run, not measured, warms every server process and thread.

Prints the load average at the start, notifications per second, the 50th and 99th percentile
latency seen by the clients, the CPU the server and the clients spent per notification and how
busy each kept the CPU (so that the clients can be seen not to be the bottleneck), and checks
that every notification was acknowledged and recorded.

    .venv/bin/python bench/notifications.py [--db sqlite|postgres|both] [-n 2000] [--repeat 3]
        [--processes CPUS] [--threads 4] [--clients 2] [--connections 4] [--time-limit 120]
        [--sqlite-wal]

Each run posts ``n`` notifications, each for a refund of its own (fresh refunds every run); the
figures printed last are the medians of ``--repeat`` runs. A run stops after ``--time-limit``
seconds whatever is left. The database is a throwaway one (``bench/_common.py``): a temporary
SQLite file (in the test settings' rollback-journal mode; ``--sqlite-wal`` for WAL with
``synchronous=NORMAL``), or a database on the throwaway PostgreSQL server with ``--db postgres``.

Target: at least 300 notifications per second with a 99th percentile under 100 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from _common import (
    AMOUNT,
    DATABASES,
    MERCHANT_NO,
    REPO,
    Targets,
    bench_database,
    django_env,
    figure,
    machine,
    print_machine,
    print_summary,
    run_self,
    setup_django,
    trans_no,
)

from hsq_refunds.sandbox import create_credentials

NOTIFY_PATH = "/hsq/refund-notify/"
HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
#: No query is sent in this benchmark; the gateway URL only has to be valid.
UNUSED_GATEWAY = "http://127.0.0.1:9/api/acquiring"
WARMUP = 400
#: Seconds the server's threads keep their database connection.
CONN_MAX_AGE = 600
#: ``--sqlite-wal``: what each of the server's SQLite connections runs first.
SQLITE_WAL = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"
RATE_TARGET = 300.0
P99_TARGET_MS = 100.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=[*DATABASES, "both"], default="sqlite")
    parser.add_argument("-n", type=int, default=2000, help="notifications per run (2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; medians are printed (3)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (2)")
    parser.add_argument(
        "--connections", type=int, default=4, help="keep-alive connections per client (4)"
    )
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="server processes (CPUs)"
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="waitress threads per server process (4)"
    )
    parser.add_argument(
        "--time-limit", type=float, default=120.0, help="seconds a run may take at most (120)"
    )
    parser.add_argument(
        "--sqlite-wal",
        action="store_true",
        help="SQLite in WAL mode with synchronous=NORMAL (default: as the test settings have it)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", metavar="BODIES", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.threads, args.port, args.sqlite_wal)
    if args.client:
        return client(args.client, args.port, args.connections, args.time_limit)

    options = ["-n", str(args.n), "--repeat", str(args.repeat), "--clients", str(args.clients)]
    options += ["--connections", str(args.connections), "--processes", str(args.processes)]
    options += ["--threads", str(args.threads)]
    options += ["--time-limit", str(args.time_limit)]
    if args.sqlite_wal:
        options.append("--sqlite-wal")
    if args.db == "both":
        runs = {kind: run_self(__file__, ["--db", kind, *options]) for kind in DATABASES}
        met = all(all(run["targets"].values()) for run in runs.values())
        print_summary({"benchmark": "notifications", "runs": runs, "all_targets_met": met})
        return 0
    print_summary(measure(args))
    return 0


# --------------------------------------------------------------------------- the server


def serve(threads: int, port: int, sqlite_wal: bool) -> int:
    """The test project's WSGI application under waitress on 127.0.0.1:``port``, on a socket of
    its own with ``SO_REUSEPORT``: the kernel spreads the connections over every server process
    listening on that port."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from waitress.server import create_server

    from hsq_refunds.clients import get_client

    # Persistent connections, as a production server keeps them (the test settings close the
    # connection after every request); set before the first connection is made.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = CONN_MAX_AGE
    if sqlite_wal and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        settings.DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = SQLITE_WAL
    get_client()  # the keys are loaded before the first notification, as in a warm server
    listener = _reuse_port_socket(port)
    listener.listen(1024)
    server = create_server(
        get_wsgi_application(),
        sockets=[listener],
        threads=threads,
        channel_timeout=60,
        ident="hsq-bench",
    )
    print("listening", flush=True)
    server.run()
    return 0


def _reuse_port_socket(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    return listener


class Server:
    """``processes`` children running ``bench/notifications.py --serve`` on one port; their
    stderr in a file. The port is held here (bound, not listening) until they all listen."""

    def __init__(self, env: dict[str, str], processes: int, threads: int, sqlite_wal: bool) -> None:
        self.log = tempfile.TemporaryFile()
        placeholder = _reuse_port_socket(0)
        self.port = placeholder.getsockname()[1]
        self.processes: list[subprocess.Popen[str]] = []
        try:
            for _ in range(processes):
                argv = [sys.executable, __file__, "--serve", "--port", str(self.port)]
                self.processes.append(
                    subprocess.Popen(
                        [
                            *argv,
                            "--threads",
                            str(threads),
                            *(["--sqlite-wal"] if sqlite_wal else []),
                        ],
                        cwd=REPO,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=self.log,
                        text=True,
                    )
                )
            for process in self.processes:
                line = process.stdout.readline() if process.stdout else ""
                if line.strip() != "listening":
                    raise RuntimeError(f"a server did not start: {line!r} {self.errors()}")
        except BaseException:
            self.stop()
            raise
        finally:
            placeholder.close()

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for process in self.processes:
            times = psutil.Process(process.pid).cpu_times()
            total += times.user + times.system
        return total

    def errors(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-3000:]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout:
                process.stdout.close()
        self.log.close()


# --------------------------------------------------------------------------- the clients


def client(bodies_file: str, port: int, connections: int, time_limit: float) -> int:
    """One client process: ``connections`` threads, each on a keep-alive connection, POST the
    bodies of ``bodies_file`` (one per line) once ``go`` arrives on stdin; prints JSON."""
    bodies = Path(bodies_file).read_text().splitlines()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    lock = threading.Lock()
    pending = iter(bodies)
    latencies: list[float] = []
    counts = {"ok": 0, "refused": 0, "errors": 0}
    started = time.monotonic()
    cpu = time.process_time()
    deadline = started + time_limit

    def work() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        tally = {"ok": 0, "refused": 0, "errors": 0}
        while time.monotonic() < deadline:
            with lock:
                body = next(pending, None)
            if body is None:
                break
            sent = time.perf_counter()
            try:
                connection.request("POST", NOTIFY_PATH, body, HEADERS)
                reply = connection.getresponse()
                text = reply.read()
            except (OSError, http.client.HTTPException):
                tally["errors"] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            mine.append((time.perf_counter() - sent) * 1000)
            tally["ok" if reply.status == 200 and text == b"SUCCESS" else "refused"] += 1
            if reply.will_close:
                connection.close()
        connection.close()
        with lock:
            latencies.extend(mine)
            for key, value in tally.items():
                counts[key] += value

    threads = [threading.Thread(target=work) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended = time.monotonic()
    print(
        json.dumps(
            {
                **counts,
                "latencies_ms": latencies,
                "started": started,
                "ended": ended,
                "cpu_s": time.process_time() - cpu,
                "timed_out": ended >= deadline,
            }
        ),
        flush=True,
    )
    return 0


# --------------------------------------------------------------------------- the measurement


def measure(args: argparse.Namespace) -> dict[str, Any]:
    host = machine()
    print_machine(host)
    keys = tempfile.TemporaryDirectory(prefix="hsq_refunds_bench_keys_")
    try:
        credentials = create_credentials(
            Path(keys.name) / "keys", merchant_no=MERCHANT_NO, key_size=2048, platform_key_size=1024
        )
        hsq_refunds = {**credentials.settings_dict(UNUSED_GATEWAY), "RETRIES": 0}
        with bench_database(args.db) as database:
            setup_django(database, hsq_refunds)
            env = {**os.environ, **django_env(database, hsq_refunds)}
            return _measure_on(args, host, credentials, env)
    finally:
        keys.cleanup()


def _measure_on(args: argparse.Namespace, host: dict[str, Any], credentials, env) -> dict[str, Any]:
    journal = ""
    if args.db == "sqlite":
        journal = " (WAL, synchronous=NORMAL)" if args.sqlite_wal else " (rollback journal)"
    print(
        f"notifications on {args.db}{journal}: {args.n} per run, waitress: "
        f"{args.processes} process(es) x {args.threads} threads, "
        f"{args.clients} client processes x {args.connections} keep-alive connections, "
        f"{args.repeat} run(s)",
        flush=True,
    )
    warmup = _seed("WARM-", WARMUP)
    batches = [_seed(f"N{number}-", args.n) for number in range(args.repeat)]
    signing = time.perf_counter()
    bodies = {t: _body(credentials, t) for batch in [warmup, *batches] for t in batch}
    signing = time.perf_counter() - signing
    print(f"  signed {len(bodies)} notifications in {signing:.1f} s (not measured)", flush=True)

    server = Server(env, args.processes, args.threads, args.sqlite_wal)
    try:
        # A first run, not measured: every server process and thread has made its database
        # connection and served requests before the measured runs.
        _run(args, server, warmup, [bodies[t] for t in warmup])
        runs = []
        for number, batch in enumerate(batches, 1):
            runs.append(_run(args, server, batch, [bodies[t] for t in batch]))
            _print_run(number, runs[-1])
        server_log = server.errors()
    finally:
        server.stop()
    figures = {
        "db": args.db,
        "sqlite_wal": args.sqlite_wal and args.db == "sqlite",
        "n": args.n,
        "repeat": args.repeat,
        "clients": args.clients,
        "connections": args.clients * args.connections,
        "server_processes": args.processes,
        "server_threads": args.threads,
        **host,
        **{key: statistics.median(run[key] for run in runs) for key in _MEDIANS},
        "not_landed": sum(run["not_landed"] for run in runs),
        "errors": sum(run["errors"] + run["refused"] for run in runs),
        "timed_out": any(run["timed_out"] for run in runs),
        "load_1min_end": os.getloadavg()[0],
    }
    _print(figures)
    if figures["errors"] or figures["not_landed"]:
        print(f"server log (end):\n{server_log}", flush=True)
    return {"benchmark": "notifications", **figures, "targets": _check(figures)}


def _seed(prefix: str, count: int) -> list[str]:
    """``count`` refunds PROCESSING and not due (the notification is what finishes them)."""
    from django.utils import timezone

    from hsq_refunds.models import Refund

    now = timezone.now()
    numbers = [trans_no(prefix, i) for i in range(count)]
    Refund.objects.bulk_create(
        [
            Refund(
                merchant_no=MERCHANT_NO,
                trans_no=number,
                amount=AMOUNT,
                status="PROCESSING",
                applied_at=now - timedelta(minutes=5),
                next_query_at=now + timedelta(hours=1),
            )
            for number in numbers
        ],
        batch_size=1000,
    )
    return numbers


def _body(credentials, number: str) -> str:
    """HSQ's SUCCESS notification for refund ``number``, signed, form-encoded."""
    from hsq_refunds.gateway.signing import encode_sign_content, request_sign_string, sign

    content = {
        "transNo": number,
        "origTransNo": f"PO{number}",
        "tradeNo": f"T{number}",
        "orderAmt": str(AMOUNT),
        "orderStatus": "SUCCESS",
        "finishedDate": "20261201100000",
        "respCode": "200007",
        "respMsg": "成功",
        "extend": "",
    }
    form = {
        "method": "CALLBACK",
        "version": "1.0.0",
        "format": "JSON",
        "merchantNo": MERCHANT_NO,
        "signType": "RSA2",
        "signContent": encode_sign_content(content),
    }
    signed = sign(_platform_key(credentials), request_sign_string(form, credentials.sign_key))
    return urlencode({**form, "sign": signed})


_PLATFORM_KEYS: dict[str, Any] = {}


def _platform_key(credentials) -> Any:
    path = credentials.platform_private_key
    if path not in _PLATFORM_KEYS:
        from cryptography.hazmat.primitives import serialization

        _PLATFORM_KEYS[path] = serialization.load_pem_private_key(
            Path(path).read_bytes(), password=None
        )
    return _PLATFORM_KEYS[path]


def _run(
    args: argparse.Namespace, server: Server, batch: list[str], bodies: list[str]
) -> dict[str, Any]:
    from hsq_refunds.models import Refund

    with tempfile.TemporaryDirectory(prefix="hsq_refunds_bench_bodies_") as folder:
        clients = []
        for index in range(args.clients):
            path = Path(folder) / f"client{index}.txt"
            path.write_text("\n".join(bodies[index :: args.clients]))
            argv = [sys.executable, __file__, "--client", str(path), "--port", str(server.port)]
            argv += ["--connections", str(args.connections), "--time-limit", str(args.time_limit)]
            clients.append(
                subprocess.Popen(
                    argv,
                    cwd=REPO,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for process in clients:
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a client did not start: {process.communicate()}")
        server_cpu = server.cpu_seconds()
        for process in clients:
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=args.time_limit + 60) for process in clients]
        server_cpu = server.cpu_seconds() - server_cpu
    results = []
    for process, (out, err) in zip(clients, outputs, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"a client failed: {err}")
        results.append(json.loads(out))

    latencies = sorted(ms for result in results for ms in result["latencies_ms"])
    wall = max(r["ended"] for r in results) - min(r["started"] for r in results)
    landed = Refund.objects.filter(trans_no__in=batch, status="SUCCESS").count()
    ok = sum(r["ok"] for r in results)
    client_cpu = sum(r["cpu_s"] for r in results)
    return {
        "ok": ok,
        "refused": sum(r["refused"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "not_landed": len(batch) - landed,
        "timed_out": any(r["timed_out"] for r in results),
        "wall_s": wall,
        "per_second": ok / wall,
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else 0.0,
        "server_cpu_ms": server_cpu * 1000 / max(ok, 1),
        "server_busy": server_cpu / wall,
        "client_cpu_ms": client_cpu * 1000 / max(ok, 1),
        "client_busy": client_cpu / wall,
        "client_busiest": max(r["cpu_s"] / (r["ended"] - r["started"]) for r in results),
    }


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of sorted values."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


#: Figures of one run of which the medians over the runs are printed.
_MEDIANS = (
    "wall_s",
    "per_second",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "server_cpu_ms",
    "server_busy",
    "client_cpu_ms",
    "client_busy",
    "client_busiest",
)


def _print_run(number: int, run: dict[str, Any]) -> None:
    print(
        f"  run {number}: {run['ok']} acknowledged, {run['refused']} refused, {run['errors']} "
        f"errors, {run['not_landed']} not landed; {run['per_second']:.0f}/s, p50 "
        f"{run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms"
        + (" (stopped at the time limit)" if run["timed_out"] else ""),
        flush=True,
    )


def _print(f: dict[str, Any]) -> None:
    print(f"medians of {f['repeat']} run(s) on {f['db']}:", flush=True)
    figure("notifications per second", f"{f['per_second']:.0f}")
    figure("latency p50", f"{f['p50_ms']:.1f} ms")
    figure("latency p99", f"{f['p99_ms']:.1f} ms")
    figure("latency max", f"{f['max_ms']:.1f} ms")
    figure("wall time per run", f"{f['wall_s']:.2f} s")
    figure("server CPU per notification", f"{f['server_cpu_ms']:.2f} ms")
    figure(
        "per core of server CPU (1000 / CPU ms)", f"{1000 / max(f['server_cpu_ms'], 1e-9):.0f}/s"
    )
    figure("server busy (CPU s / wall s)", f"{f['server_busy']:.2f} of one core, all processes")
    figure("clients' CPU per notification", f"{f['client_cpu_ms']:.2f} ms")
    figure("clients busy (CPU s / wall s)", f"{f['client_busy']:.2f} of one core, all clients")
    figure("busiest client process", f"{f['client_busiest']:.2f} of one core")
    figure("load average at the end", f"{f['load_1min_end']:.1f}")
    if f["errors"] or f["not_landed"] or f["timed_out"]:
        print(
            f"warning: {f['errors']} errors or refusals, {f['not_landed']} notifications not "
            f"landed{', a run stopped at the time limit' if f['timed_out'] else ''}",
            flush=True,
        )


def _check(f: dict[str, Any]) -> dict[str, bool]:
    targets = Targets()
    targets.check(
        "rate_and_p99",
        f">= {RATE_TARGET:.0f} notifications/s with p99 < {P99_TARGET_MS:.0f} ms",
        f["per_second"] >= RATE_TARGET and f["p99_ms"] < P99_TARGET_MS,
        f"{f['per_second']:.0f}/s, p99 {f['p99_ms']:.1f} ms",
    )
    targets.check(
        "all_landed",
        "every notification acknowledged and recorded",
        not (f["errors"] or f["not_landed"] or f["timed_out"]),
        f"{f['errors']} errors or refusals, {f['not_landed']} not landed",
    )
    return targets.results


if __name__ == "__main__":
    sys.exit(main())
