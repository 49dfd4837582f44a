"""Applying for refunds from the admin, against the sandbox over real HTTP: the permission, the
form in yuan, the confirmation with the order's figures, one application per confirmation, the
outcome as a message, and sending an application again."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from hsq_refunds import apply as apply_service
from hsq_refunds.models import PaidOrder, Refund

from .conftest import change_url, changelist_url, message_texts

pytestmark = pytest.mark.django_db

APPLY_URL = reverse("admin:hsq_refunds_refund_apply")
CHINESE = {"headers": {"accept-language": "zh-CN,zh;q=0.9"}}
# The sandbox's answer to an application it accepted (it is still being processed).
PROCESSING = ("100201", "交易处理中,请稍后查询")


def send_again_url(refund: Refund) -> str:
    return reverse("admin:hsq_refunds_refund_send_again", args=[refund.pk])


def sent(sandbox) -> dict[str, int]:
    """How often the sandbox received an application, by transNo."""
    return {no: counts["received"] for no, counts in sandbox.application_counts().items()}


def fields(merchant: str, /, **values: str) -> dict[str, str]:
    data = {
        "merchant_no": merchant,
        "orig_trans_no": "PO-1",
        "orig_amount_yuan": "100.00",
        "amount_yuan": "12.34",
        "reason": "七天无理由退货",
    }
    data.update(values)
    return data


def review(client: Client, merchant: str, /, **values: str):
    """Post the form: the confirmation page, or the form again with its errors."""
    return client.post(APPLY_URL, {"_step": "review", **fields(merchant, **values)})


def confirm(client: Client, confirmation, **kwargs):
    """Post a confirmation page's own form, as its "Apply for the refund" button does."""
    return client.post(
        APPLY_URL, {"_step": "confirm", "_confirm": "1", **confirmation.context["hidden"]}, **kwargs
    )


def form_errors(response) -> dict[str, list[str]]:
    return {name: list(errors) for name, errors in response.context["form"].errors.items()}


def templates(response) -> list[str]:
    return [template.name for template in response.templates]


@pytest.fixture
def applier(staff_client) -> Client:
    """Staff who may see refunds and apply for them."""
    return staff_client("view_refund", "apply_refund")


@pytest.fixture
def viewer(staff_client) -> Client:
    """Staff who may see, change and refresh refunds, but not apply for them."""
    return staff_client("view_refund", "change_refund", "refresh_refund")


def applied_earlier(trans_no: str, *, orig_trans_no: str = "PO-1", amount: int, paid: int = 10000):
    """A refund of the order applied for from code (sent to the sandbox)."""
    return Refund.objects.apply(
        trans_no=trans_no, orig_trans_no=orig_trans_no, orig_amount=paid, amount=amount
    )


# --------------------------------------------------------------------------- the permission


def test_only_the_apply_permission_shows_the_link_and_opens_the_page(
    applier, viewer, admin_client, sandbox, merchant_no
):
    hidden = viewer.get(changelist_url()).content.decode()
    shown = applier.get(changelist_url()).content.decode()

    assert "hsq-apply-link" not in hidden
    assert f'<a href="{APPLY_URL}" class="addlink" id="hsq-apply-link">Apply for a refund</a>' in (
        shown
    )
    assert "hsq-apply-link" in admin_client.get(changelist_url()).content.decode()
    assert viewer.get(APPLY_URL).status_code == 403
    assert review(viewer, merchant_no).status_code == 403
    assert viewer.post(APPLY_URL, {"_step": "confirm", **fields(merchant_no)}).status_code == 403
    assert applier.get(APPLY_URL).status_code == 200
    assert not Refund.objects.exists() and sent(sandbox) == {}


def test_the_form_offers_the_configured_merchant(applier, sandbox, merchant_no):
    response = applier.get(APPLY_URL)

    form = response.context["form"]
    assert [name for name in form.fields if not form[name].is_hidden] == [
        "merchant_no",
        "orig_trans_no",
        "orig_amount_yuan",
        "amount_yuan",
        "reason",
    ]
    assert form.fields["merchant_no"].choices == [(merchant_no, merchant_no)]
    assert form["merchant_no"].value() == merchant_no
    assert 'name="trans_no"' not in response.content.decode()


