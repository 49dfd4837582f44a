"""System checks of the django-q2 setup (hsq_refunds.W020 to W022)."""

from __future__ import annotations

import pytest
from django.core import checks
from django.db import connection
from django.test import override_settings
from django_q.models import Schedule

from hsq_refunds.scheduling import (
    SCHEDULE_FUNC,
    SCHEDULE_NAME,
    check_q_cluster,
    check_schedule_runner,
)


def ids(messages) -> list[str]:
    return [message.id for message in messages]


@pytest.fixture
def small_batches(settings):
    """Batches that fit any timeout used below, so that only W021 is in question."""
    settings.HSQ_REFUNDS = {**settings.HSQ_REFUNDS, "TASK_BATCH_SIZE": 8, "CONCURRENCY": 8}


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
    }
    with override_settings(Q_CLUSTER={"timeout": 100, "retry": 200}):
        (message,) = check_q_cluster()
    assert message.id == "hsq_refunds.W022"
    assert "150 s" in message.msg
    for key in ('Q_CLUSTER["timeout"]', 'HSQ_REFUNDS["TASK_BATCH_SIZE"]'):
        assert key in message.msg + message.hint
    with override_settings(Q_CLUSTER={"timeout": 150, "retry": 200}):
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
