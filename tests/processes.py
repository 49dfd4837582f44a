"""Run Django management commands in child processes that share the test's database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parent.parent


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child Django process that must see this test's database.

    The child gets the test's current ``HSQ_REFUNDS`` setting (as overridden by the test).
    Tests that start children need committed data: use ``transactional_db`` (or
    ``django_db(transaction=True)``).
    """
    env = dict(os.environ)
    env["HSQ_TEST_REFUNDS_JSON"] = json.dumps(settings.HSQ_REFUNDS, default=str)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    name = connection.settings_dict["NAME"]
    if connection.vendor == "postgresql":
        env["HSQ_TEST_DATABASE"] = "postgres"
        env["HSQ_TEST_PG_NAME"] = name
    else:
        env["HSQ_TEST_SQLITE_NAME"] = str(name)
    if extra:
        env.update(extra)
    return env


def manage_argv(*args: str) -> list[str]:
    """``python -m django <args>`` with this interpreter."""
    return [sys.executable, "-m", "django", *args]


def run_manage(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a management command to completion in a child process; capture its output."""
    return subprocess.run(
        manage_argv(*args),
        env=child_env(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