def test_with_several_merchants_one_must_be_chosen(
    applier, sandbox, configure, hsq_sandbox_settings, merchant_no
):
    merchant = hsq_sandbox_settings["MERCHANTS"][merchant_no]
    configure(MERCHANTS={merchant_no: merchant, "888000000002": merchant})

    form = applier.get(APPLY_URL).context["form"]
    response = review(applier, merchant_no, merchant_no="")

    assert form.fields["merchant_no"].choices == [
        ("", "---------"),
        (merchant_no, merchant_no),
        ("888000000002", "888000000002"),
    ]
    assert form["merchant_no"].value() is None
    assert form_errors(response) == {"merchant_no": ["This field is required."]}


# --------------------------------------------------------------------------- the form's errors


@pytest.mark.parametrize(
    ("values", "field", "error"),
    [
        ({"orig_amount_yuan": "100.001"}, "orig_amount_yuan", "at most two decimals"),
        ({"amount_yuan": "12.345"}, "amount_yuan", "at most two decimals"),
        ({"amount_yuan": "0"}, "amount_yuan", "Enter an amount above zero."),
        ({"amount_yuan": "0.00"}, "amount_yuan", "Enter an amount above zero."),
        ({"amount_yuan": "-5.00"}, "amount_yuan", "Enter an amount above zero."),
        ({"orig_amount_yuan": "-100"}, "orig_amount_yuan", "Enter an amount above zero."),
        ({"amount_yuan": "100.01"}, "amount_yuan", "cannot be more than the paid amount"),
        ({"orig_amount_yuan": "1e20"}, "orig_amount_yuan", "The amount is too large."),
        ({"amount_yuan": "twelve"}, "amount_yuan", "Enter a number."),
        ({"amount_yuan": ""}, "amount_yuan", "This field is required."),
        ({"orig_trans_no": ""}, "orig_trans_no", "This field is required."),
        ({"orig_trans_no": "P" * 65}, "orig_trans_no", "at most 64 characters"),
        ({"orig_trans_no": "PO\x071"}, "orig_trans_no", "control characters"),
        ({"reason": "退" * 129}, "reason", "at most 128 characters"),
        ({"reason": "第一行\n第二行"}, "reason", "control characters such as line breaks"),
        ({"merchant_no": "999"}, "merchant_no", "Select a valid choice."),
    ],
)
def test_each_mistake_is_a_form_error_and_nothing_is_written(
    applier, sandbox, merchant_no, values, field, error
):
    response = review(applier, merchant_no, **values)

    assert response.status_code == 200
    assert "admin/hsq_refunds/refund/apply_form.html" in templates(response)
    errors = form_errors(response)
    assert list(errors) == [field]
    assert error in errors[field][0]
    assert not Refund.objects.exists() and not PaidOrder.objects.exists()
    assert sent(sandbox) == {}


def test_an_invalid_setting_is_named_on_the_form(applier, settings):
    settings.HSQ_REFUNDS = {"MERCHANTS": {}, "READ_TIMEOUT": "soon"}

    response = review(applier, "888000000001")

    assert response.status_code == 200
    [error] = response.context["form"].non_field_errors()
    assert error.startswith("The HSQ_REFUNDS setting is invalid: ") and "READ_TIMEOUT" in error


# --------------------------------------------------------------------------- the confirmation


def test_the_confirmation_shows_the_order_and_its_earlier_refunds(
    applier, sandbox, make_refund, merchant_no
):
    applied_earlier("RF-EARLIER", amount=3000)
    make_refund("RF-FAILED", known=False, orig_trans_no="PO-1", amount=2000, status="FAIL")
    make_refund("RF-OTHER", known=False, orig_trans_no="PO-2", amount=500)

    response = review(applier, merchant_no, amount_yuan="25.50")

    assert "admin/hsq_refunds/refund/apply_confirm.html" in templates(response)
    html = response.content.decode()
    context = response.context
    assert (context["paid"], context["taken"], context["amount"], context["left"]) == (
        "¥100.00",
        "¥30.00",
        "¥25.50",
        "¥44.50",
    )
    for cell in ("hsq-paid", "hsq-taken", "hsq-left"):
        assert f'class="{cell}">{context[cell[4:]]}</td>' in html
    assert '<td class="hsq-amount"><strong>¥25.50</strong></td>' in html
    assert [refund["trans_no"] for refund in context["order_refunds"]] == [
        "RF-EARLIER",
        "RF-FAILED",
    ]
    assert "RF-OTHER" not in html
    assert not context["first_for_order"]
    hidden = context["hidden"]
    assert hidden["trans_no"].startswith("RF") and len(hidden["trans_no"]) == 24
    assert f'<input type="hidden" name="trans_no" value="{hidden["trans_no"]}">' in html
    assert {key: hidden[key] for key in ("orig_amount_yuan", "amount_yuan", "reason")} == {
        "orig_amount_yuan": "100.00",
        "amount_yuan": "25.50",
        "reason": "七天无理由退货",
    }
    assert 'name="csrfmiddlewaretoken"' in html
    # Nothing is written or sent before the confirmation is posted.
    assert Refund.objects.count() == 3
    assert sent(sandbox) == {"RF-EARLIER": 1}


