"""The mistake :mod:`tests.notify.urls_i18n` avoids: the app's URLs inside ``i18n_patterns``
with the default language prefixed, so that ``/hsq/refund-notify/`` leads to no view and
``LocaleMiddleware`` redirects HSQ's POST to ``/en/hsq/refund-notify/`` (check
``hsq_refunds.W007`` says so)."""

from django.conf.urls.i18n import i18n_patterns
from django.urls import include, path

urlpatterns = i18n_patterns(path("hsq/", include("hsq_refunds.urls")), prefix_default_language=True)
