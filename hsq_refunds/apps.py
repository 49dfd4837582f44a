"""The Django app: on start-up, its system checks registered and ``Refund.objects.apply``
attached."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class HsqRefundsConfig(AppConfig):
    name = "hsq_refunds"
    verbose_name = _("HSQ refunds")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
        from .apply import apply_refund
        from .models import RefundManager

        RefundManager.apply = staticmethod(apply_refund)