def test_the_first_refund_of_an_order_says_so(applier, sandbox, merchant_no, configure):
    configure(TRANS_NO_PREFIX="SHOP")
    response = review(applier, merchant_no, orig_trans_no="PO-NEW")

    assert response.context["first_for_order"]
    assert response.context["order_refunds"] == []
    assert response.context["hidden"]["trans_no"].startswith("SHOP")
    assert 'id="hsq-no-order-refunds"' in response.content.decode()


def test_the_change_button_goes_back_to_the_form_as_typed(applier, sandbox, merchant_no):
    confirmation = review(applier, merchant_no)

    response = applier.post(
        APPLY_URL, {"_step": "confirm", "_edit": "1", **confirmation.context["hidden"]}
    )

    assert "admin/hsq_refunds/refund/apply_form.html" in templates(response)
    assert response.context["form"]["amount_yuan"].value() == "12.34"
    assert not Refund.objects.exists() and sent(sandbox) == {}


def test_an_over_refund_is_refused_before_the_confirmation(applier, sandbox, merchant_no):
    applied_earlier("RF-EARLIER", amount=8000)

    response = review(applier, merchant_no, amount_yuan="30.00")

    assert "admin/hsq_refunds/refund/apply_form.html" in templates(response)
    [error] = form_errors(response)["amount_yuan"]
    assert error == (
        "Order PO-1 was paid ¥100.00; ¥80.00 of it is already refunded or in flight, so "
        "¥30.00 more cannot be refunded."
    )
    assert Refund.objects.count() == 1
    assert sent(sandbox) == {"RF-EARLIER": 1}
    assert review(applier, merchant_no, amount_yuan="20.00").context["left"] == "¥0.00"


def test_a_paid_amount_other_than_the_one_given_before_is_refused(applier, sandbox, merchant_no):
    applied_earlier("RF-EARLIER", amount=1000)

    response = review(applier, merchant_no, orig_amount_yuan="90.00", amount_yuan="10.00")

    [error] = form_errors(response)["orig_amount_yuan"]
    assert "was paid ¥100.00 as given before, not ¥90.00" in error
    assert sent(sandbox) == {"RF-EARLIER": 1}


def test_an_over_refund_arising_after_the_confirmation_is_refused_when_confirmed(
    applier, sandbox, merchant_no
):
    confirmation = review(applier, merchant_no, amount_yuan="60.00")
    applied_earlier("RF-MEANWHILE", amount=5000)  # someone else, while the page was open

    response = confirm(applier, confirmation)

    assert response.status_code == 200
    assert "admin/hsq_refunds/refund/apply_form.html" in templates(response)
    [error] = response.context["form"].non_field_errors()
    assert error.startswith("Order PO-1 was paid ¥100.00; ¥50.00 of it is already refunded")
    assert not Refund.objects.filter(trans_no=confirmation.context["hidden"]["trans_no"]).exists()
    assert sent(sandbox) == {"RF-MEANWHILE": 1}


# --------------------------------------------------------------------------- applying


