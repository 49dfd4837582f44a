"""The example project as a merchant's engineer meets it: ``make demo``, ``manage.py check``,
``make serve``. Each runs as a child process with its own state folder (``EXAMPLE_VAR_DIR``), so
the developer's ``example_project/var/`` is never touched.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]

#: What the app's rules make of each case once the demo's quick timelines have run.
EXPECTED = {
    # case: (status, attention reason or "-", respCode, final by)
    # Applied for through the app, Refund.objects.apply, with NOTIFY_URL:
    "balance": ("SUCCESS", "-", "200007", "notification"),
    "bank card": ("PROCESSING", "-", "100201", "-"),
    "bank card, partial": ("PROCESSING", "-", "100201", "-"),
    "refused by HSQ": ("FAIL", "-", "200007", "notification"),
    "partial, 1st": ("SUCCESS", "-", "200007", "notification"),
    "partial, 2nd": ("SUCCESS", "-", "200007", "notification"),
    # Applied for elsewhere, Refund.objects.track:
    "balance, already done": ("SUCCESS", "-", "200007", "query"),
    "not at HSQ yet": ("UNKNOWN", "-", "200004", "-"),
    "not at HSQ, old": ("UNKNOWN", "not_found", "200004", "-"),
    "past query window": ("UNKNOWN", "expired", "200021", "-"),
    "amount differs": ("SUCCESS", "amount_mismatch", "200007", "query"),
}
#: The cases applied for elsewhere: HSQ has no returnUrl of the app's for them.
TRACKED = {
    "balance, already done",
    "not at HSQ yet",
    "not at HSQ, old",
    "past query window",
    "amount differs",
}
#: The refunds the demo records: every case, the balance one twice.
RECORDED = 12


def child_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh shell: none of the suite's Django, HSQ or example settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HSQ_", "DJANGO_", "EXAMPLE_", "DEMO_"))
        and key not in {"DATABASE_URL", "PYTHONPATH"}
    }
    env.update(EXAMPLE_VAR_DIR=str(var_dir), NO_COLOR="1", PYTHONUNBUFFERED="1", **extra)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Row:
    trans_no: str
    amount: str
    case: str
    status: str
    resp_code: str
    resp_msg: str
    attention: str
    final_by: str
    queries: str


def outcome_rows(output: str) -> list[Row]:
    """The rows of the demo's last table ("Where each refund ended up")."""
    section = output.split("Where each refund ended up", 1)[1]
    rows = []
    for line in section.splitlines():
        if re.match(r"^RF\d{18}\s", line):
            cells = re.split(r"\s{2,}", line.strip())
            assert len(cells) == 9, line
            rows.append(Row(*cells))
        elif rows:
            break
    return rows


def demo_db(var_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(var_dir / "demo.sqlite3")


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, subprocess.CompletedProcess]]:
    var_dir = tmp_path_factory.mktemp("example_var")
    yield var_dir, run(["-m", "example_project.demo"], child_env(var_dir))


def test_demo_succeeds(demo):
    _var_dir, result = demo
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_demo_ends_each_refund_as_the_rules_say(demo):
    _var_dir, result = demo
    rows = outcome_rows(result.stdout)
    assert sorted(row.case for row in rows) == sorted([*EXPECTED, "balance"]), result.stdout
    for row in rows:
        status, attention, resp_code, final_by = EXPECTED[row.case]
        assert (row.status, row.attention, row.resp_code, row.final_by) == (
            status,
            attention,
            resp_code,
            final_by,
        ), row
    amounts = {row.case: row.amount for row in rows}
    assert amounts["amount differs"] == "¥150.00"
    assert (amounts["partial, 1st"], amounts["partial, 2nd"]) == ("¥100.00", "¥150.00")
    assert "¥1,288.00" in {row.amount for row in rows}


def test_demo_shows_the_command_output_and_the_reasons(demo):
    _var_dir, result = demo
    assert "$ python example_project/manage.py sync_refunds\n" in result.stdout
    assert "$ python example_project/manage.py sync_refunds --all\n" in result.stdout
    # The flagged refunds' details: the amount HSQ reported is spelled out.
    assert "¥105.00" in result.stdout.split("wait for a person", 1)[1]  # yuan, as people read it


def test_demo_refuses_a_refund_beyond_what_was_paid_before_sending_it(demo):
    var_dir, result = demo
    applied = result.stdout.split("Refund.objects.apply", 1)[1].split("Refund.objects.track")[0]
    refused = re.search(r"^(RF\d{18}) .*more than is left.*refused by the app", applied, re.M)
    assert refused, applied
    trans_no = refused.group(1)
    assert f"{trans_no}: RefundRefused" in applied
    message = " ".join(applied.split("RefundRefused", 1)[1].split())
    assert "was paid ¥300.00; ¥250.00 of it is already refunded or in flight" in message
    assert "so ¥80.00 more cannot be refunded" in message
    assert trans_no not in {row.trans_no for row in outcome_rows(result.stdout)}
    with demo_db(var_dir) as db:
        assert db.execute(
            "SELECT count(*) FROM hsq_refunds_refund WHERE trans_no = ?", [trans_no]
        ).fetchone() == (0,)


