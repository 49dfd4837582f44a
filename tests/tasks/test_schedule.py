"""``manage.py hsq_refunds_schedule`` and the schedule it installs, run by django-q2's scheduler."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule, Task
from django_q.scheduler import scheduler

from hsq_refunds import tasks
from hsq_refunds.models import Refund
from hsq_refunds.scheduling import SCHEDULE_FUNC, SCHEDULE_NAME
from tests.processes import run_manage

pytestmark = pytest.mark.django_db


def schedule_command(*args: str) -> str:
    out = StringIO()
    call_command("hsq_refunds_schedule", *args, stdout=out)
    return out.getvalue()


def the_schedule() -> Schedule:
    return Schedule.objects.get(name=SCHEDULE_NAME)


def test_installs_one_schedule_that_first_runs_one_interval_ahead():
    before = timezone.now()
    output = schedule_command()

    assert "created" in output
    assert SCHEDULE_NAME in output
    schedule = the_schedule()
    assert schedule.func == SCHEDULE_FUNC == tasks.CYCLE_TASK
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == 1
    assert schedule.repeats == -1
    assert schedule.next_run >= before + timedelta(minutes=1)


def test_running_it_again_changes_nothing():
    schedule_command()
    first = the_schedule()

    output = schedule_command()

    assert "unchanged" in output
    assert Schedule.objects.filter(name=SCHEDULE_NAME).count() == 1
    again = the_schedule()
    assert (again.pk, again.next_run, again.minutes) == (first.pk, first.next_run, 1)


def test_minutes_default_to_the_setting_and_can_be_given(settings):
    settings.HSQ_REFUNDS = {**settings.HSQ_REFUNDS, "SCHEDULE_MINUTES": 3}
    assert "created" in schedule_command()
    assert the_schedule().minutes == 3

    before = timezone.now()
    output = schedule_command("--minutes", "10")

    assert "updated" in output
    schedule = the_schedule()
    assert schedule.minutes == 10
    # The next run was already sooner than ten minutes away: it is kept.
    assert schedule.next_run <= before + timedelta(minutes=3)
    assert "updated" in schedule_command("--minutes", "2")
    assert the_schedule().next_run <= timezone.now() + timedelta(minutes=2)


def test_a_schedule_changed_by_hand_or_duplicated_is_put_right():
    schedule_command()
    Schedule.objects.filter(name=SCHEDULE_NAME).update(schedule_type=Schedule.DAILY, repeats=0)
    Schedule.objects.create(name=SCHEDULE_NAME, func=SCHEDULE_FUNC, schedule_type=Schedule.HOURLY)

    assert "updated" in schedule_command()

    schedule = the_schedule()
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 1, -1)


def test_remove():
    schedule_command()
    assert "removed" in schedule_command("--remove")
    assert not Schedule.objects.filter(name=SCHEDULE_NAME).exists()
    assert "No schedule" in schedule_command("--remove")


def test_other_schedules_are_left_alone():
    Schedule.objects.create(name="reports", func="math.floor", args="1.5")
    schedule_command()
    schedule_command("--minutes", "5")
    schedule_command("--remove")
    assert Schedule.objects.filter(name="reports").count() == 1


@pytest.mark.parametrize("minutes", ["0", "-1", "abc", "32768"])
def test_bad_minutes_are_refused(minutes):
    with pytest.raises(CommandError, match="minutes"):
        schedule_command("--minutes", minutes)
    assert not Schedule.objects.exists()


def test_needs_django_q_installed(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_q"]
    with pytest.raises(CommandError, match="django_q"):
        schedule_command()


def test_django_q_scheduler_runs_the_cycle_when_it_is_due(configure, sandbox, make_refunds):
    due = make_refunds(4, "D")
    schedule_command()
    broker = get_broker()

    scheduler(broker=broker)  # installed a minute ahead: nothing runs yet
    assert not Task.objects.exists()
    assert sandbox.query_counts() == {}

    Schedule.objects.filter(name=SCHEDULE_NAME).update(
        next_run=timezone.now() - timedelta(seconds=1)
    )
    scheduler(broker=broker)  # sync mode: the cycle runs here and now

    cycle = Task.objects.get(func=SCHEDULE_FUNC)
    assert cycle.success, cycle.result
    assert cycle.result["report"]["queried"] == 4
    assert set(Refund.objects.filter(id__in=due).values_list("status", flat=True)) == {"SUCCESS"}
    assert the_schedule().next_run > timezone.now()


@pytest.mark.django_db(transaction=True)
def test_runs_in_its_own_process_after_migrate():
    first = run_manage(["hsq_refunds_schedule"])
    second = run_manage(["hsq_refunds_schedule"])
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "unchanged" in second.stdout
    assert Schedule.objects.filter(name=SCHEDULE_NAME).count() == 1
