"""Where the example project keeps its state, and the sandbox credentials it falls back to.

Nothing here needs Django: ``settings.py``, ``demo.py`` and ``serve.py`` all use it, the last two
before Django is set up (they must know the sandbox's port before the settings are read).

Everything the example writes lives in one folder, ``example_project/var/`` (ignored by git), or
in ``$EXAMPLE_VAR_DIR`` where that is set, so that tests and several checkouts never share one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from hsq_refunds.sandbox.credentials import (
    CREDENTIALS_FILE,
    Credentials,
    create_credentials,
)

__all__ = [
    "DEFAULT_EXAMPLE_PORT",
    "DEFAULT_SANDBOX_PORT",
    "HSQ_ENV_VARS",
    "NOTIFY_PATH",
    "PACKAGE_DIR",
    "REPO_DIR",
    "database_settings",
    "env_flag",
    "example_port",
    "notify_url",
    "sandbox_base_url",
    "sandbox_credentials",
    "sandbox_port",
    "secret_key",
    "uses_sandbox",
    "var_dir",
]

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

#: Where ``make serve`` runs the sandbox gateway unless ``$HSQ_SANDBOX_PORT`` says otherwise.
DEFAULT_SANDBOX_PORT = 8765
#: Where ``make serve`` runs the site (runserver) unless ``$EXAMPLE_PORT`` says otherwise.
DEFAULT_EXAMPLE_PORT = 8000
#: Where ``urls.py`` routes HSQ's refund notifications (``hsq_refunds:refund_notify``).
NOTIFY_PATH = "/hsq/refund-notify/"

#: The variables of a real HSQ merchant account (the sandbox stands in without them), and the
#: address where HSQ notifies the site.
HSQ_ENV_VARS = (
    "HSQ_MERCHANT_NO",
    "HSQ_SIGN_KEY",
    "HSQ_PRIVATE_KEY",
    "HSQ_PRIVATE_KEY_PASSWORD",
    "HSQ_PLATFORM_CERT",
    "HSQ_BASE_URL",
    "HSQ_ENVIRONMENT",
    "HSQ_NOTIFY_URL",
)

_SANDBOX_MERCHANT_NO = "888000000001"


def env_flag(name: str, default: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """A yes/no environment variable: ``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    value = environ.get(name, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    return default


def var_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The example's state folder, created (owner-only) on first use."""
    configured = environ.get("EXAMPLE_VAR_DIR")
    path = Path(configured).expanduser().resolve() if configured else PACKAGE_DIR / "var"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def uses_sandbox(environ: Mapping[str, str] = os.environ) -> bool:
    """True unless ``$HSQ_MERCHANT_NO`` names a real merchant account."""
    return not environ.get("HSQ_MERCHANT_NO", "").strip()


def sandbox_port(environ: Mapping[str, str] = os.environ) -> int:
    """The sandbox gateway's port: ``$HSQ_SANDBOX_PORT`` or 8765."""
    return _port(environ, "HSQ_SANDBOX_PORT", DEFAULT_SANDBOX_PORT)


def example_port(environ: Mapping[str, str] = os.environ) -> int:
    """The site's port under ``make serve`` (runserver): ``$EXAMPLE_PORT`` or 8000."""
    return _port(environ, "EXAMPLE_PORT", DEFAULT_EXAMPLE_PORT)


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a port number, got {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"{name} must be between 1 and 65535, got {port}")
    return port


def notify_url(port: int, host: str = "127.0.0.1") -> str:
    """The address of the example's notification view on a local port (``NOTIFY_URL``)."""
    return f"http://{host}:{port}{NOTIFY_PATH}"


def sandbox_base_url(port: int) -> str:
    """The URL the app calls when the sandbox stands in for HSQ."""
    return f"http://127.0.0.1:{port}/api/acquiring"


def sandbox_credentials(base: Path) -> Credentials:
    """The sandbox merchant's keys under ``base/sandbox/``, generated on first use.

    Several processes may start at once on a fresh machine (``make serve`` starts runserver and
    qcluster); each would generate keys. So the keys are generated in a private temporary folder
    and moved into place with one ``rename``: the first process wins, the others load its keys.
    """
    target = base / "sandbox"
    if (target / CREDENTIALS_FILE).exists():
        return Credentials.load(target)
    staging = Path(tempfile.mkdtemp(prefix=".sandbox-", dir=base))
    try:
        create_credentials(staging / "keys", merchant_no=_SANDBOX_MERCHANT_NO)
        try:
            (staging / "keys").rename(target)
        except OSError:
            if not (target / CREDENTIALS_FILE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Credentials.load(target)


def secret_key(base: Path, environ: Mapping[str, str] = os.environ) -> str:
    """``$DJANGO_SECRET_KEY``, or a key generated once into ``base/secret_key`` (owner-only)."""
    configured = environ.get("DJANGO_SECRET_KEY", "").strip()
    if configured:
        return configured
    path = base / "secret_key"
    if not path.exists():
        # Written aside and linked into place: a concurrent reader never sees a half-written key.
        fd, staging = tempfile.mkstemp(prefix=".secret_key-", dir=base)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_urlsafe(50))
            with contextlib.suppress(FileExistsError):  # another process was first
                os.link(staging, path)
        finally:
            os.unlink(staging)
    return path.read_text(encoding="ascii").strip()


def database_settings(base: Path, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Django's ``DATABASES["default"]``: SQLite in ``base``, or ``$DATABASE_URL``.

    ``postgres://user:password@host:port/name?sslmode=require`` selects PostgreSQL (query
    parameters become connection options); ``sqlite:////absolute/path.sqlite3`` another SQLite
    file. Parsed here with :mod:`urllib.parse` rather than with one more dependency.
    """
    url = environ.get("DATABASE_URL", "").strip()
    if not url:
        return _sqlite(base / "db.sqlite3")
    parts = urlsplit(url)
    if parts.scheme in {"postgres", "postgresql"}:
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ValueError("DATABASE_URL names no database: postgres://user@host:5432/NAME")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": unquote(parts.hostname or ""),
            "PORT": str(parts.port or ""),
            "OPTIONS": dict(parse_qsl(parts.query)),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    if parts.scheme == "sqlite":
        path = unquote(parts.path).lstrip("/")
        if not path:
            raise ValueError("DATABASE_URL names no file: sqlite:////absolute/path.sqlite3")
        # Three slashes or four, the path is taken as absolute: a relative one would depend on
        # the directory each process happens to start in.
        return _sqlite(Path("/" + path))
    # Only the scheme is named: the rest may hold a password.
    raise ValueError(
        f"DATABASE_URL: unsupported scheme {parts.scheme!r}; use postgres:// or sqlite://"
    )


def _sqlite(path: Path) -> dict[str, Any]:
    """SQLite set up for several processes (runserver, qcluster, cron) writing at once.

    WAL lets readers go on while one process writes; ``IMMEDIATE`` transactions take the write
    lock when they begin, so two writers queue (up to ``timeout`` seconds) instead of failing
    with "database is locked" when one of them upgrades a read to a write.
    """
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
