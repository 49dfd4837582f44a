"""Bad input is refused with an error naming what is wrong, and nothing is written.

Bad order numbers (empty, too long, control characters), an unknown merchant and malformed
settings go through every way in: ``Refund.objects.track``, ``manage.py sync_refunds`` and the
admin's add form. Each time the rows of both tables stay exactly as they were and the gateway
is not asked.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from hsq_refunds.gateway import ConfigurationError
from hsq_refunds.gateway.text import printable
from hsq_refunds.models import Refund, RefundQuery
from hsq_refunds.sync import sync_refunds

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:hsq_refunds_refund_add")
TRACKED = ["T-DUE", "T-LATER"]

#: (transNo, what ``track`` says, what the admin's add form says)
BAD_TRANS_NOS = [
    pytest.param("", "1 to 64 characters", "This field is required", id="empty"),
    pytest.param("R" * 65, "1 to 64 characters", "at most 64 characters", id="65-characters"),
    pytest.param("R\x00", "control characters", "Null characters are not allowed", id="NUL"),
    pytest.param("R\x1b[31m", "control characters", "control characters", id="escape-sequence"),
    pytest.param("R\r\n1", "control characters", "control characters", id="line-break"),
    pytest.param("R\x7f", "control characters", "control characters", id="DEL"),
]


@pytest.fixture
def tracked(make_refunds, sandbox) -> Callable[[], dict[str, Any]]:
    """Refunds already tracked (one due); returns ``state()``: both tables and the gateway's
    counts, to compare before and after."""
    make_refunds(TRACKED)
    Refund.objects.filter(trans_no="T-LATER").update(next_query_at=None)

    def state() -> dict[str, Any]:
        return {
            "refunds": list(Refund.objects.order_by("id").values()),
            "queries": RefundQuery.objects.count(),
            "asked": sandbox.query_counts(),
        }

    return state


def command(*args: str) -> tuple[int, str]:
    """Run ``sync_refunds`` in this process; its exit status and everything it printed."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("sync_refunds", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + err.getvalue() + str(exc)
    return 0, out.getvalue() + err.getvalue()


def add_form_errors(client: Any, data: dict[str, str]) -> str:
    response = client.post(ADD_URL, data)
    assert response.status_code == 200  # the form again, not a redirect to the new refund
    return response.content.decode() + str(response.context["adminform"].form.errors)


# --------------------------------------------------------------------------- order numbers


@pytest.mark.parametrize(("trans_no", "says", "_form_says"), BAD_TRANS_NOS)
def test_track_refuses_a_bad_trans_no(tracked, trans_no, says, _form_says):
    before = tracked()
    with pytest.raises(ValueError, match=says):
        Refund.objects.track(trans_no)
    assert tracked() == before


@pytest.mark.parametrize(("trans_no", "_says", "form_says"), BAD_TRANS_NOS)
def test_the_add_form_refuses_a_bad_trans_no(
    tracked, admin_client, merchant_no, trans_no, _says, form_says
):
    before = tracked()
    assert form_says in add_form_errors(
        admin_client, {"trans_no": trans_no, "merchant_no": merchant_no}
    )
    assert tracked() == before


@pytest.mark.parametrize(
    "trans_no",
    [
        pytest.param("UNKNOWN_TRANSNO", id="unknown"),
        # (An empty one is below; NUL cannot be part of a command line.)
        *(
            pytest.param(*param.values[:1], id=param.id)
            for param in BAD_TRANS_NOS
            if param.id not in ("empty", "NUL")
        ),
    ],
)
def test_the_command_names_a_trans_no_it_does_not_track(tracked, trans_no):
    before = tracked()
    status, shown = command(trans_no)
    assert status == 1
    # Control characters are shown escaped, never sent raw to the terminal.
    assert f"unknown transNo {printable(trans_no)} is not tracked" in shown
    assert tracked() == before


def test_the_command_refuses_an_empty_trans_no(tracked):
    before = tracked()
    status, shown = command("")
    assert status == 1 and "not tracked" in shown
    assert tracked() == before


def test_the_engine_reports_a_trans_no_with_nul_as_not_tracked(tracked):
    before = tracked()
    report = sync_refunds(trans_nos=["R\x00", "UNKNOWN_TRANSNO"])
    assert [(error.trans_no, error.error_type) for error in report.errors] == [
        ("R\x00", "unknown"),
        ("UNKNOWN_TRANSNO", "unknown"),
    ]
    assert tracked() == before


# --------------------------------------------------------------------------- merchants


def test_an_unknown_merchant_is_refused_everywhere(tracked, admin_client):
    before = tracked()
    with pytest.raises(ValueError, match="'999' is not configured"):
        Refund.objects.track("R-NEW", merchant_no="999")
    status, shown = command("--merchant", "999")
    assert status == 2 and "merchant '999' is not configured" in shown
    errors = add_form_errors(admin_client, {"trans_no": "R-NEW", "merchant_no": "999"})
    assert "999 is not one of the available choices" in errors
    assert tracked() == before


