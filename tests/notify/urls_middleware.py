"""The suite's URLconf (:mod:`tests.urls`) and a probe, ``/probe/``: an ordinary view of the
shop, behind the same middleware as the notification view, that says whether it ran in a
request transaction. It shows that the middleware under test is really in effect."""

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import path

from tests.urls import urlpatterns as suite_urlpatterns


def probe(request: HttpRequest) -> HttpResponse:
    return HttpResponse("atomic" if connection.in_atomic_block else "autocommit")


urlpatterns = [*suite_urlpatterns, path("probe/", probe, name="probe")]