def test_demo_finishes_refunds_by_notification_without_querying_them(demo):
    """What the table says of each refund is what its audit rows say."""
    var_dir, result = demo
    rows = outcome_rows(result.stdout)
    with demo_db(var_dir) as db:
        stored = {
            trans_no: (application, final_source, queries, notifications)
            for trans_no, application, final_source, queries, notifications in db.execute(
                "SELECT r.trans_no, r.application, r.final_source,"
                " sum(q.source = 'query'), sum(q.source = 'notification')"
                " FROM hsq_refunds_refund r LEFT JOIN hsq_refunds_refundquery q"
                " ON q.refund_id = r.id GROUP BY r.id"
            )
        }
    assert len(stored) == RECORDED
    notified = [row for row in rows if row.final_by == "notification"]
    assert len(notified) == 5
    for row in rows:
        application, final_source, queries, notifications = stored[row.trans_no]
        assert row.queries == str(queries or 0), row
        assert final_source == ("" if row.final_by == "-" else row.final_by), row
        if row.case in TRACKED:
            assert application == "" and not notifications, row  # applied for elsewhere
        else:
            assert application == "accepted" and notifications, row  # HSQ notified it
    assert all(row.queries == "0" for row in notified)
    summary = " ".join(result.stdout.split("Applied through the app:", 1)[1].split())
    assert "5 became final by HSQ's notification, and 5 of those were never queried" in summary
    assert "saved at least 5 queries" in summary


def test_demo_table_is_aligned_with_chinese_text(demo):
    """The column after the Chinese respMsg starts at the same terminal column on every row."""
    from example_project.console import display_width

    _var_dir, result = demo
    lines = result.stdout.split("Where each refund ended up", 1)[1].strip().splitlines()
    header, rows = lines[0], [line for line in lines if re.match(r"^RF\d{18}\s", line)]
    assert any(display_width(row) > len(row) for row in rows)  # some rows hold wide characters

    def last_cell_column(line: str) -> int:
        return display_width(line[: re.search(r"\S+$", line.rstrip()).start()])

    assert {last_cell_column(row) for row in rows} == {last_cell_column(header)}


def test_demo_output_holds_no_secret(demo):
    var_dir, result = demo
    credentials = json.loads((var_dir / "sandbox" / "credentials.json").read_text())
    secret_key = (var_dir / "secret_key").read_text().strip()
    output = result.stdout + result.stderr
    for secret in (credentials["sign_key"], credentials["private_key_password"], secret_key):
        assert len(secret) >= 8
        assert secret not in output


@pytest.mark.slow
def test_demo_runs_again_with_fresh_refunds(demo):
    var_dir, first = demo
    second = run(["-m", "example_project.demo"], child_env(var_dir))
    assert second.returncode == 0, second.stdout + second.stderr
    first_nos = {row.trans_no for row in outcome_rows(first.stdout)}
    second_nos = {row.trans_no for row in outcome_rows(second.stdout)}
    assert len(second_nos) == RECORDED and not first_nos & second_nos
    with demo_db(var_dir) as db:
        stored = {no for (no,) in db.execute("SELECT trans_no FROM hsq_refunds_refund")}
    assert stored == second_nos


@pytest.mark.postgres
def test_demo_on_postgresql_through_database_url(tmp_path):
    if os.environ.get("HSQ_TEST_DATABASE") != "postgres":
        pytest.skip("needs PostgreSQL: run with HSQ_TEST_DATABASE=postgres")
    import psycopg

    from tests.services import ServiceUnavailable, ensure_postgres

    try:
        dsn = ensure_postgres()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    name = f"example_demo_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        url = dsn.rsplit("/", 1)[0] + f"/{name}"
        result = run(["-m", "example_project.demo"], child_env(tmp_path, DATABASE_URL=url))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"PostgreSQL {name} on 127.0.0.1" in result.stdout
        rows = outcome_rows(result.stdout)
        assert {(row.case, row.status, row.final_by) for row in rows} >= {
            ("balance", "SUCCESS", "notification"),
            ("bank card", "PROCESSING", "-"),
            ("refused by HSQ", "FAIL", "notification"),
            ("amount differs", "SUCCESS", "query"),
        }
        with psycopg.connect(url) as db:
            stored = db.execute("SELECT count(*) FROM hsq_refunds_refund").fetchone()[0]
        assert stored == RECORDED
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --------------------------------------------------------------------------- manage.py


