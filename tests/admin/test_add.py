"""Adding a refund by hand starts tracking it; the first query fills in the rest."""

from __future__ import annotations

import pytest
from django.urls import reverse

from hsq_refunds.models import Refund

from .conftest import change_url, refresh_url

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:hsq_refunds_refund_add")


def test_add_page_offers_the_configured_merchants(admin_client, sandbox, merchant_no):
    response = admin_client.get(ADD_URL)

    form = response.context["adminform"].form
    assert list(form.fields) == ["trans_no", "merchant_no", "orig_trans_no", "amount_yuan"]
    assert form.fields["merchant_no"].choices == [(merchant_no, merchant_no)]
    assert form["merchant_no"].value() == merchant_no
    assert response.context["inline_admin_formsets"] == []


def test_adding_a_refund_tracks_it(admin_client, sandbox, merchant_no):
    response = admin_client.post(
        ADD_URL,
        {
            "trans_no": "R-NEW",
            "merchant_no": merchant_no,
            "orig_trans_no": "P-NEW",
            "amount_yuan": "19.99",
        },
    )

    assert response.status_code == 302
    refund = Refund.objects.get(trans_no="R-NEW")
    assert (refund.merchant_no, refund.orig_trans_no, refund.amount) == (
        merchant_no,
        "P-NEW",
        1999,
    )
    assert refund.status == "UNKNOWN"
    assert refund.next_query_at is not None
    assert sandbox.query_counts() == {}


def test_the_first_query_fills_in_the_rest(admin_client, sandbox, merchant_no):
    sandbox.add_refund(
        "R-FILL", amount=250, orig_trans_no="P-FILL", timeline=[{"status": "SUCCESS"}]
    )
    admin_client.post(ADD_URL, {"trans_no": "R-FILL", "merchant_no": merchant_no})
    refund = Refund.objects.get(trans_no="R-FILL")
    assert (refund.amount, refund.orig_trans_no) == (None, "")

    admin_client.post(refresh_url(refund))

    refund.refresh_from_db()
    assert (refund.status, refund.amount, refund.orig_trans_no) == ("SUCCESS", 250, "P-FILL")
    assert refund.trade_no
    page = admin_client.get(change_url(refund)).content.decode()
    assert "¥2.50" in page


@pytest.mark.parametrize(
    ("data", "field", "error"),
    [
        ({"amount_yuan": "1.005"}, "amount_yuan", "Ensure that there are no more than 2 decimal"),
        ({"amount_yuan": "0"}, "amount_yuan", "greater than or equal to 0.01"),
        ({"merchant_no": "999"}, "merchant_no", "Select a valid choice"),
        ({"trans_no": ""}, "trans_no", "This field is required"),
        ({"trans_no": "R\x07"}, "trans_no", "control characters"),
        ({"trans_no": "R" * 65}, "trans_no", "at most 64 characters"),
    ],
)
def test_invalid_input_is_refused(admin_client, sandbox, merchant_no, data, field, error):
    response = admin_client.post(ADD_URL, {"trans_no": "R-BAD", "merchant_no": merchant_no, **data})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert error in " ".join(errors[field])
    assert not Refund.objects.exists()


def test_a_refund_already_tracked_is_refused(admin_client, make_refund, merchant_no):
    make_refund("R-TWICE")

    response = admin_client.post(ADD_URL, {"trans_no": "R-TWICE", "merchant_no": merchant_no})

    assert response.status_code == 200
    assert "already exists" in str(response.context["adminform"].form.errors)
    assert Refund.objects.count() == 1


def test_without_merchants_the_form_says_so(admin_client, settings):
    settings.HSQ_REFUNDS = {"MERCHANTS": {}}

    response = admin_client.get(ADD_URL)

    assert "No merchant is configured in the HSQ_REFUNDS setting." in response.content.decode()
