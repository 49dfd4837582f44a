"""Throwaway PostgreSQL and Redis servers for the test suite and the benchmarks.

Each checkout has servers of its own, so that two checkouts on one machine can run the suite
at once and ``stop`` in one never stops the other's: their data is under a temporary folder
named after the checkout's absolute path, and their ports are derived from that path too
(a stable hash into 21000-24999 for PostgreSQL and 25000-28999 for Redis, below the kernel's
ephemeral ports). A port that something else already listens on is skipped for the next one;
the ports in use are kept in the run folder (``ports.json``), where every process of the
checkout reads them. ``HSQ_TEST_RUN_DIR``, ``HSQ_TEST_PG_PORT`` and ``HSQ_TEST_REDIS_PORT``
override the folder and the ports (a server already listening on an overridden port is used
as it is).

The servers are started on first use by whichever process needs them (file locks keep
concurrent starts apart: one per checkout, and one for the whole machine around choosing a
port and starting a server on it). PostgreSQL refuses to run as root, so as root it is run as
the ``postgres`` user.

    python -m tests.services start    # start both, print their addresses
    python -m tests.services stop     # stop both and delete their data
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Names this checkout's servers, folders and files apart from other checkouts' on the machine.
CHECKOUT_KEY = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
RUN_DIR = Path(
    os.environ.get(
        "HSQ_TEST_RUN_DIR", Path(tempfile.gettempdir()) / f"hsq_refunds_services-{CHECKOUT_KEY}"
    )
)
PG_DIR = RUN_DIR / "postgres"
REDIS_DIR = RUN_DIR / "redis"
PG_DATABASE = "hsq_refunds"
_PORTS_FILE = RUN_DIR / "ports.json"
#: Held (by any checkout) while a port is chosen and a server started on it.
_MACHINE_LOCK = Path(tempfile.gettempdir()) / "hsq_refunds_services.lock"
#: Where each server's derived port may fall: (first port, how many).
_PORT_RANGES = {"postgres": (21000, 4000), "redis": (25000, 4000)}
_PORT_ENV = {"postgres": "HSQ_TEST_PG_PORT", "redis": "HSQ_TEST_REDIS_PORT"}


def _derived_port(service: str) -> int:
    first, count = _PORT_RANGES[service]
    return first + int(CHECKOUT_KEY, 16) % count


def _recorded_ports() -> dict[str, int]:
    try:
        recorded = json.loads(_PORTS_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in recorded.items() if k in _PORT_RANGES and isinstance(v, int)}


def _port(service: str) -> int:
    """The port ``service`` uses: the override, else the one recorded, else the derived one."""
    override = os.environ.get(_PORT_ENV[service])
    if override:
        return int(override)
    return _recorded_ports().get(service) or _derived_port(service)


def _refresh_ports() -> None:
    """Read the ports again: another process of this checkout may have moved one."""
    global PG_PORT, REDIS_PORT
    PG_PORT, REDIS_PORT = _port("postgres"), _port("redis")


PG_PORT = _port("postgres")
REDIS_PORT = _port("redis")


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
def _flock(path: Path) -> Iterator[None]:
    try:
        handle = open(path, "a")
    except PermissionError:  # another user's lock file: a lock on it needs no write access
        handle = open(path)
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """This checkout's lock for ``name``, then the machine's (always in that order)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.chmod(0o755)
    with _flock(RUN_DIR / f"{name}.lock"), _flock(_MACHINE_LOCK):
        yield


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _choose_port(service: str) -> int:
    """A port for a server about to start (under the machine's lock), recorded for the checkout.

    An overridden port is taken as it is. Otherwise the recorded or derived port, or the
    next free one in the service's range when something else has it.
    """
    if os.environ.get(_PORT_ENV[service]):
        return _port(service)
    first, count = _PORT_RANGES[service]
    start = _port(service) - first
    for step in range(count):
        port = first + (start + step) % count
        if not _listening(port) and _bindable(port):
            break
    else:
        raise ServiceUnavailable(f"no free port for {service} in {first}-{first + count - 1}")
    recorded = {**_recorded_ports(), service: port}
    _PORTS_FILE.write_text(json.dumps(recorded) + "\n")
    _refresh_ports()
    return port


def _pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _postgres_running() -> bool:
    """Whether this checkout's PostgreSQL answers on ``PG_PORT`` (any server, if overridden)."""
    _refresh_ports()
    if not _listening(PG_PORT):
        return False
    if os.environ.get("HSQ_TEST_PG_PORT"):
        return True
    pidfile = PG_DIR / "data" / "postmaster.pid"
    with contextlib.suppress(OSError):
        lines = pidfile.read_text().splitlines()
        return len(lines) > 3 and lines[3].strip() == str(PG_PORT) and _pid_alive(pidfile)
    return False


def _redis_running() -> bool:
    """Whether this checkout's Redis answers on ``REDIS_PORT`` (any server, if overridden)."""
    _refresh_ports()
    if not _listening(REDIS_PORT):
        return False
    if os.environ.get("HSQ_TEST_REDIS_PORT"):
        return True
    return _recorded_ports().get("redis") == REDIS_PORT and _pid_alive(REDIS_DIR / "redis.pid")


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
    """Start this checkout's PostgreSQL server unless it is running; return its DSN."""
    if not _postgres_running():
        with _lock("postgres"):
            if not _postgres_running():
                _start_postgres()
    return f"postgresql://postgres@127.0.0.1:{PG_PORT}/{PG_DATABASE}"


def _start_postgres() -> None:
    """Start this checkout's server on a free port (under both locks)."""
    port = _choose_port("postgres")
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
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={PG_DIR} "
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
    if not _wait_listening(port, 30):
        raise ServiceUnavailable(f"PostgreSQL did not start; see {PG_DIR / 'server.log'}")
    _create_database(bindir)


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
    """Start this checkout's Redis server unless it is running; return its URL."""
    if not _redis_running():
        with _lock("redis"):
            if not _redis_running():
                _start_redis()
    return f"redis://127.0.0.1:{REDIS_PORT}/0"


def _start_redis() -> None:
    """Start this checkout's server on a free port (under both locks)."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(server).exists():
        raise ServiceUnavailable(
            "Redis is not installed (no redis-server); run 'make system-deps' or "
            "'apt-get install redis-server'"
        )
    port = _choose_port("redis")
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            server,
            "--port",
            str(port),
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
    if not _wait_listening(port, 15):
        raise ServiceUnavailable(f"Redis did not start; see {REDIS_DIR / 'redis.log'}")


def stop_all() -> None:
    """Stop this checkout's servers (if this module started them) and delete their data."""
    _refresh_ports()
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