def test_a_confirmed_application_is_sent_once_and_shown_on_the_refunds_page(
    applier, sandbox, merchant_no
):
    confirmation = review(applier, merchant_no)
    trans_no = confirmation.context["hidden"]["trans_no"]

    response = confirm(applier, confirmation)

    refund = Refund.objects.get()
    assert response.status_code == 302 and response.url == change_url(refund)
    page = applier.get(response.url)
    assert message_texts(page) == [
        (
            "success",
            f"Applied for refund {trans_no}. HSQ answered: Processing, code {PROCESSING[0]}, "
            f"“{PROCESSING[1]}”.",
        )
    ]
    assert (refund.trans_no, refund.merchant_no, refund.orig_trans_no) == (
        trans_no,
        merchant_no,
        "PO-1",
    )
    assert (refund.orig_amount, refund.amount, refund.reason) == (10000, 1234, "七天无理由退货")
    assert (refund.application, refund.apply_attempts, refund.status) == (
        "accepted",
        1,
        "PROCESSING",
    )
    assert refund.trade_no and refund.queries.get().source == "application"
    assert sent(sandbox) == {trans_no: 1}


def test_posting_the_same_confirmation_twice_applies_once(applier, sandbox, merchant_no):
    confirmation = review(applier, merchant_no, amount_yuan="100.00")
    trans_no = confirmation.context["hidden"]["trans_no"]

    first = confirm(applier, confirmation)
    second = confirm(applier, confirmation)

    refund = Refund.objects.get()
    assert first.status_code == 302
    assert second.status_code == 200
    assert second.context["form"].non_field_errors() == [
        f"A refund with transNo {trans_no} already exists."
    ]
    assert f'<a href="{change_url(refund)}" id="hsq-existing-link">' in second.content.decode()
    assert sent(sandbox) == {trans_no: 1}
    assert refund.apply_attempts == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_posts_of_one_confirmation_apply_once(
    applier, sandbox, merchant_no, monkeypatch
):
    """Both requests pass the view's own check before either writes; the service's unique
    transNo and the order's lock let one through, and the other says it exists."""
    confirmation = review(applier, merchant_no, amount_yuan="10.00")
    trans_no = confirmation.context["hidden"]["trans_no"]
    both_checked = threading.Barrier(2, timeout=30)
    original = apply_service.apply_refund

    def apply_after_both_checked(**kwargs):
        both_checked.wait()
        return original(**kwargs)

    monkeypatch.setattr(apply_service, "apply_refund", apply_after_both_checked)
    responses = []

    def post() -> None:
        try:
            responses.append(confirm(applier, confirmation))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(response.status_code for response in responses) == [200, 302]
    [refused] = [response for response in responses if response.status_code == 200]
    assert refused.context["form"].non_field_errors() == [
        f"A refund with transNo {trans_no} already exists."
    ]
    assert Refund.objects.filter(trans_no=trans_no).count() == 1
    assert sent(sandbox) == {trans_no: 1}


def test_an_unknown_outcome_says_the_app_will_query_it_and_never_resend_it(
    applier, sandbox, configure, merchant_no
):
    configure(READ_TIMEOUT=2)
    sandbox.set_fault("accept_then_drop", method="POLYMERIZE_REFUND")
    confirmation = review(applier, merchant_no)
    trans_no = confirmation.context["hidden"]["trans_no"]

    page = confirm(applier, confirmation, follow=True)

    [(level, text)] = message_texts(page)
    assert level == "warning"
    assert text.startswith(
        f"The outcome of the application for refund {trans_no} is not known yet (network error"
    )
    assert text.endswith("The app will query HSQ about it; it will not send it again.")
    refund = Refund.objects.get()
    assert page.redirect_chain == [(change_url(refund), 302)]
    assert (refund.application, refund.status) == ("unknown", "UNKNOWN")
    assert refund.next_query_at is not None
    assert sent(sandbox) == {trans_no: 1}


def test_a_refusal_by_hsq_is_shown_with_its_code_and_message(applier, sandbox, merchant_no):
    sandbox.add_orders([{"origTransNo": "PO-SMALL", "amount": 500}])  # HSQ knows ¥5.00 was paid
    confirmation = review(
        applier, merchant_no, orig_trans_no="PO-SMALL", orig_amount_yuan="9.00", amount_yuan="9.00"
    )

    page = confirm(applier, confirmation, follow=True)

    [(level, text)] = message_texts(page)
    refund = Refund.objects.get()
    assert level == "error"
    assert text.startswith(f"HSQ refused the application for refund {refund.trans_no}: code ")
    assert refund.resp_code in text and refund.resp_msg in text
    assert (refund.status, refund.application) == ("FAIL", "refused")


