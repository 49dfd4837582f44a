"""Shared parts of the benchmarks: a bench database, Django, the sandbox in its own process,
statement counting, memory figures and the lines the scripts print.

The sandbox gateway runs in a child process so that the CPU time of the syncing process is its
own (the sandbox signs every answer). Django is configured with ``tests.settings`` pointed at a
bench database of its own (``hsq_refunds_bench_<pid>`` on the throwaway PostgreSQL server of
``tests/services.py``, or a temporary SQLite file), which is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from hsq_refunds.sandbox import SandboxControl, create_credentials  # noqa: E402

MERCHANT_NO = "888000000001"
PG_BENCH_DATABASE = "hsq_refunds_bench"
DATABASES = ("sqlite", "postgres")
#: The amount every seeded refund has, on both sides (fen).
AMOUNT = 1500


# --------------------------------------------------------------------------- databases


@dataclass(frozen=True)
class BenchDatabase:
    """A database made for one benchmark run; ``env`` points ``tests.settings`` at it."""

    kind: str  # "sqlite" or "postgres"
    name: str  # the PostgreSQL database name, or the SQLite file path

    @property
    def env(self) -> dict[str, str]:
        if self.kind == "postgres":
            return {"HSQ_TEST_DATABASE": "postgres", "HSQ_TEST_PG_NAME": self.name}
        return {"HSQ_TEST_DATABASE": "sqlite", "HSQ_TEST_SQLITE_NAME": self.name}


def create_database(kind: str) -> BenchDatabase:
    """An empty bench database, named after this process so that runs at once never meet."""
    if kind == "postgres":
        name = f"{PG_BENCH_DATABASE}_{os.getpid()}"
        _postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
        return BenchDatabase(kind, name)
    if kind == "sqlite":
        handle, path = tempfile.mkstemp(prefix="hsq_refunds_bench_", suffix=".sqlite3")
        os.close(handle)
        return BenchDatabase(kind, path)
    raise ValueError(f"unknown database {kind!r}; use one of {', '.join(DATABASES)}")


def drop_database(database: BenchDatabase) -> None:
    """Drop the bench database; Django's connections to it are closed first."""
    if "django" in sys.modules:
        from django.db import connections

        connections.close_all()
    if database.kind == "postgres":
        _postgres_admin(f"DROP DATABASE IF EXISTS {database.name} WITH (FORCE)")
    else:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(database.name + suffix).unlink(missing_ok=True)