def test_check_passes_with_the_sandbox_fallback(tmp_path):
    env = child_env(tmp_path / "var")
    result = run(["example_project/manage.py", "check", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    assert (tmp_path / "var" / "sandbox" / "credentials.json").is_file()


def test_sandbox_notifications_go_to_the_sites_notification_view(tmp_path):
    """With the sandbox, NOTIFY_URL is runserver's notification view (EXAMPLE_PORT's)."""
    env = child_env(tmp_path / "var", EXAMPLE_PORT="8123")
    code = (
        "from urllib.parse import urlsplit; from django.conf import settings; "
        "from django.urls import resolve; url = settings.HSQ_REFUNDS['NOTIFY_URL']; "
        "print(url, resolve(urlsplit(url).path).view_name)"
    )
    result = run(["example_project/manage.py", "shell", "-v", "0", "-c", code], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [
        "http://127.0.0.1:8123/hsq/refund-notify/",
        "hsq_refunds:refund_notify",
    ]


def test_check_warns_of_a_notify_url_that_leads_elsewhere(tmp_path):
    env = child_env(tmp_path / "var", HSQ_NOTIFY_URL="http://127.0.0.1:8000/admin/")
    result = run(["example_project/manage.py", "check", "--fail-level", "WARNING"], env)
    assert result.returncode != 0
    assert "hsq_refunds.W007" in result.stderr


def test_check_deploy_finds_no_error_from_the_repository_root(tmp_path):
    env = child_env(tmp_path / "var", DJANGO_DEBUG="0")
    args = ["-m", "django", "check", "--deploy", "--settings", "example_project.settings"]
    result = run(args, env)
    assert result.returncode == 0, result.stdout + result.stderr
    # Production-mode warnings are expected (and wanted): the sandbox gateway and the
    # notification URL are plain http.
    assert "hsq_refunds.W003" in result.stderr + result.stdout
    assert "hsq_refunds.W006" in result.stderr + result.stdout


def test_check_names_what_a_real_merchant_account_lacks(tmp_path):
    env = child_env(tmp_path / "var", HSQ_MERCHANT_NO="814000473149", HSQ_SIGN_KEY="0" * 32)
    result = run(["example_project/manage.py", "check"], env)
    assert result.returncode != 0
    assert "PRIVATE_KEY" in result.stderr and "PLATFORM_CERT" in result.stderr
    assert "hsq_refunds.E006" in result.stderr
    assert not (tmp_path / "var" / "sandbox").exists()  # no sandbox keys for a real account


# --------------------------------------------------------------------------- make serve


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_login_page(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve exited before the admin answered"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} did not answer 200 in {timeout} s")


def wait_for(predicate, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited before {what}"
        if predicate():
            return
        time.sleep(0.3)
    pytest.fail(f"not within {timeout} s: {what}")


def notifications_recorded(db_path: Path) -> int:
    """Audit rows written by the notification view (the database may still be migrating)."""
    try:
        with sqlite3.connect(db_path, timeout=5) as db:
            return db.execute(
                "SELECT count(*) FROM hsq_refunds_refundquery WHERE source = 'notification'"
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_serve_runs_the_admin_and_stops_everything_on_sigint(tmp_path):
    port = free_port()
    env = child_env(
        tmp_path / "var",
        EXAMPLE_PORT=str(port),
        HSQ_SANDBOX_PORT=str(free_port()),
        DEMO_ADMIN_PASSWORD="a-demo-password-4-tests",
    )
    log = (tmp_path / "serve.log").open("w+", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "example_project.serve"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # As at a terminal: a shell running this suite in the background (CI) starts it with
        # SIGINT ignored, and serve rightly keeps an ignored SIGINT ignored.
        preexec_fn=_default_sigint,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_login_page(f"{base}/admin/login/", process)
        # The refunds are applied for once runserver answers, before the banner.
        wait_for(
            lambda: "is running" in tmp_path.joinpath("serve.log").read_text(),
            process,
            "the banner",
        )
        chinese = requests.get(
            f"{base}/admin/login/", headers={"Accept-Language": "zh-CN,zh;q=0.9"}, timeout=10
        )
        assert "用户名" in chinese.text  # the browser's language picks Simplified Chinese
        session = requests.Session()
        session.get(f"{base}/admin/login/", timeout=10)
        answer = session.post(
            f"{base}/admin/login/?next=/admin/hsq_refunds/refund/",
            data={
                "username": "admin",
                "password": "a-demo-password-4-tests",
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
                "next": "/admin/hsq_refunds/refund/",
            },
            timeout=30,
        )
        assert answer.status_code == 200 and answer.url.endswith("/admin/hsq_refunds/refund/")
        assert len(set(re.findall(r"RF\d{18}", answer.text))) == RECORDED  # the seeded ones
        # HSQ's (the sandbox's) notifications of the applied refunds reach runserver's view.
        wait_for(
            lambda: notifications_recorded(tmp_path / "var" / "db.sqlite3") > 0,
            process,
            "a notification recorded",
            timeout=60,
        )

        # Every descendant: runserver and its reloaded child, qcluster and its workers.
        deadline = time.monotonic() + 30
        while True:
            descendants = psutil.Process(process.pid).children(recursive=True)
            if len(descendants) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert len(descendants) >= 4, descendants
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        _gone, alive = psutil.wait_procs(descendants, timeout=10)
        assert alive == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.seek(0)
        output = log.read()
        log.close()
    assert "a-demo-password-4-tests" in output  # printed for the person, once
    assert "Traceback" not in output
    assert "did not stop in time" not in output  # stopped cleanly, not killed
