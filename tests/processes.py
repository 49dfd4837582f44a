"""Run Django management commands in child processes that share the test's database."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil
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


class QCluster:
    """One ``manage.py qcluster`` child in a session of its own, its output in ``log``."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                manage_argv("qcluster"),
                env=dict(env),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        """Whether the cluster said it is running (its workers are up)."""
        return "running." in self.log.read_text(errors="replace")

    def exited(self) -> str | None:
        """The end of the log if the cluster has exited, else ``None``."""
        if self.process.poll() is None:
            return None
        return self.log.read_text(errors="replace")[-3000:]

    def pids(self) -> set[int]:
        """The cluster's processes: the command, its sentinel, workers, monitor and pusher."""
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.process.pid)
            return {root.pid, *(child.pid for child in root.children(recursive=True))}
        return set()

    def stop(self) -> None:
        """SIGTERM (the cluster finishes its tasks and stops), then kill what is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
