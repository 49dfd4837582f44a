"""The Django admin of hsq_refunds: see refunds, add one by hand, refresh their status, apply
to HSQ for new ones.

Refreshing goes through the same engine as the management command and the django-q2 task
(:func:`hsq_refunds.sync.sync_refunds`). The admin only decides how much work one web request
may do (at most ``ADMIN_SYNC_LIMIT`` refunds; more are queued on django-q2 or refused) and
turns the engine's report into messages. Gateway failures become messages naming the error
type and the gateway's own code and message: never a 500, never key material.

:class:`RefundAdmin` is registered for :class:`~hsq_refunds.models.Refund`. Its own pages
(:mod:`hsq_refunds.admin.views`) apply for a refund and send an application again through
:mod:`hsq_refunds.apply`; both need their own permission, ``hsq_refunds.apply_refund``, show
what is about to be sent and send only on a confirming POST, which carries what makes a replay
harmless (the new refund's transNo; the number of applications sent so far).
"""

from .forms import RefundAddForm, RefundApplyForm
from .refunds import RefundAdmin, RefundQueryInline

__all__ = ["RefundAddForm", "RefundAdmin", "RefundApplyForm", "RefundQueryInline"]
