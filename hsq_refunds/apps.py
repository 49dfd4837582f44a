"""The Django app: system checks registered and the settings hook connected on start-up."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.utils.translation import gettext_lazy as _


class HsqRefundsConfig(AppConfig):
    name = "hsq_refunds"
    verbose_name = _("HSQ refunds")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            conf,  # noqa: F401 - connects the setting_changed receiver
            scheduling,  # noqa: F401 - registers the django-q2 checks
        )
        from .checks import check_settings

        checks.register(check_settings, "hsq_refunds")
