"""Amounts typed in the admin are bounded before any arithmetic: whatever is typed in yuan on the
apply form (both its steps) or the "add refund" form is a form error in the person's language
or an exact amount, never a 500, and nothing is written or sent for it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsq_refunds.admin import RefundAddForm, RefundApplyForm
from hsq_refunds.admin.forms import typed_fen
from hsq_refunds.gateway.validation import MAX_AMOUNT_FEN
from hsq_refunds.models import PaidOrder, Refund

from .conftest import change_url

pytestmark = pytest.mark.django_db

APPLY_URL = reverse("admin:hsq_refunds_refund_apply")
ADD_URL = reverse("admin:hsq_refunds_refund_add")
CHINESE = {"headers": {"accept-language": "zh-CN,zh;q=0.9"}}

# The form's messages, in English and as the zh-hans catalogs (the app's, Django's) say them.
TOO_LARGE = ("The amount is too large.", "金额过大。")
TOO_MANY_DIGITS = (  # new: Chinese once the app's catalog is compiled
    "The amount has too many digits: enter it in yuan, with at most two decimals.",
    "金额位数过多：请以元为单位输入，最多两位小数。",
)
NOT_A_NUMBER = ("Enter a number.", "输入一个数字。")  # Django's own
TWO_DECIMALS = (
    "Enter the amount in yuan with at most two decimals.",
    "请以元为单位输入金额，最多两位小数。",
)
DIGITS_0_9 = (  # new: Chinese once the app's catalog is compiled
    "Enter the amount with the digits 0-9.",
    "请用半角数字 0-9 输入金额。",
)
# Django's own, for the "add refund" form (its existing tests expect Django's wording).
AT_LEAST_A_FEN = ("Ensure this value is greater than or equal to 0.01.", "确保该值大于或等于0.01。")
TWO_PLACES = ("Ensure that there are no more than 2 decimal places.", "确认小数不超过 2 位.")

HUGE = "1e999999999"
FOUR_HUNDRED_DIGITS = "9" * 400

#: What each amount is refused with on the apply form (every message it shows).
APPLY_REFUSALS = {
    HUGE: [TOO_LARGE, TOO_MANY_DIGITS],
    "-1e999999999": [TOO_MANY_DIGITS],
    "Infinity": [NOT_A_NUMBER],
    "-Infinity": [NOT_A_NUMBER],
    "NaN": [NOT_A_NUMBER],
    "sNaN": [NOT_A_NUMBER],
    FOUR_HUNDRED_DIGITS: [TOO_LARGE, TOO_MANY_DIGITS],
    "1e-999999999": [TOO_MANY_DIGITS],
    "0.001": [TWO_DECIMALS],
    "１２": [DIGITS_0_9],
}
#: The same on the "add refund" form.
ADD_REFUSALS = {
    HUGE: [TOO_LARGE, TOO_MANY_DIGITS],
    "-1e999999999": [AT_LEAST_A_FEN, TOO_MANY_DIGITS],
    "Infinity": [NOT_A_NUMBER],
    "-Infinity": [NOT_A_NUMBER],
    "NaN": [NOT_A_NUMBER],
    "sNaN": [NOT_A_NUMBER],
    FOUR_HUNDRED_DIGITS: [TOO_LARGE, TOO_MANY_DIGITS],
    "1e-999999999": [AT_LEAST_A_FEN, TOO_MANY_DIGITS],
    "0.001": [AT_LEAST_A_FEN, TWO_PLACES],
    "１２": [DIGITS_0_9],
}
LANGUAGES = {"en": (0, {}), "zh-hans": (1, CHINESE)}
AMOUNT_FIELDS = ("orig_amount_yuan", "amount_yuan")


def typed_id(typed: str) -> str:
    return "400-digits" if typed == FOUR_HUNDRED_DIGITS else typed.encode("unicode_escape").decode()


def sent(sandbox) -> dict[str, int]:
    """How often the sandbox received an application, by transNo."""
    return {no: counts["received"] for no, counts in sandbox.application_counts().items()}


def fields(merchant: str, /, **values: str) -> dict[str, str]:
    return {
        "merchant_no": merchant,
        "orig_trans_no": "PO-BOUNDS",
        "orig_amount_yuan": "100.00",
        "amount_yuan": "12.34",
        "reason": "",
        **values,
    }


def review(client: Client, merchant: str, /, headers: dict | None = None, **values: str):
    data = {"_step": "review", **fields(merchant, **values)}
    return client.post(APPLY_URL, data, **({"headers": headers} if headers else {}))


def a_confirmation(client: Client, merchant: str) -> dict[str, str]:
    """The hidden fields of a real confirmation page (a valid refund order number in them)."""
    response = review(client, merchant)
    assert response.status_code == 200
    assert "admin/hsq_refunds/refund/apply_confirm.html" in templates(response)
    return dict(response.context["hidden"])


def templates(response) -> list[str]:
    return [template.name for template in response.templates]


def field_errors(form, name: str) -> list[str]:
    return [str(error) for error in form.errors.get(name, [])]


@pytest.fixture
def applier(staff_client) -> Client:
    return staff_client("view_refund", "apply_refund")


@pytest.fixture
def adder(staff_client) -> Client:
    return staff_client("view_refund", "add_refund")


def assert_refused(response, form, name: str, messages: list[str]) -> None:
    """A form error on ``name`` with each message, shown on the page."""
    assert response.status_code == 200
    assert list(form.errors) == [name]
    assert field_errors(form, name) == messages
    html = response.content.decode()
    for message in messages:
        assert escape(message) in html, message


# --------------------------------------------------------------------------- the apply form


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", AMOUNT_FIELDS)
@pytest.mark.parametrize("typed", APPLY_REFUSALS, ids=typed_id)
def test_the_review_step_refuses_the_amount(applier, sandbox, merchant_no, typed, name, language):
    index, kwargs = LANGUAGES[language]
    before = Refund.objects.count()

    response = review(applier, merchant_no, headers=kwargs.get("headers"), **{name: typed})

    assert "admin/hsq_refunds/refund/apply_form.html" in templates(response)
    expected = [message[index] for message in APPLY_REFUSALS[typed]]
    assert_refused(response, response.context["form"], name, expected)
    assert Refund.objects.count() == before and not PaidOrder.objects.exists()
    assert sent(sandbox) == {}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", AMOUNT_FIELDS)
@pytest.mark.parametrize("typed", APPLY_REFUSALS, ids=typed_id)
def test_the_confirm_step_refuses_the_amount(applier, sandbox, merchant_no, typed, name, language):
    """A confirmation posted with the amount changed (by hand, or forged) is refused as well."""
    index, kwargs = LANGUAGES[language]
    hidden = a_confirmation(applier, merchant_no)
    before = Refund.objects.count()

    response = applier.post(
        APPLY_URL, {"_step": "confirm", "_confirm": "1", **hidden, name: typed}, **kwargs
    )

    assert "admin/hsq_refunds/refund/apply_form.html" in templates(response)
    expected = [message[index] for message in APPLY_REFUSALS[typed]]
    assert_refused(response, response.context["form"], name, expected)
    assert Refund.objects.count() == before and not PaidOrder.objects.exists()
    assert sent(sandbox) == {}


@pytest.mark.parametrize("name", AMOUNT_FIELDS)
def test_an_amount_just_above_the_gateways_bound_is_too_large(applier, sandbox, merchant_no, name):
    largest = Decimal(MAX_AMOUNT_FEN).scaleb(-2)
    values = {"orig_amount_yuan": str(largest), "amount_yuan": str(largest)}

    response = review(applier, merchant_no, **{**values, name: str(largest + Decimal("0.01"))})

    assert field_errors(response.context["form"], name) == [TOO_LARGE[0]]
    assert sent(sandbox) == {}


def test_the_gateways_largest_amount_reaches_the_confirmation(applier, sandbox, merchant_no):
    largest = str(Decimal(MAX_AMOUNT_FEN).scaleb(-2))

    response = review(applier, merchant_no, orig_amount_yuan=largest, amount_yuan=largest)

    assert "admin/hsq_refunds/refund/apply_confirm.html" in templates(response)
    assert response.context["amount"] == "¥100,000,000,000,000.00"
    assert sent(sandbox) == {}


def test_spaces_around_an_amount_are_dropped(applier, sandbox, merchant_no):
    """``  12.5  `` is 12.50 yuan: whitespace around a number is no mistake (as in Django)."""
    response = review(applier, merchant_no, orig_amount_yuan="  100  ", amount_yuan="  12.5  ")
    confirmed = applier.post(
        APPLY_URL, {"_step": "confirm", "_confirm": "1", **response.context["hidden"]}
    )

    assert response.context["amount"] == "¥12.50"
    assert response.context["hidden"]["amount_yuan"] == "12.5"
    refund = Refund.objects.get()
    assert confirmed.status_code == 302 and confirmed["Location"] == change_url(refund)
    assert (refund.orig_amount, refund.amount) == (10000, 1250)
    assert sent(sandbox) == {refund.trans_no: 1}


def test_an_amount_with_an_exponent_survives_the_confirmation(applier, sandbox, merchant_no):
    """``str(Decimal("1e1"))`` is ``1E+1``: the confirmation's hidden field must read back."""
    response = review(applier, merchant_no, amount_yuan="1e1")
    hidden = response.context["hidden"]
    confirmed = applier.post(APPLY_URL, {"_step": "confirm", "_confirm": "1", **hidden})

    assert hidden["amount_yuan"] == "1E+1"
    assert confirmed.status_code == 302
    assert Refund.objects.get().amount == 1000


