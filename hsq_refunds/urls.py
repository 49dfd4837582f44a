"""URLs of hsq_refunds for the merchant's project: ``path("hsq/", include("hsq_refunds.urls"))``.

``refund-notify/`` (named ``hsq_refunds:refund_notify``) receives HSQ's refund notifications;
set ``HSQ_REFUNDS["NOTIFY_URL"]`` to its public https address.
"""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "hsq_refunds"

urlpatterns = [
    path("refund-notify/", views.refund_notify, name="refund_notify"),
]
