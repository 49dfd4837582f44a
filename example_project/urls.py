"""The example's URLs: the Django admin, where people look at and refresh refunds, and the
app's notification view, where HSQ pushes each refund's new status (``NOTIFY_URL``)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    # HSQ's refund notifications: /hsq/refund-notify/ (environment.NOTIFY_PATH).
    path("hsq/", include("hsq_refunds.urls")),
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
]
