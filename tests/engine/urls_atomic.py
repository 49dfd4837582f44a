"""A shop's views that apply for a refund, for the tests under ``ATOMIC_REQUESTS``."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from hsq_refunds.models import Refund


class ShopError(Exception):
    """What the shop's own code raises after applying."""


def _apply(request: HttpRequest) -> Refund:
    return Refund.objects.apply(
        orig_trans_no=request.POST["order"],
        orig_amount=5000,
        amount=1200,
        trans_no=request.POST["trans_no"],
    )


def apply_and_return(request: HttpRequest) -> HttpResponse:
    refund = _apply(request)
    return HttpResponse(f"{refund.trans_no} {refund.application}")


def apply_then_fail(request: HttpRequest) -> HttpResponse:
    _apply(request)
    raise ShopError("the shop's own code failed after applying")


urlpatterns = [
    path("apply/", apply_and_return),
    path("apply-then-fail/", apply_then_fail),
]
