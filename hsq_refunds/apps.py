"""The Django app: its system checks registered on start-up."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class HsqRefundsConfig(AppConfig):
    name = "hsq_refunds"
    verbose_name = _("HSQ refunds")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
