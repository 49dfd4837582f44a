"""Refreshing from the admin: the action, the button, their messages, CSRF and permissions."""

from __future__ import annotations

import pytest
from django.test import Client

from hsq_refunds.models import Refund

from .conftest import change_url, changelist_url, message_texts, refresh_url, run_action

pytestmark = pytest.mark.django_db


def test_action_refreshes_and_summarises_in_one_message(admin_client, make_refund, sandbox):
    refunds = [
        make_refund("R-OK", timeline=[{"status": "SUCCESS"}]),
        make_refund("R-WAIT", timeline=[{"status": "PROCESSING"}]),
        make_refund("R-NO", timeline=[{"status": "FAIL"}]),
    ]

    response = run_action(admin_client, "refresh_status", refunds)

    assert response.status_code == 200
    assert message_texts(response) == [
        (
            "success",
            "3 refunds queried: 1 succeeded, 1 refund failed, 1 still processing.",
        )
    ]
    assert sandbox.query_counts() == {"R-OK": 1, "R-WAIT": 1, "R-NO": 1}
    statuses = dict(Refund.objects.values_list("trans_no", "status"))
    assert statuses == {"R-OK": "SUCCESS", "R-WAIT": "PROCESSING", "R-NO": "FAIL"}


def test_action_lists_each_failure_with_type_code_and_message(admin_client, make_refund, sandbox):
    refunds = [make_refund(f"R{i}") for i in range(1, 4)]
    sandbox.set_fault("bad_signature", trans_no="R2")
    sandbox.set_fault("signed_failure", trans_no="R3", error_code="E1001", error_msg="商户不存在")

    response = run_action(admin_client, "refresh_status", refunds)

    assert response.status_code == 200
    (summary_level, summary), (error_level, errors) = message_texts(response)
    assert summary_level == "warning"
    assert summary.startswith("3 refunds: HSQ answered 1 (1 succeeded); 2 could not be queried")
    assert "2 could not be queried" in summary
    assert error_level == "error"
    assert errors.startswith("2 refunds could not be refreshed: ")
    assert "R2: signature invalid: the signature of the success answer does not verify" in errors
    assert "R3: gateway error (code E1001): " in errors
    assert "商户不存在" in errors
    assert Refund.objects.get(trans_no="R1").status == "SUCCESS"
    assert Refund.objects.get(trans_no="R2").status == "UNKNOWN"


@pytest.mark.parametrize(
    ("fault", "params", "expected"),
    [
        ("bad_signature", {}, "signature invalid: "),
        ("http_error", {"status": 503}, "network error: the gateway answered HTTP 503"),
        ("spring_error", {"status": 500}, "network error: the gateway answered HTTP 500"),
        ("drop", {}, "network error: "),
        ("malformed_json", {}, "network error: the gateway's answer is not JSON"),
        ("wrong_trans_no", {}, "malformed answer: "),
        ("wrong_merchant_no", {}, "malformed answer: "),
        (
            "unsigned_failure",
            {"error_code": "SYS500", "error_msg": "系统繁忙"},
            "gateway error (code SYS500): ",
        ),
        (
            "signed_failure",
            {"error_code": "E1001", "error_msg": "商户不存在"},
            "gateway error (code E1001): ",
        ),
    ],
)
def test_button_turns_each_gateway_error_into_a_message(
    admin_client, make_refund, sandbox, fault, params, expected
):
    refund = make_refund("R-ERR")
    sandbox.set_fault(fault, trans_no="R-ERR", **params)

    response = admin_client.post(refresh_url(refund), follow=True)

    assert response.status_code == 200
    assert response.redirect_chain == [(change_url(refund), 302)]
    ((level, text),) = message_texts(response)
    assert level == "error"
    assert text.startswith("1 refund could not be refreshed: R-ERR: " + expected), text
    assert "Traceback" not in response.content.decode()
    refund.refresh_from_db()
    assert refund.status == "UNKNOWN"
    assert refund.error_count == 1


def test_button_reports_a_timeout(admin_client, make_refund, sandbox, settings):
    settings.HSQ_REFUNDS = {**settings.HSQ_REFUNDS, "READ_TIMEOUT": 0.2}
    refund = make_refund("R-SLOW")
    sandbox.set_fault("latency", trans_no="R-SLOW", seconds=2)

    response = admin_client.post(refresh_url(refund), follow=True)

    ((level, text),) = message_texts(response)
    assert level == "error"
    assert "R-SLOW: network error: timed out waiting for the gateway's answer" in text


def test_button_refreshes_one_refund_and_returns_to_its_page(admin_client, make_refund, sandbox):
    refund = make_refund("R-BTN", amount=1999)

    response = admin_client.post(refresh_url(refund), follow=True)

    assert response.redirect_chain == [(change_url(refund), 302)]
    assert message_texts(response) == [("success", "Refund R-BTN refreshed from HSQ: Succeeded.")]
    assert 'class="hsq-status hsq-status-success">Succeeded<' in response.content.decode()
    assert sandbox.query_counts() == {"R-BTN": 1}


