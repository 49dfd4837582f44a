"""System checks of the django-q2 setup (hsq_refunds.W020 to W022)."""

from __future__ import annotations

import pytest
from django.core import checks
from django.db import connection
from django.test import override_settings
from django_q.models import Schedule

from hsq_refunds.check_ids import W022_Q_BATCH_TIMEOUT
from hsq_refunds.checks import check_q_cluster, check_schedule_runner
from hsq_refunds.scheduling import SCHEDULE_FUNC, SCHEDULE_NAME


def ids(messages) -> list[str]:
    return [message.id for message in messages]


@pytest.fixture
def small_batches(settings):
    """Batches that fit any timeout used below, so that only W021 is in question."""
    settings.HSQ_REFUNDS = {
        **settings.HSQ_REFUNDS,
        "TASK_BATCH_SIZE": 8,
        "CONCURRENCY": 8,
        "QUERY_DEADLINE": 15,
    }


@pytest.fixture
def without_django_q(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_q"]


# -- W021: timeout below retry


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ({"timeout": 240, "retry": 300}, []),
        ({"timeout": 30}, []),  # below django-q2's default retry (60)
        ({"timeout": 300, "retry": 300}, ["hsq_refunds.W021"]),
        ({"timeout": 600, "retry": 300}, ["hsq_refunds.W021"]),
        ({"timeout": 90}, ["hsq_refunds.W021"]),
        ({"retry": 300}, ["hsq_refunds.W021"]),  # no timeout: a stuck task runs forever
    ],
)
def test_timeout_must_be_below_retry(conf, expected):
    with override_settings(Q_CLUSTER={"orm": "default", **conf}):
        assert ids(check_q_cluster()) == expected


@pytest.mark.usefixtures("small_batches")
def test_the_message_names_both_keys():
    with override_settings(Q_CLUSTER={"orm": "default", "timeout": 600, "retry": 300}):
        (message,) = check_q_cluster()
    assert isinstance(message, checks.Warning)
    assert 'Q_CLUSTER["timeout"] (600)' in message.msg
    assert 'Q_CLUSTER["retry"] (300)' in message.msg
    assert "retry" in message.hint


@pytest.mark.usefixtures("small_batches")
def test_alternative_clusters_are_checked_with_their_own_values():
    conf = {
        "timeout": 60,
        "retry": 120,
        "ALT_CLUSTERS": {"long": {"timeout": 3000, "retry": 3600}, "bad": {"timeout": 200}},
    }
    with override_settings(Q_CLUSTER=conf):
        messages = check_q_cluster()
    assert ids(messages) == ["hsq_refunds.W021"]
    assert 'Q_CLUSTER["ALT_CLUSTERS"]["bad"]["timeout"] (200)' in messages[0].msg


# -- W022: a batch fits in the timeout


def test_a_timeout_shorter_than_a_slow_batch_is_reported(settings):
    settings.HSQ_REFUNDS = {
        **settings.HSQ_REFUNDS,
        "TASK_BATCH_SIZE": 100,
        "CONCURRENCY": 10,
        "READ_TIMEOUT": 15,
        "QUERY_DEADLINE": 15,
    }
    with override_settings(Q_CLUSTER={"timeout": 100, "retry": 200}):
        (message,) = check_q_cluster()
    assert message.id == "hsq_refunds.W022"
    assert "150 s" in message.msg
    for key in ('Q_CLUSTER["timeout"]', 'HSQ_REFUNDS["TASK_BATCH_SIZE"]'):
        assert key in message.msg + message.hint
    with override_settings(Q_CLUSTER={"timeout": 150, "retry": 200}):
        assert check_q_cluster() == []


