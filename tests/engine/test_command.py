"""``manage.py sync_refunds`` and ``prune_refund_queries``, in-process and as child processes."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from hsq_refunds.models import Refund, RefundQuery
from tests.processes import run_manage

GOOD = [
    {"transNo": "S1", "timeline": [{"status": "SUCCESS"}]},
    {"transNo": "F1", "timeline": [{"status": "FAIL"}]},
    {"transNo": "P1", "timeline": [{"status": "PROCESSING"}]},
]


def run(*args: str) -> tuple[int, str, str]:
    """``call_command``: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("sync_refunds", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue() + str(exc)
    return 0, out.getvalue(), err.getvalue()


@pytest.mark.django_db
class TestInProcess:
    def test_syncs_what_is_due_and_exits_0(self, refunds, sandbox):
        refunds([*GOOD, {"transNo": "L1", "due": False}])
        status, out, err = run()
        assert status == 0
        assert out == ("3 refunds queried: 1 succeeded, 1 refund failed, 1 still processing.\n")
        assert "3 of 3 refunds synced" in err  # plain progress lines: stderr is no terminal
        assert dict(Refund.objects.values_list("trans_no", "status")) == {
            "S1": "SUCCESS",
            "F1": "FAIL",
            "P1": "PROCESSING",
            "L1": "UNKNOWN",
        }

    def test_a_failed_query_exits_1_and_is_listed(self, refunds, sandbox):
        refunds(GOOD)
        sandbox.set_fault("bad_signature", trans_no="P1")
        status, out, err = run()
        assert status == 1
        lines = out.splitlines()
        assert lines[0].startswith("P1 [888000000001]: signature ")
        assert lines[-1] == (
            "3 refunds: HSQ answered 2 (1 succeeded, 1 refund failed); "
            "1 could not be queried: signature invalid."
        )
        assert "1 refund could not be synced." in err
        assert "Traceback" not in out + err

    def test_verbosity_0_prints_the_summary_alone(self, refunds, sandbox):
        refunds(GOOD)
        sandbox.set_fault("http_error", trans_no="P1", status=502)
        status, out, err = run("-v", "0")
        assert status == 1
        # What was asked (3), what HSQ answered (2) and what failed (1) add up.
        assert out == (
            "3 refunds: HSQ answered 2 (1 succeeded, 1 refund failed); "
            "1 could not be queried: network error.\n"
        )
        assert "refunds synced" not in err

    def test_json_output(self, refunds, sandbox):
        refunds(GOOD)
        sandbox.set_fault("unsigned_failure", trans_no="F1", error_code="BUSY")
        status, out, _err = run("--json")
        assert status == 1
        data = json.loads(out)
        assert data["ok"] is False and data["queried"] == 3
        assert data["by_status"] == {"SUCCESS": 1, "PROCESSING": 1, "UNKNOWN": 1}
        assert data["errors"] == [
            {
                "trans_no": "F1",
                "merchant_no": "888000000001",
                "error_type": "gateway",
                "code": "BUSY",
                "message": "系统繁忙,请稍后再试 (unsigned)",
            }
        ]
        assert {"from": "UNKNOWN", "to": "SUCCESS", "count": 1} in data["status_changes"]

    def test_dry_run_writes_nothing(self, refunds, sandbox):
        refunds(GOOD)
        before = list(Refund.objects.order_by("id").values_list())
        status, out, _err = run("--dry-run", "--json")
        assert status == 0
        assert json.loads(out)["dry_run"] is True
        assert list(Refund.objects.order_by("id").values_list()) == before
        assert not RefundQuery.objects.exists()
        assert sum(sandbox.query_counts().values()) == 3

    def test_trans_nos_are_queried_even_if_not_due(self, refunds, sandbox):
        refunds([{"transNo": "L1", "due": False}, {"transNo": "L2", "due": False}])
        status, _out, _err = run("L1")
        assert status == 0 and sandbox.query_counts() == {"L1": 1}

    def test_an_unknown_trans_no_is_named_and_exits_1(self, refunds, sandbox):
        refunds([{"transNo": "L1", "due": False}])
        status, out, _err = run("L1", "NOPE")
        assert status == 1
        assert "NOPE [-]: unknown transNo NOPE is not tracked" in out
        assert "1 refund queried: 1 succeeded; 1 not tracked." in out
        assert sandbox.query_counts() == {"L1": 1}

    def test_all_and_errored_only_and_limit(self, refunds, sandbox):
        refunds(
            [
                {"transNo": "L1", "due": False},
                {"transNo": "E1", "due": False, "error_count": 3},
                {"transNo": "S0", "status": "SUCCESS", "next_query_at": None},
            ]
        )
        assert run("--errored-only")[0] == 0
        assert sandbox.query_counts() == {"E1": 1}
        assert run("--all", "--limit", "1")[0] == 0
        assert sum(sandbox.query_counts().values()) == 2
        assert run("--all", "--include-final", "--concurrency", "2")[0] == 0
        assert set(sandbox.query_counts()) == {"L1", "E1", "S0"}

    def test_an_unknown_merchant_exits_2(self, refunds, sandbox):
        refunds(GOOD)
        status, _out, err = run("--merchant", "123")
        assert status == 2
        assert "Configuration error: merchant '123' is not configured" in err
        assert sandbox.query_counts() == {}

    def test_a_refund_of_an_unconfigured_merchant_exits_2(self, refunds, sandbox):
        refunds([*GOOD, {"transNo": "M9", "merchant_no": "999"}])
        status, out, err = run()
        assert status == 2
        assert "M9 [999]: configuration " in out
        assert "manage.py check" in err

    def test_bad_arguments_are_refused(self, sandbox):
        with pytest.raises(CommandError, match="concurrency"):
            call_command("sync_refunds", "--concurrency", "0", stdout=io.StringIO())


@pytest.mark.django_db
def test_prune_refund_queries(refunds, sandbox, configure):
    configure(QUERY_LOG_RETENTION_DAYS=30)
    [refund] = refunds([{"transNo": "S1"}])
    now = timezone.now()
    RefundQuery.objects.bulk_create(
        RefundQuery(refund=refund, outcome="ok", queried_at=now - timedelta(days=days))
        for days in (1, 29, 31, 400)
    )
    out = io.StringIO()
    call_command("prune_refund_queries", stdout=out)
    assert out.getvalue() == "Deleted 2 refund queries older than 30 days.\n"
    assert RefundQuery.objects.count() == 2
    call_command("prune_refund_queries", "--days", "2", stdout=out)
    assert RefundQuery.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("days", ["0", "-3"])
def test_prune_refuses_fewer_than_one_day(refunds, sandbox, days):
    [refund] = refunds([{"transNo": "S1"}])
    RefundQuery.objects.create(refund=refund, outcome="ok")
    with pytest.raises(CommandError, match="--days must be at least 1"):
        call_command("prune_refund_queries", "--days", days)
    assert RefundQuery.objects.count() == 1


# --------------------------------------------------------------------------- child processes


@pytest.mark.django_db(transaction=True)
class TestChildProcess:
    """The exit status cron sees, from a real ``python -m django sync_refunds`` process."""

    def test_exit_0_when_everything_was_queried(self, refunds, sandbox):
        refunds(GOOD)
        done = run_manage(["sync_refunds"])
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("1 still processing.")
        assert Refund.objects.filter(status="SUCCESS").count() == 1
        assert RefundQuery.objects.count() == 3

    def test_exit_1_when_a_query_failed(self, refunds, sandbox):
        refunds(GOOD)
        sandbox.set_fault("drop", trans_no="S1")
        done = run_manage(["sync_refunds", "--json"])
        assert done.returncode == 1
        assert json.loads(done.stdout)["errors"][0]["trans_no"] == "S1"
        assert "CommandError: 1 refund could not be synced." in done.stderr
        assert "Traceback" not in done.stderr
        assert Refund.objects.get(trans_no="S1").status == "UNKNOWN"

    def test_verbosity_0_prints_no_log_lines_when_the_project_configures_none(
        self, refunds, sandbox
    ):
        refunds(GOOD)
        sandbox.set_fault("drop", trans_no="S1")
        done = run_manage(["sync_refunds", "-v", "0"])
        assert done.returncode == 1
        assert "transNo=S1" not in done.stderr and "WARNING" not in done.stderr
        assert done.stdout.strip().count("\n") == 0  # the summary alone

    def test_the_schedule_command_is_silent_at_verbosity_0(self):
        done = run_manage(["hsq_refunds_schedule", "-v", "0"])
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""

    def test_exit_1_for_an_unknown_trans_no(self, refunds, sandbox):
        done = run_manage(["sync_refunds", "NOPE"])
        assert done.returncode == 1
        assert "NOPE [-]: unknown transNo NOPE is not tracked" in done.stdout

    def test_exit_2_for_a_configuration_error(self, refunds, sandbox, configure):
        refunds(GOOD)
        configure(CONCURRENCY="many")
        done = run_manage(["sync_refunds"])
        assert done.returncode == 2
        assert 'Configuration error: HSQ_REFUNDS["CONCURRENCY"]' in done.stderr
        assert "Traceback" not in done.stderr
        assert sandbox.query_counts() == {}


@pytest.mark.django_db(transaction=True)
def test_a_progress_bar_when_stderr_is_a_terminal(refunds, sandbox):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    from tests.processes import REPO, child_env, manage_argv

    refunds(GOOD)
    primary, secondary = pty.openpty()
    # An 80-column terminal (a new pseudo-terminal is 0 columns wide: no room for a bar).
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        done = subprocess.run(
            manage_argv("sync_refunds"),
            env=child_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            timeout=120,
            check=False,
        )
        os.close(secondary)
        secondary = -1
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal is closed once everything is read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    terminal = b"".join(chunks).decode()
    assert done.returncode == 0
    assert "0/3" in terminal and "refund/s" in terminal and "\r" in terminal
    assert "refunds synced" not in terminal  # no plain lines on a terminal
    assert done.stdout.endswith("1 still processing.\n")