def test_a_configuration_error_is_a_message_naming_it(
    applier, sandbox, settings, merchant_no, hsq_sandbox_credentials
):
    merchant = settings.HSQ_REFUNDS["MERCHANTS"][merchant_no]
    settings.HSQ_REFUNDS = {
        **settings.HSQ_REFUNDS,
        "MERCHANTS": {merchant_no: {**merchant, "PRIVATE_KEY_PASSWORD": "wrong-password-123"}},
    }
    confirmation = review(applier, merchant_no)

    response = confirm(applier, confirmation)

    assert response.status_code == 200
    assert "admin/hsq_refunds/refund/apply_form.html" in templates(response)
    [(level, text)] = message_texts(response)
    assert level == "error" and text.startswith("Could not apply for the refund: configuration")
    html = response.content.decode()
    for secret in ("wrong-password-123", hsq_sandbox_credentials.sign_key, "Traceback"):
        assert secret not in html
    assert not Refund.objects.exists() and sent(sandbox) == {}


def test_the_confirmation_needs_the_csrf_token(applier, sandbox, merchant_no, django_user_model):
    confirmation = review(applier, merchant_no)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(django_user_model.objects.get(username="staff-view_refund-apply_refund"))

    response = confirm(strict, confirmation)

    assert response.status_code == 403
    assert not Refund.objects.exists() and sent(sandbox) == {}


def test_a_forged_refund_number_in_the_confirmation_is_a_form_error(applier, sandbox, merchant_no):
    confirmation = review(applier, merchant_no)
    forged = {**confirmation.context["hidden"], "trans_no": "R" * 65}

    response = applier.post(APPLY_URL, {"_step": "confirm", "_confirm": "1", **forged})

    assert list(form_errors(response)) == ["trans_no"]
    assert not Refund.objects.exists() and sent(sandbox) == {}


@pytest.mark.django_db(transaction=True)
def test_the_row_is_committed_before_sending_even_with_atomic_requests(
    applier, sandbox, merchant_no, monkeypatch
):
    """With ``ATOMIC_REQUESTS`` a view in a request transaction would send with the refund's
    row uncommitted; the admin's apply and send-again views are not atomic."""
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    in_transaction: list[bool] = []
    monkeypatch.setattr(
        apply_service,
        "_before_send",
        lambda refund: in_transaction.append(connection.in_atomic_block),
    )
    confirmation = review(applier, merchant_no)

    assert confirm(applier, confirmation).status_code == 302

    refund = Refund.objects.get()
    flag_not_received(refund)
    assert applier.post(send_again_url(refund), again_form(refund)).status_code == 302
    assert in_transaction == [False, False]


# --------------------------------------------------------------------------- sending again


def flag_not_received(refund: Refund) -> Refund:
    """What the poller writes when HSQ still does not know an application after the grace."""
    Refund.objects.filter(pk=refund.pk).update(
        application="unknown",
        needs_attention=True,
        attention_reason="not_received",
        attention_detail="HSQ does not know this refund.",
        applied_at=timezone.now() - timedelta(minutes=10),
    )
    refund.refresh_from_db()
    return refund


def again_form(refund: Refund) -> dict[str, str]:
    return {"_confirm": "1", "apply_attempts": str(refund.apply_attempts)}


@pytest.fixture
def lost(sandbox) -> Refund:
    """A refund whose application never reached HSQ, flagged ``not_received``."""
    sandbox.set_fault("drop", trans_no="RF-LOST", method="POLYMERIZE_REFUND", times=1)
    refund = applied_earlier("RF-LOST", amount=1500)
    assert refund.application == "unknown"
    return flag_not_received(refund)


def test_the_send_again_button_shows_only_for_a_flagged_refund_and_the_permission(
    applier, viewer, admin_client, sandbox, lost
):
    other = applied_earlier("RF-FINE", orig_trans_no="PO-2", amount=100)

    flagged_page = applier.get(change_url(lost)).content.decode()

    assert f'<a href="{send_again_url(lost)}" id="hsq-send-again-link">' in flagged_page
    assert "Send the application again" in flagged_page
    assert "hsq-send-again-link" in admin_client.get(change_url(lost)).content.decode()
    assert "hsq-send-again-link" not in applier.get(change_url(other)).content.decode()
    assert "hsq-send-again-link" not in viewer.get(change_url(lost)).content.decode()
    assert viewer.get(send_again_url(lost)).status_code == 403
    assert viewer.post(send_again_url(lost), again_form(lost)).status_code == 403