def test_button_says_when_a_refund_needs_attention(admin_client, make_refund, sandbox):
    refund = make_refund("R-AMT", amount=1000)
    sandbox.add_refund("R-AMT", amount=900, timeline=[{"status": "SUCCESS"}])

    response = admin_client.post(refresh_url(refund), follow=True)

    ((level, text),) = message_texts(response)
    assert level == "warning"
    assert text.startswith("Refund R-AMT refreshed from HSQ: Succeeded. It needs attention: ")
    assert "¥9.00" in text and "¥10.00" in text  # people read yuan


def test_button_queries_a_final_refund_again(admin_client, make_refund, sandbox):
    refund = make_refund("R-DONE", status="SUCCESS")

    admin_client.post(refresh_url(refund))

    assert sandbox.query_counts() == {"R-DONE": 1}


def test_get_on_the_button_url_does_not_query(admin_client, make_refund, sandbox):
    refund = make_refund("R-GET")

    response = admin_client.get(refresh_url(refund))

    assert response.status_code == 405
    assert sandbox.query_counts() == {}
    refund.refresh_from_db()
    assert (refund.status, refund.query_count) == ("UNKNOWN", 0)


def test_button_for_a_missing_refund_redirects_with_a_warning(admin_client, sandbox):
    response = admin_client.post("/admin/hsq_refunds/refund/999999/refresh/", follow=True)

    assert response.status_code == 200
    ((level, text),) = message_texts(response)
    assert level == "warning"
    assert "999999" in text
    assert sandbox.query_counts() == {}


@pytest.fixture
def csrf_client(admin_user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    return client


def test_button_without_csrf_token_is_refused(csrf_client, make_refund, sandbox):
    refund = make_refund("R-CSRF")

    response = csrf_client.post(refresh_url(refund))

    assert response.status_code == 403
    assert sandbox.query_counts() == {}


def test_button_with_csrf_token_is_accepted(csrf_client, make_refund, sandbox):
    refund = make_refund("R-CSRF")
    page = csrf_client.get(change_url(refund))
    token = page.context["csrf_token"]

    response = csrf_client.post(refresh_url(refund), {"csrfmiddlewaretoken": str(token)})

    assert response.status_code == 302
    assert sandbox.query_counts() == {"R-CSRF": 1}


def test_action_without_csrf_token_is_refused(csrf_client, make_refund, sandbox):
    refund = make_refund("R-CSRF")

    response = csrf_client.post(
        changelist_url(), {"action": "refresh_status", "_selected_action": [refund.pk]}
    )

    assert response.status_code == 403
    assert sandbox.query_counts() == {}


# -- permissions ----------------------------------------------------------------------------


def test_without_refresh_permission_there_is_no_action_no_button_and_403(
    staff_client, make_refund, sandbox
):
    client = staff_client("view_refund", "change_refund")
    refund = make_refund("R-PERM")

    changelist = client.get(changelist_url())
    page = client.get(change_url(refund))
    refused = client.post(refresh_url(refund))
    also_refused = client.get(refresh_url(refund))
    action = run_action(client, "refresh_status", [refund])

    assert changelist.status_code == 200
    assert 'value="refresh_status"' not in changelist.content.decode()
    assert page.status_code == 200
    assert "hsq-refresh-button" not in page.content.decode()
    assert refresh_url(refund) not in page.content.decode()
    assert refused.status_code == 403
    assert also_refused.status_code == 403
    assert action.status_code == 200
    assert sandbox.query_counts() == {}
    refund.refresh_from_db()
    assert refund.query_count == 0


def test_refresh_permission_alone_with_view_is_enough(staff_client, make_refund, sandbox):
    client = staff_client("view_refund", "refresh_refund")
    refund = make_refund("R-PERM")

    changelist = client.get(changelist_url())
    page = client.get(change_url(refund))
    response = client.post(refresh_url(refund), follow=True)

    assert 'value="refresh_status"' in changelist.content.decode()
    assert "hsq-refresh-button" in page.content.decode()
    assert message_texts(response) == [("success", "Refund R-PERM refreshed from HSQ: Succeeded.")]
    assert sandbox.query_counts() == {"R-PERM": 1}


def test_refresh_permission_without_view_is_refused(staff_client, make_refund, sandbox):
    client = staff_client("refresh_refund")
    refund = make_refund("R-PERM")

    response = client.post(refresh_url(refund))

    assert response.status_code == 403
    assert sandbox.query_counts() == {}


# -- configuration problems -----------------------------------------------------------------


def test_no_merchant_configured_is_a_message_not_an_error_page(admin_client, make_refund, settings):
    refund = make_refund("R-CONF")
    settings.HSQ_REFUNDS = {"MERCHANTS": {}}

    response = admin_client.post(refresh_url(refund), follow=True)

    assert response.status_code == 200
    ((level, text),) = message_texts(response)
    assert level == "error"
    assert text.startswith("1 refund could not be refreshed: R-CONF: configuration error")


def test_invalid_settings_are_a_message_not_an_error_page(admin_client, make_refund, settings):
    refunds = [make_refund("R-CONF")]
    settings.HSQ_REFUNDS = {**settings.HSQ_REFUNDS, "CONCURRENCY": 0}

    for response in (
        admin_client.post(refresh_url(refunds[0]), follow=True),
        run_action(admin_client, "refresh_status", refunds),
    ):
        assert response.status_code == 200
        ((level, text),) = message_texts(response)
        assert level == "error"
        assert text.startswith('Could not refresh: configuration error: HSQ_REFUNDS["CONCURRENCY"]')