def test_the_batch_time_counts_connects_reads_and_retries_of_every_query(settings):
    """By default a query may take every attempt's connect and read timeouts and the waits
    between retries: (5 + 15) * 3 + 2 * 30 = 120 s, so 10 rounds of 10 take up to 1200 s."""
    settings.HSQ_REFUNDS = {**settings.HSQ_REFUNDS, "TASK_BATCH_SIZE": 100, "CONCURRENCY": 10}
    with override_settings(Q_CLUSTER={"timeout": 1199, "retry": 1500}):
        (message,) = check_q_cluster()
    assert message.id == W022_Q_BATCH_TIMEOUT
    assert "up to 1200 s" in message.msg
    assert 'HSQ_REFUNDS["QUERY_DEADLINE"] (120 s' in message.msg
    assert "1200 or more" in message.hint
    with override_settings(Q_CLUSTER={"timeout": 1200, "retry": 1500}):
        assert check_q_cluster() == []

    settings.HSQ_REFUNDS = {**settings.HSQ_REFUNDS, "RETRIES": 0, "CONNECT_TIMEOUT": 2}
    with override_settings(Q_CLUSTER={"timeout": 169, "retry": 1500}):
        (message,) = check_q_cluster()
    assert "up to 170 s" in message.msg  # 10 rounds of one attempt of 2 + 15 s
    with override_settings(Q_CLUSTER={"timeout": 170, "retry": 1500}):
        assert check_q_cluster() == []


def test_an_explicit_query_deadline_bounds_the_batch_time(settings):
    settings.HSQ_REFUNDS = {
        **settings.HSQ_REFUNDS,
        "TASK_BATCH_SIZE": 50,
        "CONCURRENCY": 8,
        "QUERY_DEADLINE": 30,
    }
    with override_settings(Q_CLUSTER={"timeout": 209, "retry": 300}):
        (message,) = check_q_cluster()
    assert message.id == W022_Q_BATCH_TIMEOUT
    assert "up to 210 s" in message.msg  # ceil(50 / 8) = 7 rounds of 30 s
    with override_settings(Q_CLUSTER={"timeout": 210, "retry": 300}):
        assert check_q_cluster() == []


def test_nothing_is_checked_without_django_q(without_django_q):
    with override_settings(Q_CLUSTER={"timeout": 600, "retry": 60}):
        assert check_q_cluster() == []


def test_the_checks_are_registered():
    registered = checks.registry.registry.get_checks()
    assert check_q_cluster in registered
    assert check_schedule_runner in registered


# -- W020: a schedule nothing runs


@pytest.mark.django_db
def test_a_schedule_without_django_q_installed_is_reported(settings):
    Schedule.objects.create(name=SCHEDULE_NAME, func=SCHEDULE_FUNC, schedule_type="I", minutes=1)
    assert check_schedule_runner(databases=["default"]) == []  # django_q installed: fine

    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_q"]
    (message,) = check_schedule_runner(databases=["default"])

    assert message.id == "hsq_refunds.W020"
    assert SCHEDULE_NAME in message.msg
    assert "INSTALLED_APPS" in message.msg
    assert check_schedule_runner(databases=None) == []  # not a --database run: no queries


@pytest.mark.django_db
def test_a_schedule_made_by_hand_with_our_function_counts(without_django_q):
    Schedule.objects.create(name="every minute", func=SCHEDULE_FUNC, schedule_type="I", minutes=1)
    assert ids(check_schedule_runner(databases=["default"])) == ["hsq_refunds.W020"]


@pytest.mark.django_db
def test_no_schedule_no_warning(without_django_q):
    Schedule.objects.create(name="reports", func="math.floor")
    assert check_schedule_runner(databases=["default"]) == []


@pytest.mark.django_db
def test_a_database_without_django_q_tables_is_fine(without_django_q):
    Schedule.objects.create(name=SCHEDULE_NAME, func=SCHEDULE_FUNC)
    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("ALTER TABLE django_q_schedule RENAME TO hsq_elsewhere")
        try:
            assert check_schedule_runner(databases=["default"]) == []
        finally:
            cursor.execute("ALTER TABLE hsq_elsewhere RENAME TO django_q_schedule")