def _postgres_admin(*statements: str) -> None:
    import psycopg

    from tests import services

    services.ensure_postgres()  # may move this checkout's port: read it afterwards
    with psycopg.connect(
        host="127.0.0.1", port=services.PG_PORT, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        for statement in statements:
            conn.execute(statement)


def django_env(
    database: BenchDatabase,
    hsq_refunds: Mapping[str, Any],
    settings_module: str = "tests.settings",
) -> dict[str, str]:
    """The environment a Django process (this one or a child) needs to use the bench setup."""
    return {
        "DJANGO_SETTINGS_MODULE": settings_module,
        "HSQ_TEST_REFUNDS_JSON": json.dumps(dict(hsq_refunds)),
        "PYTHONPATH": os.pathsep.join(
            dict.fromkeys(
                filter(None, [str(REPO), *os.environ.get("PYTHONPATH", "").split(os.pathsep)])
            )
        ),
        **database.env,
    }


def setup_django(
    database: BenchDatabase,
    hsq_refunds: Mapping[str, Any],
    *,
    settings_module: str = "tests.settings",
) -> None:
    """Configure Django in this process for ``database`` and create the schema in it."""
    os.environ.update(django_env(database, hsq_refunds, settings_module))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


@contextlib.contextmanager
def bench_database(kind: str) -> Iterator[BenchDatabase]:
    """A fresh bench database for the ``with`` block, dropped afterwards."""
    database = create_database(kind)
    try:
        yield database
    finally:
        drop_database(database)


# --------------------------------------------------------------------------- the sandbox


class SandboxProcess:
    """``python -m hsq_refunds.sandbox serve`` in a child process, with fresh credentials.

    The merchant key is 2048-bit and the platform key 1024-bit, as in HSQ's test environment.
    """

    def __init__(self, *, latency: float, merchant_no: str = MERCHANT_NO) -> None:
        self._keys = tempfile.TemporaryDirectory(prefix="hsq_refunds_bench_keys_")
        self.credentials = create_credentials(
            Path(self._keys.name) / "keys",
            merchant_no=merchant_no,
            key_size=2048,
            platform_key_size=1024,
        )
        self.latency = latency
        self.url = ""
        self.control_url = ""
        self._process: subprocess.Popen[str] | None = None
        self.control: SandboxControl | None = None

    def start(self) -> SandboxProcess:
        argv = [
            sys.executable,
            "-m",
            "hsq_refunds.sandbox",
            "serve",
            "--keys",
            self.credentials.directory,
            "--port",
            "0",
            "--latency",
            str(self.latency),
        ]
        # Its per-query log lines go nowhere: they would only cost the sandbox CPU.
        self._process = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        line = self._process.stdout.readline() if self._process.stdout else ""
        found = re.search(r"gateway (\S+), control (\S+)", line)
        if not found:
            self.stop()
            raise RuntimeError(f"the sandbox did not start (it printed {line!r})")
        self.url, self.control_url = found.group(1), found.group(2)
        self.control = SandboxControl(self.control_url)
        return self

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout:
                self._process.stdout.close()
            self._process = None
        self._keys.cleanup()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def settings(self, **keys: Any) -> dict[str, Any]:
        """``HSQ_REFUNDS`` pointing at this sandbox, with ``keys`` on top (retries off)."""
        return {**self.credentials.settings_dict(self.url), "RETRIES": 0, **keys}

    def cpu_seconds(self) -> float:
        """User plus system CPU time the sandbox process has used so far."""
        if self._process is None:
            return 0.0
        times = psutil.Process(self._process.pid).cpu_times()
        return times.user + times.system

    def add_successes(self, trans_nos: Sequence[str], *, batch: int = 2000) -> None:
        """Make the gateway know these refunds, each answering SUCCESS for ``AMOUNT``."""
        assert self.control is not None, "start() the sandbox first"
        for start in range(0, len(trans_nos), batch):
            self.control.add_refunds(
                {"transNo": trans_no, "amount": AMOUNT, "timeline": [{"status": "SUCCESS"}]}
                for trans_no in trans_nos[start : start + batch]
            )


# --------------------------------------------------------------------------- seeding


def trans_no(prefix: str, number: int) -> str:
    return f"{prefix}{number:010d}"


def seed_due_refunds(count: int, *, prefix: str = "BENCH", batch: int = 1000) -> list[str]:
    """Insert ``count`` refunds that are due now (in bulk); return their transNos."""
    from django.utils import timezone

    from hsq_refunds.models import Refund

    now = timezone.now()
    numbers = [trans_no(prefix, i) for i in range(count)]
    for start in range(0, count, batch):
        Refund.objects.bulk_create(
            [
                Refund(
                    merchant_no=MERCHANT_NO,
                    trans_no=number,
                    amount=AMOUNT,
                    applied_at=now - timedelta(minutes=5),
                    next_query_at=now - timedelta(seconds=30),
                )
                for number in numbers[start : start + batch]
            ]
        )
    return numbers


def due_count(now: datetime | None = None) -> int:
    from hsq_refunds.models import Refund

    return Refund.objects.due(now).count()


# --------------------------------------------------------------------------- statements


class StatementCounter:
    """Counts the SQL statements every thread of this process sends, by their first word.

    ``connection.execute_wrapper`` acts on one thread's connection only. This counter adds
    itself to the connections that exist when it starts and, through ``connection_created``,
    to every connection opened later in any thread (a thread's first statement opens its
    connection), so statements from worker threads are counted too. An ``executemany`` counts
    as one statement per parameter set (the database runs each), and as one call.
    """

    def __init__(self) -> None:
        self.by_verb: Counter[str] = Counter()
        self.calls = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()
        self._wrapped: list[Any] = []

    @property
    def total(self) -> int:
        return sum(self.by_verb.values())

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
        if many:
            params = list(params)
        with self._lock:
            self.by_verb[verb] += len(params) if many else 1
            self.calls += 1
            self.threads.add(threading.current_thread().name)
        return execute(sql, params, many, context)

    def _install(self, wrapper: Any) -> None:
        with self._lock:
            if any(existing is wrapper for existing in self._wrapped):
                return
            self._wrapped.append(wrapper)
        wrapper.execute_wrappers.append(self)

    def _on_connection_created(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        self._install(connection)

    def __enter__(self) -> StatementCounter:
        from django.db import connections
        from django.db.backends.signals import connection_created

        for wrapper in connections.all(initialized_only=True):
            self._install(wrapper)
        connection_created.connect(self._on_connection_created, weak=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        from django.db.backends.signals import connection_created

        connection_created.disconnect(self._on_connection_created)
        for wrapper in self._wrapped:
            with contextlib.suppress(ValueError):
                wrapper.execute_wrappers.remove(self)
        self._wrapped.clear()


# --------------------------------------------------------------------------- memory and CPU


def peak_rss_mb() -> float:
    """The highest resident set size this process has had, in MiB.

    Linux's ``VmHWM`` where there is one: ``ru_maxrss`` survives ``exec``, so in a child
    started by a large parent it would report the parent's size.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024) if hasattr(os, "sysconf") else 0.0


def rss_mb() -> float:
    """This process's resident set size in MiB (``/proc/self/statm`` where there is one: a
    sampler reading it costs the measured process far less CPU than psutil would)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_MB
    return psutil.Process().memory_info().rss / (1024 * 1024)


class RssSampler:
    """Samples this process's RSS in a thread: the highest value within a ``with`` block."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.start_mb

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __enter__(self) -> RssSampler:
        self.start_mb = self.peak_mb = rss_mb()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())


def cpu_seconds() -> float:
    """User plus system CPU time of this process, every thread included."""
    return time.process_time()


class SlotMeter:
    """How busy the query slots were: wraps ``HsqClient.query_refund`` for a ``with`` block
    and adds up the time each query spent in it, from start to answer (its signing, HTTP
    and verification included). ``busy(concurrency, seconds)`` is that time over
    ``concurrency * seconds``: 1.0 means ``concurrency`` queries were in flight throughout.
    It also keeps the most queries seen in flight at once."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.queries = 0
        self.peak = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._original: Callable[..., Any] | None = None

    def busy(self, concurrency: int, seconds: float) -> float:
        return self.seconds / (concurrency * seconds) if seconds > 0 else 0.0

    def __enter__(self) -> SlotMeter:
        from hsq_refunds.gateway import HsqClient

        original = self._original = HsqClient.query_refund
        meter = self

        def query_refund(client: Any, trans_no: str) -> Any:
            with meter._lock:
                meter._in_flight += 1
                meter.peak = max(meter.peak, meter._in_flight)
            started = time.perf_counter()
            try:
                return original(client, trans_no)
            finally:
                elapsed = time.perf_counter() - started
                with meter._lock:
                    meter._in_flight -= 1
                    meter.seconds += elapsed
                    meter.queries += 1

        HsqClient.query_refund = query_refund  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        from hsq_refunds.gateway import HsqClient

        if self._original is not None:
            HsqClient.query_refund = self._original  # type: ignore[method-assign]
            self._original = None


# --------------------------------------------------------------------------- output


@dataclass
class Targets:
    """The targets a script checks; each prints ``target: ... MET`` or ``MISSED``."""

    results: dict[str, bool] = field(default_factory=dict)

    def check(self, key: str, text: str, met: bool, measured: str) -> bool:
        print(f"target: {text} (measured {measured}) ... {'MET' if met else 'MISSED'}", flush=True)
        self.results[key] = met
        return met


def machine() -> dict[str, Any]:
    """CPUs and load when a run starts: the figures mean little on a busy machine."""
    return {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]}


def print_machine(info: Mapping[str, Any]) -> None:
    print(f"machine: {info['cpus']} CPUs, load average {info['load_1min']:.1f}", flush=True)


def figure(label: str, value: str) -> None:
    print(f"  {label:<44} {value}", flush=True)


def print_summary(summary: Mapping[str, Any]) -> None:
    """The last line of every script: the figures as one line of JSON."""
    print(json.dumps(round_floats(dict(summary)), sort_keys=True, default=str), flush=True)


def last_json_line(output: str) -> dict[str, Any]:
    """The JSON summary a child script printed last."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("the child printed no JSON summary")


def run_self(script: str, argv: Sequence[str]) -> dict[str, Any]:
    """Run ``script`` again in a child process (own CPU and memory figures); echo its output
    except the JSON line, and return that line's data."""
    completed = subprocess.run(
        [sys.executable, script, *argv], cwd=REPO, capture_output=True, text=True, check=False
    )
    lines = completed.stdout.rstrip("\n").splitlines()
    for line in lines:
        if not line.startswith("{"):
            print(line, flush=True)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise RuntimeError(f"{Path(script).name} {' '.join(argv)} exited {completed.returncode}")
    return last_json_line(completed.stdout)


def round_floats(data: Any, digits: int = 4) -> Any:
    """``data`` with every float rounded, for the JSON summary."""
    if isinstance(data, float):
        return round(data, digits)
    if isinstance(data, dict):
        return {key: round_floats(value, digits) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [round_floats(value, digits) for value in data]
    return data
