"""A shop's URLconf with ``i18n_patterns(prefix_default_language=True)`` and the app's URLs
outside them, as they must be: ``/hsq/refund-notify/`` is the notification view in every
language, while the shop's own pages (``/probe/`` here) are redirected to ``/en/probe/``.

Inside ``i18n_patterns`` (:mod:`tests.notify.urls_i18n_inside`) the view would be reachable only
as ``/en/hsq/refund-notify/``: ``LocaleMiddleware`` answers a POST to ``/hsq/refund-notify/``
with a redirect, which loses the notification, and check ``hsq_refunds.W007`` names the path
and the fix.
"""

from django.conf.urls.i18n import i18n_patterns
from django.urls import include, path

from tests.notify.urls_middleware import probe

urlpatterns = [
    path("hsq/", include("hsq_refunds.urls")),
    *i18n_patterns(path("probe/", probe, name="probe"), prefix_default_language=True),
]
