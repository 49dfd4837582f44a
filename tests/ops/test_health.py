"""The health figures against crafted states, their thresholds, and ``manage.py
hsq_refunds_health`` (exit statuses, ``--json``, Chinese)."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import translation

from hsq_refunds.gateway import ConfigurationError
from hsq_refunds.health import HealthStatus, check_health, health_settings
from hsq_refunds.scheduling import install_schedule

from .conftest import MERCHANT

pytestmark = pytest.mark.django_db

OK, WARNING, CRITICAL = HealthStatus.OK, HealthStatus.WARNING, HealthStatus.CRITICAL


@pytest.fixture
def healthy(make_run):
    """A state in which every check is ok: a sync ran a minute ago, the schedule is in place."""
    make_run()
    install_schedule(1)


def statuses(report) -> dict[str, HealthStatus]:
    return {check.name: check.status for check in report.checks}


# --------------------------------------------------------------------------- the figures


def test_a_healthy_state_is_ok_everywhere(healthy, make_refund, now):
    make_refund(status="PROCESSING")
    make_refund(status="SUCCESS", applied_ago=timedelta(days=30))

    report = check_health(now)

    assert set(statuses(report).values()) == {OK}, [c.message for c in report.checks]
    assert report.status is OK
    assert [check.name for check in report.checks] == [
        "settings",
        "attention",
        "unfinished",
        "overdue",
        "stale_claims",
        "last_sync",
        "failed_queries",
        "signature",
        "schedule",
    ]


def test_no_sync_run_yet_is_a_warning(now):
    install_schedule(1)

    report = check_health(now)
    last = report.check("last_sync")

    assert last.status is WARNING and last.value is None
    assert "No sync has run yet" in last.message
    assert report.status is WARNING
    assert {name for name, status in statuses(report).items() if status} == {"last_sync"}


def test_a_stuck_claim_is_a_warning(healthy, make_refund, now):
    make_refund("STUCK", claim_token="a" * 32, claimed_until=now - timedelta(minutes=20))
    make_refund("HELD", claim_token="b" * 32, claimed_until=now + timedelta(minutes=4))
    make_refund("FREE")

    check = check_health(now).check("stale_claims")

    assert check.status is WARNING
    assert check.value["count"] == 1
    assert "20 minutes" in check.message and 'HSQ_REFUNDS["CLAIM_LEASE"]' in check.message


@pytest.mark.parametrize(
    ("late", "expected", "count"),
    [
        (timedelta(minutes=5), OK, 0),
        (timedelta(minutes=20), WARNING, 1),
        (timedelta(hours=2), CRITICAL, 1),
    ],
)
def test_an_overdue_queue(healthy, make_refund, now, late, expected, count):
    make_refund("LATE", next_query_at=now - late)
    make_refund("NOT-DUE", next_query_at=now + timedelta(minutes=1))
    make_refund("NEVER", next_query_at=None, status="SUCCESS")

    check = check_health(now).check("overdue")

    assert check.status is expected
    assert check.value["count"] == count
    if count:
        assert "cron" in check.message and check.value["late_seconds"] == late.total_seconds()


def test_a_signature_failure_points_at_the_platform_certificate(
    healthy, make_refund, make_query, now
):
    refund = make_refund()
    make_query(refund, "signature_error", error_type="signature", ago=timedelta(minutes=10))
    make_query(refund, "ok")

    report = check_health(now)
    check = report.check("signature")

    assert check.status is CRITICAL and report.status is CRITICAL
    assert check.value[MERCHANT]["count"] == 1
    assert f"MANDAO_{MERCHANT}_pub.cer" in check.message
    assert f'HSQ_REFUNDS["MERCHANTS"]["{MERCHANT}"]["PLATFORM_CERT"]' in check.message
    assert "platform certificate" in check.message


def test_a_signature_failure_before_the_window_is_not_reported(
    healthy, make_refund, make_query, now
):
    make_query(make_refund(), "signature_error", ago=timedelta(hours=2))

    assert check_health(now).check("signature").status is OK


def test_the_oldest_unfinished_refund_of_each_status(healthy, make_refund, now):
    make_refund("OLD-PROC", status="PROCESSING", applied_ago=timedelta(days=6))
    make_refund("NEW-PROC", status="PROCESSING", applied_ago=timedelta(hours=1))
    make_refund("OLD-INIT", status="INIT", applied_ago=timedelta(hours=3))
    make_refund("ANCIENT-DONE", status="SUCCESS", applied_ago=timedelta(days=90))

    check = check_health(now).check("unfinished")

    assert check.status is WARNING
    assert set(check.value) == {"PROCESSING", "INIT"}
    assert check.value["PROCESSING"]["trans_no"] == "OLD-PROC"
    assert check.value["PROCESSING"]["age_seconds"] == 6 * 86400
    assert check.value["INIT"]["trans_no"] == "OLD-INIT"
    assert "OLD-PROC (6 days)" in check.message and "OLD-INIT (3 hours)" in check.message


def test_refunds_needing_attention_by_reason(healthy, make_refund, now):
    make_refund(needs_attention=True, attention_reason="not_found")
    make_refund(needs_attention=True, attention_reason="not_found")
    make_refund(needs_attention=True, attention_reason="amount_mismatch")
    make_refund(needs_attention=False)

    check = check_health(now).check("attention")

    assert check.status is WARNING
    assert check.value == {"total": 3, "by_reason": {"not_found": 2, "amount_mismatch": 1}}
    assert check.message.startswith("3 refunds need attention: 2 Not found at HSQ")


@pytest.mark.parametrize(
    ("failed", "ok", "expected"),
    [(1, 9, OK), (3, 7, WARNING), (6, 4, CRITICAL), (4, 0, WARNING)],
)
def test_the_share_of_failed_queries(healthy, make_refund, make_query, now, failed, ok, expected):
    refund = make_refund()
    for _ in range(failed):
        make_query(refund, "transport_error", error_type="transport")
    for _ in range(ok):
        make_query(refund, "ok")
    # "Not found" is an answer, not a failed query; two hours ago is outside the window.
    make_query(refund, "not_found")
    make_query(refund, "transport_error", ago=timedelta(hours=2))

    check = check_health(now).check("failed_queries")

    total = failed + ok + 1
    assert check.status is expected
    assert check.value["queries"] == total and check.value["failed"] == failed
    assert f"{failed} of {total} queries failed in the last 1 hour" in check.message


def test_the_last_sync_run(make_run, now):
    install_schedule(1)
    make_run(ago=timedelta(hours=3), ok=True)
    assert check_health(now).check("last_sync").status is CRITICAL

    make_run(ago=timedelta(minutes=30))
    assert check_health(now).check("last_sync").status is WARNING

    make_run(
        ago=timedelta(seconds=30),
        ok=False,
        error_count=2,
        errors_by_type={"transport": 2},
        summary="2 refunds queried; 2 failed: 2 network error.",
    )
    check = check_health(now).check("last_sync")
    assert check.status is WARNING
    assert check.value["errors_by_type"] == {"transport": 2} and check.value["age_seconds"] == 30
    assert "with errors: 2 refunds queried; 2 failed" in check.message


def test_the_schedule(make_run, now):
    make_run()
    assert check_health(now).check("schedule").status is WARNING

    install_schedule(5)
    check = check_health(now).check("schedule")
    assert check.status is OK and check.value["minutes"] == 5

    assert check_health(now + timedelta(hours=2)).check("schedule").status is CRITICAL


def test_the_schedule_is_not_looked_for_without_django_q(make_run, now, settings):
    make_run()
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_q"]

    check = check_health(now).check("schedule")

    assert check.status is OK and "cron" in check.message


def test_an_invalid_hsq_refunds_setting_is_critical(healthy, now, settings):
    settings.HSQ_REFUNDS = {"MERCHANTS": {}, "CONCURRENCY": 0}

    check = check_health(now).check("settings")

    assert check.status is CRITICAL
    assert 'HSQ_REFUNDS["CONCURRENCY"]' in check.message


def test_a_database_that_cannot_be_read_is_critical(healthy, now):
    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("DROP TABLE hsq_refunds_syncrun")

    report = check_health(now)

    assert report.status is CRITICAL
    (check,) = report.checks
    assert check.name == "database"
    assert check.message.startswith("The database could not be read: ")
    assert "syncrun" in check.message


def test_as_dict_is_json(healthy, make_refund, now):
    make_refund(claim_token="c" * 32, claimed_until=now - timedelta(minutes=20))

    data = json.loads(json.dumps(check_health(now).as_dict()))

    assert data["status"] == "warning"
    stale = next(check for check in data["checks"] if check["name"] == "stale_claims")
    assert stale["status"] == "warning" and stale["value"]["count"] == 1


# --------------------------------------------------------------------------- thresholds


def test_thresholds_come_from_the_health_setting(healthy, make_refund, now, settings):
    make_refund("LATE", next_query_at=now - timedelta(minutes=3))
    assert check_health(now).check("overdue").status is OK

    settings.HSQ_REFUNDS = {
        "MERCHANTS": {},
        "HEALTH": {"OVERDUE_WARNING": 60, "OVERDUE_CRITICAL": timedelta(minutes=2)},
    }

    assert check_health(now).check("overdue").status is CRITICAL
    assert health_settings().OVERDUE_CRITICAL == 120.0


def test_a_threshold_set_to_none_is_off(healthy, make_refund, now, settings):
    make_refund(needs_attention=True, attention_reason="expired")
    settings.HSQ_REFUNDS = {"MERCHANTS": {}, "HEALTH": {"ATTENTION_WARNING": None}}

    assert check_health(now).check("attention").status is OK


@pytest.mark.parametrize(
    ("health", "named", "says"),
    [
        ({"OVERDUE_WARNNG": 60}, "OVERDUE_WARNNG", "unknown key"),
        ({"OVERDUE_WARNING": -5}, "OVERDUE_WARNING", "positive number of seconds"),
        ({"OVERDUE_WARNING": "10m"}, "OVERDUE_WARNING", "positive number of seconds"),
        ({"WINDOW": None}, "WINDOW", "must be set"),
        ({"FAILED_SHARE_WARNING": 20}, "FAILED_SHARE_WARNING", "between 0 and 1"),
        ({"ATTENTION_WARNING": True}, "ATTENTION_WARNING", "whole number"),
        ({"RUN_RETENTION_DAYS": 0}, "RUN_RETENTION_DAYS", "whole number >= 1"),
        ({"LAST_SYNC_WARNING": 600, "LAST_SYNC_CRITICAL": 300}, "LAST_SYNC_CRITICAL", "below"),
    ],
)
def test_a_bad_threshold_is_named(settings, health, named, says):
    settings.HSQ_REFUNDS = {"MERCHANTS": {}, "HEALTH": health}

    with pytest.raises(ConfigurationError) as raised:
        check_health()

    assert f'HSQ_REFUNDS["HEALTH"]["{named}"]' in str(raised.value)
    assert says in str(raised.value)


def test_the_health_setting_must_be_a_dict(settings):
    settings.HSQ_REFUNDS = {"MERCHANTS": {}, "HEALTH": [("WINDOW", 60)]}

    with pytest.raises(ConfigurationError, match=r'HSQ_REFUNDS\["HEALTH"\]: must be a dict'):
        health_settings()
    with pytest.raises(ConfigurationError):
        check_health()


# --------------------------------------------------------------------------- the command


def run(*args: str, language: str = "en") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        with translation.override(language):
            call_command("hsq_refunds_health", *args, stdout=out, stderr=err)
    except SystemExit as exit:
        return int(exit.code), out.getvalue(), err.getvalue()
    except CommandError as error:
        return error.returncode, out.getvalue(), str(error)
    return 0, out.getvalue(), err.getvalue()


def test_the_command_exits_0_when_everything_is_ok(healthy):
    code, out, _err = run()

    lines = out.splitlines()
    assert code == 0
    assert lines[0] == "HSQ refunds: OK"
    assert len(lines) == 10 and all(line.startswith("[OK] ") for line in lines[1:])


def test_the_command_exits_1_on_a_warning(healthy, make_refund, now):
    make_refund(claim_token="d" * 32, claimed_until=now - timedelta(minutes=20))

    code, out, _err = run()

    assert code == 1
    assert out.splitlines()[0] == "HSQ refunds: WARNING"
    assert "[WARNING] stale_claims: 1 refund is claimed past its lease" in out


def test_the_command_exits_2_when_something_is_critical(healthy, make_refund, make_query):
    make_query(make_refund(), "signature_error")

    code, out, _err = run()

    assert code == 2
    assert out.splitlines()[0] == "HSQ refunds: CRITICAL"
    assert "[CRITICAL] signature: " in out


def test_the_command_json(healthy, make_refund, make_query):
    make_query(make_refund(), "signature_error")

    code, out, _err = run("--json")
    data = json.loads(out)

    assert code == 2
    assert data["status"] == "critical"
    assert {check["name"]: check["status"] for check in data["checks"]}["signature"] == "critical"


def test_the_command_exits_3_for_bad_thresholds(settings):
    settings.HSQ_REFUNDS = {"MERCHANTS": {}, "HEALTH": {"WINDOW": 0}}

    code, _out, err = run()

    assert code == 3
    assert 'HSQ_REFUNDS["HEALTH"]["WINDOW"]' in err


def test_the_command_speaks_chinese(healthy, make_refund, now):
    make_refund(status="PROCESSING", applied_ago=timedelta(days=6))

    code, out, _err = run(language="zh-hans")

    assert code == 1
    assert out.splitlines()[0] == "慧收钱退款：警告"
    assert "[警告] unfinished: " in out and "6 天" in out
    assert "[正常] settings: " in out


@pytest.mark.django_db(transaction=True)
def test_the_exit_status_of_a_real_process(make_refund, make_run, now):
    from tests.processes import run_manage

    make_run()
    install_schedule(1)
    assert run_manage(["hsq_refunds_health"]).returncode == 0

    make_refund(next_query_at=now - timedelta(hours=3))
    process = run_manage(["hsq_refunds_health", "--json"])

    assert process.returncode == 2, process.stderr
    assert json.loads(process.stdout)["status"] == "critical"