@pytest.mark.parametrize("typed", ["1_000", "12,5", "12.340", "¥12"])
def test_other_writings_of_numbers_are_refused(applier, sandbox, merchant_no, typed):
    response = review(applier, merchant_no, amount_yuan=typed)

    assert response.status_code == 200
    assert list(response.context["form"].errors) == ["amount_yuan"]
    assert sent(sandbox) == {}


# --------------------------------------------------------------------------- the add form


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("typed", ADD_REFUSALS, ids=typed_id)
def test_the_add_form_refuses_the_amount(adder, sandbox, merchant_no, typed, language):
    index, kwargs = LANGUAGES[language]
    before = Refund.objects.count()

    response = adder.post(
        ADD_URL,
        {"trans_no": "R-BOUNDS", "merchant_no": merchant_no, "amount_yuan": typed},
        **kwargs,
    )

    expected = [message[index] for message in ADD_REFUSALS[typed]]
    assert_refused(response, response.context["adminform"].form, "amount_yuan", expected)
    assert Refund.objects.count() == before
    assert sandbox.query_counts() == {}


def test_the_add_form_takes_the_gateways_largest_amount_and_spaces(adder, sandbox, merchant_no):
    largest = str(Decimal(MAX_AMOUNT_FEN).scaleb(-2))
    data = {"merchant_no": merchant_no}

    too_large = adder.post(
        ADD_URL, {**data, "trans_no": "R-BIG", "amount_yuan": "100000000000000.01"}
    )
    added = adder.post(ADD_URL, {**data, "trans_no": "R-MAX", "amount_yuan": largest})
    spaced = adder.post(ADD_URL, {**data, "trans_no": "R-SPACED", "amount_yuan": "  12.5  "})

    assert field_errors(too_large.context["adminform"].form, "amount_yuan") == [TOO_LARGE[0]]
    assert (added.status_code, spaced.status_code) == (302, 302)
    assert Refund.objects.get(trans_no="R-MAX").amount == MAX_AMOUNT_FEN
    assert Refund.objects.get(trans_no="R-SPACED").amount == 1250
    assert not Refund.objects.filter(trans_no="R-BIG").exists()


# --------------------------------------------------------------------------- any text at all

AMOUNTS = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A\s*[+-]?[0-9]{0,20}(\.[0-9]{0,5})?([eE][+-]?[0-9]{1,12})?\s*\Z"),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(list(APPLY_REFUSALS)),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(paid=AMOUNTS, amount=AMOUNTS)
def test_any_text_is_a_form_error_or_an_amount_within_bounds(sandbox, merchant_no, paid, amount):
    """The forms themselves, on any text: no exception, and valid means 1 fen to the bound."""
    form = RefundApplyForm(
        data={**fields(merchant_no), "orig_amount_yuan": paid, "amount_yuan": amount}
    )
    if form.is_valid():
        assert 1 <= form.amount_fen() <= form.orig_amount_fen() <= MAX_AMOUNT_FEN
    for name in AMOUNT_FIELDS:
        if name not in form.errors:
            assert 1 <= typed_fen(form, name) <= MAX_AMOUNT_FEN

    add = RefundAddForm(
        data={"trans_no": "R-ANY", "merchant_no": merchant_no, "amount_yuan": amount}
    )
    if add.is_valid():
        fen = add.amount_fen()
        assert fen is None or 1 <= fen <= MAX_AMOUNT_FEN
