"""Throwaway PostgreSQL and Redis servers for the test suite and the benchmarks.

Both run on loopback on fixed, unusual ports, with their data under a temporary folder, and
are started on first use by whichever process needs them (a file lock keeps concurrent starts
apart). PostgreSQL refuses to run as root, so as root it is run as the ``postgres`` user.

    python -m tests.services start    # start both, print their addresses
    python -m tests.services stop     # stop both and delete their data
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PG_PORT = int(os.environ.get("HSQ_TEST_PG_PORT", "55432"))
REDIS_PORT = int(os.environ.get("HSQ_TEST_REDIS_PORT", "56379"))
RUN_DIR = Path(
    os.environ.get("HSQ_TEST_RUN_DIR", Path(tempfile.gettempdir()) / "hsq_refunds_services")
)
PG_DIR = RUN_DIR / "postgres"
REDIS_DIR = RUN_DIR / "redis"
PG_DATABASE = "hsq_refunds"


class ServiceUnavailable(RuntimeError):
    """A server could not be started here; the message says what is missing."""


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_listening(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _listening(port):
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.chmod(0o755)
    with open(RUN_DIR / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise ServiceUnavailable(
        "PostgreSQL is not installed (no pg_ctl); run 'make system-deps' or "
        "'apt-get install postgresql'"
    )


def _as_postgres_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def ensure_postgres() -> str:
    """Start the throwaway PostgreSQL server unless it is running; return its DSN."""
    dsn = f"postgresql://postgres@127.0.0.1:{PG_PORT}/{PG_DATABASE}"
    if _listening(PG_PORT):
        return dsn
    with _lock("postgres"):
        if _listening(PG_PORT):
            return dsn
        bindir = _pg_bindir()
        data = PG_DIR / "data"
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(PG_DIR, ignore_errors=True)
            PG_DIR.mkdir(parents=True)
            if os.geteuid() == 0:
                shutil.chown(PG_DIR, "postgres", "postgres")
            subprocess.run(
                _as_postgres_user(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        "postgres",
                        "-A",
                        "trust",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                        "--no-sync",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        options = (
            f"-p {PG_PORT} -c listen_addresses=127.0.0.1 -c unix_socket_directories={PG_DIR} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        subprocess.run(
            _as_postgres_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(PG_DIR / "server.log"),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if not _wait_listening(PG_PORT, 30):
            raise ServiceUnavailable(f"PostgreSQL did not start; see {PG_DIR / 'server.log'}")
        _create_database(bindir)
    return dsn


def _create_database(bindir: Path) -> None:
    psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-tAc"]
    exists = subprocess.run(
        [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if exists != "1":
        subprocess.run([*psql, f"CREATE DATABASE {PG_DATABASE}"], check=True, capture_output=True)


def postgres_settings() -> dict:
    """Django ``DATABASES`` entry for the throwaway server (started if need be).

    ``HSQ_TEST_PG_NAME`` names another database on it: child processes of a test set it to
    the test database so they see what the test wrote.
    """
    ensure_postgres()
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("HSQ_TEST_PG_NAME", PG_DATABASE),
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": str(PG_PORT),
        "CONN_MAX_AGE": 0,
    }


def ensure_redis() -> str:
    """Start the throwaway Redis server unless it is running; return its URL."""
    url = f"redis://127.0.0.1:{REDIS_PORT}/0"
    if _listening(REDIS_PORT):
        return url
    with _lock("redis"):
        if _listening(REDIS_PORT):
            return url
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(server).exists():
            raise ServiceUnavailable(
                "Redis is not installed (no redis-server); run 'make system-deps' or "
                "'apt-get install redis-server'"
            )
        REDIS_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                server,
                "--port",
                str(REDIS_PORT),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(REDIS_DIR),
                "--pidfile",
                str(REDIS_DIR / "redis.pid"),
                "--logfile",
                str(REDIS_DIR / "redis.log"),
            ],
            check=True,
        )
        if not _wait_listening(REDIS_PORT, 15):
            raise ServiceUnavailable(f"Redis did not start; see {REDIS_DIR / 'redis.log'}")
    return url


def stop_all() -> None:
    """Stop both servers (if this module started them) and delete their data."""
    data = PG_DIR / "data"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(ServiceUnavailable, subprocess.CalledProcessError):
            subprocess.run(
                _as_postgres_user(
                    [str(_pg_bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
    pidfile = REDIS_DIR / "redis.pid"
    if pidfile.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().strip()), 15)
        _wait_closed(REDIS_PORT, 10)
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def _wait_closed(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _listening(port) and time.monotonic() < deadline:
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    if argv == ["start"]:
        print(f"postgres: {ensure_postgres()}")
        print(f"redis: {ensure_redis()}")
        return 0
    if argv == ["stop"]:
        stop_all()
        print("stopped")
        return 0
    print("usage: python -m tests.services start|stop", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