# --------------------------------------------------------------------------- settings


def without(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda merchant: {key: value for key, value in merchant.items() if key != name}


def replacing(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda merchant: {**merchant, **changes}


#: (what is wrong, the merchant entry made wrong, top-level keys made wrong, the key named)
MALFORMED = [
    pytest.param(without("SIGN_KEY"), {}, '["SIGN_KEY"]', id="SIGN_KEY-missing"),
    pytest.param(replacing(SIGN_KEY=12345), {}, '["SIGN_KEY"]', id="SIGN_KEY-not-text"),
    pytest.param(
        replacing(PRIVATE_KEY_PASSWORD=123456),
        {},
        '["PRIVATE_KEY_PASSWORD"]',
        id="password-not-text",
    ),
    pytest.param(None, {"READ_TIMEOUT": "fast"}, '["READ_TIMEOUT"]', id="READ_TIMEOUT-text"),
    pytest.param(None, {"CONCURRENCY": 2.5}, '["CONCURRENCY"]', id="CONCURRENCY-fraction"),
    pytest.param(None, {"MERCHANTS": ["888"]}, '["MERCHANTS"]', id="MERCHANTS-a-list"),
]


@pytest.fixture
def malform(configure, merchant_no) -> Callable[..., None]:
    def apply(merchant_change: Callable | None, top: dict[str, Any]) -> None:
        merchant = configure()["MERCHANTS"][merchant_no]
        if merchant_change is not None:
            top = {**top, "MERCHANTS": {merchant_no: merchant_change(merchant)}}
        configure(**top)

    return apply


@pytest.mark.parametrize(("merchant_change", "top", "named"), MALFORMED)
def test_malformed_settings_stop_track_and_the_command(
    tracked, malform, merchant_change, top, named
):
    before = tracked()
    malform(merchant_change, top)

    with pytest.raises(ConfigurationError) as refused:
        Refund.objects.track("R-NEW")
    assert str(refused.value).startswith("HSQ_REFUNDS[") and named in str(refused.value)
    for args in ([], ["T-LATER"], ["--all"]):
        status, shown = command(*args)
        assert status == 2
        assert "Configuration error: HSQ_REFUNDS[" in shown and named in shown
    assert tracked() == before


@pytest.mark.parametrize(("merchant_change", "top", "named"), MALFORMED)
def test_malformed_settings_are_named_by_the_add_form(
    tracked, admin_client, merchant_no, malform, merchant_change, top, named
):
    before = tracked()
    malform(merchant_change, top)
    errors = add_form_errors(admin_client, {"trans_no": "R-NEW", "merchant_no": merchant_no})
    assert tracked() == before  # nothing is written, today already
    assert named.replace('"', "&quot;") in errors or named in errors


def test_a_wrong_key_password_is_named_by_the_command(tracked, configure, merchant_no):
    merchant = configure()["MERCHANTS"][merchant_no]
    configure(MERCHANTS={merchant_no: {**merchant, "PRIVATE_KEY_PASSWORD": "wrong-password"}})

    status, shown = command()

    assert status == 2
    assert f'HSQ_REFUNDS["MERCHANTS"]["{merchant_no}"]: merchant private key: wrong password' in (
        shown
    )
    assert "manage.py check" in shown
    assert "wrong-password" not in shown


def test_a_wrong_key_password_asks_nothing_and_backs_off(tracked, configure, merchant_no):
    state = tracked()
    before = {row["trans_no"]: row for row in state["refunds"]}
    merchant = configure()["MERCHANTS"][merchant_no]
    configure(MERCHANTS={merchant_no: {**merchant, "PRIVATE_KEY_PASSWORD": "wrong-password"}})

    assert command()[0] == 2

    after = tracked()
    assert after["asked"] == {}  # nothing reached the gateway
    changed = {row["trans_no"]: row for row in after["refunds"] if row != before[row["trans_no"]]}
    for trans_no, row in changed.items():
        # The refunds that were due wait out ERROR_BACKOFF instead of heading the queue.
        assert row["status"] == before[trans_no]["status"]
        assert (row["last_error_type"], row["error_count"], row["query_count"]) == (
            "configuration",
            before[trans_no]["error_count"] + 1,
            before[trans_no]["query_count"],
        )
        assert row["next_query_at"] > before[trans_no]["next_query_at"]
        assert "wrong-password" not in row["last_error_message"]
    assert set(changed) == {"T-DUE"}
    assert after["queries"] == state["queries"] + 1


# --------------------------------------------------------------------------- from the gateway


def test_control_characters_from_the_gateway_are_not_printed_raw(make_refunds, sandbox):
    make_refunds(["R-ESC"])
    sandbox.set_fault(
        "unsigned_failure",
        trans_no="R-ESC",
        error_code="E\x1b[2J",
        error_msg="\x1b]0;owned\x07busy\r\nR-OTHER [1]: all good",
    )

    status, shown = command()

    assert status == 1 and "R-ESC" in shown
    assert not any(char in shown for char in "\x1b\x07\r")
    assert "\nR-OTHER" not in shown
