"""The quick start, followed as written: ``docs/quickstart.sh`` (the pages show its sections as
their commands) runs in an empty folder, with a fresh venv into which pip installs this
checkout, and prints what the pages say to expect."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docs" / "quickstart.sh"
PAGES = [REPO / "docs" / "quickstart.md", REPO / "docs" / "quickstart.zh.md"]

#: What the steps print, in order; each pattern matches a line of the output both pages show.
EXPECTED = [
    r"Successfully installed .*\bhsq-refunds-\S+",
    r"Applying hsq_refunds\.0001_initial\.\.\. OK",
    r"System check identified no issues \(0 silenced\)\.",
    # PROCESSING, unless the machine stalls past the sandbox's 2 s before the answer is shown.
    r"(?P<trans_no>RF\d{22}) (?:PROCESSING|SUCCESS) accepted",
    r"(?P<trans_no>RF\d{22}) SUCCESS by notification",
    r"notify transNo=(?P<trans_no>RF\d{22}) PROCESSING attempt \d+: acknowledged HTTP 200",
    r"notify transNo=(?P<trans_no>RF\d{22}) SUCCESS attempt \d+: acknowledged HTTP 200",
    r"No refunds to sync\.",
    r"HSQ refunds: OK",
    r"\[OK\] last_sync: The last sync \(management command\) finished \d+ seconds? ago without "
    r"errors: No refunds to sync\.",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sections(script: str) -> list[str]:
    return re.findall(r"^# --8<-- \[start:([a-z]+)\]$", script, re.M)


def fresh_shell(tmp_path: Path) -> dict[str, str]:
    """A new user's shell: no Django, HSQ or venv variables, and ``python3`` on the PATH being
    the interpreter of this run (so that the venv is made with a Python known to have ``venv``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(Path(sys.executable).resolve())
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HSQ_", "DJANGO_", "PYTEST_"))
        and key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    return env


def group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_both_pages_show_every_step_of_the_script():
    names = sections(SCRIPT.read_text(encoding="utf-8"))
    steps = ["ports", "install", "settings", "migrate", "serve", "apply", "notified", "health"]
    assert names == [*steps, "stop"]
    for page in PAGES:
        shown = re.findall(r'--8<-- "docs/quickstart\.sh:([a-z]+)"', page.read_text("utf-8"))
        assert shown == names, page.name


def test_both_pages_show_the_output_to_expect():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for pattern in EXPECTED:
            assert re.search(pattern, text), (page.name, pattern)


@pytest.mark.slow
def test_quick_start_from_a_fresh_venv(tmp_path):
    work = tmp_path / "quickstart"
    work.mkdir()
    shop_port, sandbox_port = free_port(), free_port()
    env = fresh_shell(tmp_path)
    env.update(
        HSQ_REFUNDS_PACKAGE=str(REPO),
        SHOP_PORT=str(shop_port),
        SANDBOX_PORT=str(sandbox_port),
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "quickstart.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["bash", str(SCRIPT)],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        returncode = process.wait(timeout=240)
        stopped = group_gone(process.pid, timeout=30)  # the stop step ends both servers
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.wait()
    output = log_path.read_text(encoding="utf-8", errors="replace")
    shop = work / "shop"
    logs = "".join(
        f"\n--- {name}\n{(shop / name).read_text(errors='replace')}"
        for name in ("sandbox.log", "runserver.log")
        if (shop / name).exists()
    )
    assert returncode == 0, output + logs
    assert stopped, "the sandbox or runserver outlived the stop step"
    assert "Traceback" not in output + logs

    trans_nos = set()
    position = 0
    for pattern in EXPECTED:
        found = re.compile(pattern, re.M).search(output, position)
        assert found, f"{pattern!r} not in the output after position {position}:\n{output}"
        position = found.end()
        if "trans_no" in found.groupdict():
            trans_nos.add(found["trans_no"])
    assert len(trans_nos) == 1, trans_nos  # one refund throughout

    # The settings the page shows, in the project startproject made.
    settings = (shop / "shop" / "settings.py").read_text(encoding="utf-8")
    assert settings.rstrip().endswith(
        'INSTALLED_APPS += ["hsq_refunds"]\n'
        'TIME_ZONE = "Asia/Shanghai"\n'
        f'HSQ_REFUNDS["NOTIFY_URL"] = "http://127.0.0.1:{shop_port}/hsq/refund-notify/"'
    )
    assert f"'BASE_URL': 'http://127.0.0.1:{sandbox_port}/api/acquiring'" in settings
    sandbox_log = (shop / "sandbox.log").read_text(encoding="utf-8")
    assert f"gateway http://127.0.0.1:{sandbox_port}/api/acquiring" in sandbox_log

    # The refund as the shop's database holds it: final by the notification, never queried.
    (trans_no,) = trans_nos
    with contextlib.closing(sqlite3.connect(shop / "db.sqlite3")) as db:
        refund = db.execute(
            "SELECT id, status, final_source, application, amount FROM hsq_refunds_refund"
        ).fetchall()
        assert [row[1:] for row in refund] == [("SUCCESS", "notification", "accepted", 1234)]
        sources = dict(
            db.execute(
                "SELECT source, count(*) FROM hsq_refunds_refundquery WHERE refund_id = ?"
                " GROUP BY source",
                [refund[0][0]],
            ).fetchall()
        )
        stored_no = db.execute("SELECT trans_no FROM hsq_refunds_refund").fetchone()[0]
    assert stored_no == trans_no
    assert sources.get("application") == 1
    assert sources.get("notification", 0) >= 1
    assert "query" not in sources