def test_sending_again_asks_first_then_sends_once(applier, sandbox, lost):
    before = sent(sandbox).get("RF-LOST", 0)

    page = applier.get(send_again_url(lost))
    also_asks = applier.post(send_again_url(lost))  # a POST without the confirmation
    assert sent(sandbox).get("RF-LOST", 0) == before
    response = applier.post(send_again_url(lost), again_form(lost), follow=True)

    assert page.status_code == 200 and also_asks.status_code == 200
    html = page.content.decode()
    assert "RF-LOST" in html and "¥15.00" in html
    assert 'name="apply_attempts" value="1"' in html and 'name="csrfmiddlewaretoken"' in html
    assert response.redirect_chain == [(change_url(lost), 302)]
    assert message_texts(response) == [
        (
            "success",
            "The application for refund RF-LOST was sent again. HSQ answered: Processing, "
            f"code {PROCESSING[0]}, “{PROCESSING[1]}”.",
        )
    ]
    lost.refresh_from_db()
    assert (lost.application, lost.apply_attempts, lost.needs_attention) == ("accepted", 2, False)
    assert sent(sandbox)["RF-LOST"] == before + 1
    # The same confirmation posted again: the refund is no longer flagged, nothing is sent.
    again = applier.post(
        send_again_url(lost), {"_confirm": "1", "apply_attempts": "2"}, follow=True
    )
    assert message_texts(again) == [
        (
            "warning",
            "Refund RF-LOST is not flagged as possibly not received by HSQ; its application was "
            "not sent again.",
        )
    ]
    assert sent(sandbox)["RF-LOST"] == before + 1


def test_a_second_post_of_one_send_again_confirmation_sends_nothing(applier, sandbox, lost):
    sandbox.set_fault("drop", trans_no="RF-LOST", method="POLYMERIZE_REFUND", times=1)
    shown = again_form(lost)
    before = sent(sandbox).get("RF-LOST", 0)

    first = applier.post(send_again_url(lost), shown, follow=True)
    second = applier.post(send_again_url(lost), shown, follow=True)

    [(level, text)] = message_texts(first)
    assert level == "warning" and "is not known yet" in text
    lost.refresh_from_db()
    assert lost.attention_reason == "not_received" and lost.apply_attempts == 2
    assert message_texts(second) == [
        (
            "warning",
            "The application for refund RF-LOST was sent again since this page was shown; it "
            "was not sent once more.",
        )
    ]
    assert sent(sandbox).get("RF-LOST", 0) == before + 1
    assert Refund.objects.get(pk=lost.pk).apply_attempts == 2


# --------------------------------------------------------------------------- in Chinese


def test_the_pages_and_messages_are_chinese(applier, sandbox, merchant_no, lost):
    changelist = applier.get(changelist_url(), **CHINESE).content.decode()
    form = applier.get(APPLY_URL, **CHINESE).content.decode()
    mistake = applier.post(
        APPLY_URL, {"_step": "review", **fields(merchant_no, amount_yuan="0")}, **CHINESE
    )
    confirmation = applier.post(
        APPLY_URL, {"_step": "review", **fields(merchant_no, orig_trans_no="PO-ZH")}, **CHINESE
    )
    done = confirm(applier, confirmation, follow=True, **CHINESE)
    refund_page = applier.get(change_url(lost), **CHINESE).content.decode()
    again_page = applier.get(send_again_url(lost), **CHINESE).content.decode()

    assert ">申请退款</a>" in changelist
    for text in (
        "申请退款",
        "原订单号",
        "支付金额（元）",
        "退款金额（元）",
        "退款原因",
        "核对退款",
    ):
        assert text in form, text
    assert form_errors(mistake) == {"amount_yuan": ["请输入大于零的金额。"]}
    html = confirmation.content.decode()
    for text in ("确认退款", "已退款或退款中", "本次退款", "本次之后剩余可退", "申请这笔退款"):
        assert text in html, text
    trans_no = confirmation.context["hidden"]["trans_no"]
    assert message_texts(done) == [
        (
            "success",
            f"已申请退款 {trans_no}。慧收钱应答：处理中，代码 {PROCESSING[0]}，“{PROCESSING[1]}”。",
        )
    ]
    assert "重新发送申请" in refund_page
    assert "慧收钱没有确认收到退款 <strong>RF-LOST</strong> 的申请" in again_page
