"""The refund admin's own pages, mounted by :meth:`RefundAdmin.get_urls
<hsq_refunds.admin.RefundAdmin.get_urls>`: a refund's "Refresh status" button, applying for a
refund, sending an application again."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.generic import FormView, View
from django.views.generic.base import ContextMixin, TemplateResponseMixin

from .. import conf
from ..apply import balance_of, send_again, unknown_amounts_message
from ..choices import Application, AttentionReason
from ..gateway import HsqError, new_trans_no
from ..models import Refund, SyncTrigger
from ..money import format_fen
from ..report import SyncReport, describe_error, describe_failures
from ..sync import sync_refund
from .forms import RefundApplyForm

logger = logging.getLogger("hsq_refunds.admin")

#: How many of an order's refunds the confirmation of a new one lists, newest first.
ORDER_REFUNDS_SHOWN = 50


def application_outcome(refund: Refund, *, again: bool) -> tuple[str, int]:
    """The message text and level of what HSQ made of an application."""
    words = {
        "trans_no": refund.trans_no,
        "status": refund.get_status_display(),
        "code": refund.resp_code or "-",
        "message": refund.resp_msg or "-",
    }
    if refund.application == Application.ACCEPTED:
        if again:
            text = gettext(
                "The application for refund %(trans_no)s was sent again. HSQ answered: "
                "%(status)s, code %(code)s, “%(message)s”."
            )
        else:
            text = gettext(
                "Applied for refund %(trans_no)s. HSQ answered: %(status)s, code "
                "%(code)s, “%(message)s”."
            )
        level = messages.WARNING if refund.status == Refund.Status.FAIL else messages.SUCCESS
    elif refund.application == Application.QUEUED:
        text = gettext(
            "Refund %(trans_no)s is written; its application is sent to HSQ when the "
            "transaction commits."
        )
        level = messages.INFO
    elif refund.application == Application.REFUSED:
        text = gettext(
            "HSQ refused the application for refund %(trans_no)s: code %(code)s, "
            "“%(message)s”. The refund failed; it takes nothing of the order's "
            "paid amount."
        )
        level = messages.ERROR
    else:
        words["error"] = (
            describe_error(
                refund.last_error_type, refund.last_error_code, refund.last_error_message
            )
            if refund.last_error_type
            else gettext("no answer")
        )
        text = gettext(
            "The outcome of the application for refund %(trans_no)s is not known yet "
            "(%(error)s). The app will query HSQ about it; it will not send it again."
        )
        level = messages.WARNING
    text %= words
    if refund.needs_attention:
        text += " " + attention_note(refund)
        level = max(level, messages.WARNING)
    return text, level


def attention_note(refund: Refund) -> str:
    return gettext("It needs attention: %(reason)s") % {
        "reason": refund.attention_detail or refund.get_attention_reason_display()
    }


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class RefundAdminView(TemplateResponseMixin, ContextMixin, View):
    """A page of the refund admin (``model_admin``), for a person with its ``permission``; with
    an ``object_id`` in the URL, of a refund (``self.refund``) the person may see.

    Not in a request transaction (``ATOMIC_REQUESTS``): what the page writes (a refresh's
    claim, an application's row) is committed before HSQ is asked, so that the row exists
    whatever happens next and a claim does not block every other sync while HSQ answers.
    """

    model_admin: Any = None
    #: ``has_<permission>_permission()`` of the admin says who may open the page.
    permission = "apply"
    title: Any = ""
    refund: Refund

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        model_admin = self.model_admin
        if not getattr(model_admin, f"has_{self.permission}_permission")(request):
            raise PermissionDenied
        object_id = kwargs.get("object_id")
        if object_id is not None:
            refund = model_admin.get_object(request, unquote(object_id))
            if refund is None:
                return model_admin._get_obj_does_not_exist_redirect(
                    request, model_admin.opts, object_id
                )
            if not model_admin.has_view_or_change_permission(request, refund):
                raise PermissionDenied
            self.refund = refund
        return super().dispatch(request)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        site = self.model_admin.admin_site
        self.request.current_app = site.name
        return {
            **site.each_context(self.request),
            "opts": self.model_admin.opts,
            "title": self.title,
            "media": self.model_admin.media,
            **super().get_context_data(**kwargs),
        }

    def say(self, text: str, level: int) -> None:
        self.model_admin.message_user(self.request, text, level)

    def fail(self, exc: HsqError, log: str, text: str) -> None:
        """A failure before HSQ was asked (the settings, the keys): logged with the error's
        type, said with it and the gateway's own code and message, never key material."""
        logger.warning(log, exc.kind)
        self.say(text % {"error": describe_error(exc.kind, exc.code, exc.message)}, messages.ERROR)

    def back_to_refund(self) -> HttpResponseRedirect:
        return HttpResponseRedirect(self.model_admin.refund_url("change", self.refund))


class RefreshView(RefundAdminView):
    """Query one refund (POST only; the admin site checks its CSRF token), back to its page."""

    permission = "refresh"
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        try:
            report = sync_refund(self.refund, trigger=SyncTrigger.ADMIN)
        except HsqError as exc:
            self.fail(exc, "admin refresh failed: %s", gettext("Could not refresh: %(error)s"))
        else:
            self.report(report)
        return self.back_to_refund()

    def report(self, report: SyncReport) -> None:
        """The refund's new status, or why it could not be had."""
        refund = self.refund
        if report.errors:
            self.say(describe_failures(report.errors), messages.ERROR)
            return
        if report.skipped:
            self.say(
                gettext(
                    "Refund %(trans_no)s is being queried by another sync right now; "
                    "try again in a moment."
                )
                % {"trans_no": refund.trans_no},
                messages.WARNING,
            )
            return
        refund.refresh_from_db()
        text = gettext("Refund %(trans_no)s refreshed from HSQ: %(status)s.") % {
            "trans_no": refund.trans_no,
            "status": refund.get_status_display(),
        }
        if refund.needs_attention:
            self.say(f"{text} {attention_note(refund)}", messages.WARNING)
        else:
            self.say(text, messages.SUCCESS)


class ApplyView(RefundAdminView, FormView):
    """Apply for a refund in two steps: the form, then a confirmation showing the amounts and
    what the order's refunds already take; only the confirming POST sends."""

    form_class = RefundApplyForm
    template_name = "admin/hsq_refunds/refund/apply_form.html"
    title = _("Apply for a refund")
    http_method_names = ["get", "post"]

    def form_valid(self, form: RefundApplyForm) -> HttpResponse:
        if "_edit" in self.request.POST:
            return self.form_invalid(form)
        if self.request.POST.get("_step") == "confirm":
            return self.confirmed(form)
        return self.review(form)

    def review(self, form: RefundApplyForm) -> HttpResponse:
        """The confirmation step, or the form again where the order cannot take the refund."""
        data = form.cleaned_data
        merchant_no, orig_trans_no = data["merchant_no"], data["orig_trans_no"]
        paid_given, amount = form.orig_amount_fen(), form.amount_fen()
        balance = balance_of(merchant_no, orig_trans_no)
        paid = paid_given if balance.paid is None else balance.paid
        figures = {
            "order": orig_trans_no,
            "paid": format_fen(paid),
            "given": format_fen(paid_given),
            "taken": format_fen(balance.taken),
            "asked": format_fen(amount),
        }
        if paid != paid_given:
            form.add_error(
                "orig_amount_yuan",
                gettext(
                    "Order %(order)s was paid %(paid)s as given before, not %(given)s; no "
                    "refund was applied for."
                )
                % figures,
            )
        elif balance.unknown:
            form.add_error("amount_yuan", unknown_amounts_message(orig_trans_no, balance.unknown))
        elif balance.taken + amount > paid:
            form.add_error(
                "amount_yuan",
                gettext(
                    "Order %(order)s was paid %(paid)s; %(taken)s of it is already refunded "
                    "or in flight, so %(asked)s more cannot be refunded."
                )
                % figures,
            )
        if form.errors:
            return self.form_invalid(form)
        try:
            trans_no = new_trans_no(conf.get_settings().TRANS_NO_PREFIX)
        except HsqError as exc:
            return self.failed(form, exc)
        order_refunds = Refund.objects.filter(
            merchant_no=merchant_no, orig_trans_no=orig_trans_no
        ).order_by("-applied_at", "-pk")
        shown = list(order_refunds[:ORDER_REFUNDS_SHOWN])
        context = self.get_context_data(
            title=gettext("Confirm the refund"),
            form=form,
            hidden=form.hidden_values(trans_no),
            trans_no=trans_no,
            merchant_no=merchant_no,
            orig_trans_no=orig_trans_no,
            reason=data["reason"],
            paid=figures["paid"],
            taken=figures["taken"],
            amount=figures["asked"],
            left=format_fen(paid - balance.taken - amount),
            first_for_order=balance.paid is None,
            order_refunds=[
                {
                    "trans_no": refund.trans_no,
                    "url": self.model_admin.refund_url("change", refund),
                    "amount": format_fen(refund.amount),
                    "status": self.model_admin.status_badge(refund),
                    "applied_at": refund.applied_at,
                }
                for refund in shown
            ],
            more_refunds=max(0, order_refunds.count() - len(shown))
            if len(shown) == ORDER_REFUNDS_SHOWN
            else 0,
        )
        return TemplateResponse(
            self.request, "admin/hsq_refunds/refund/apply_confirm.html", context
        )

    def confirmed(self, form: RefundApplyForm) -> HttpResponse:
        """Send the confirmed application once; its transNo makes a second POST harmless."""
        data = form.cleaned_data
        trans_no, merchant_no = data["trans_no"], data["merchant_no"]
        if not trans_no:
            form.add_error(
                None, gettext("This confirmation has no refund order number: review it again.")
            )
            return self.form_invalid(form)
        existing = Refund.objects.filter(merchant_no=merchant_no, trans_no=trans_no).first()
        if existing is not None:  # the same confirmation posted again: applied already
            return self.already_applied(form, existing)
        try:
            refund = Refund.objects.apply(
                merchant_no=merchant_no,
                trans_no=trans_no,
                orig_trans_no=data["orig_trans_no"],
                orig_amount=form.orig_amount_fen(),
                amount=form.amount_fen(),
                reason=data["reason"],
            )
        except ValueError as exc:  # RefundRefused too: nothing was written or sent
            existing = Refund.objects.filter(merchant_no=merchant_no, trans_no=trans_no).first()
            if existing is not None:  # a concurrent POST of the same confirmation won
                return self.already_applied(form, existing)
            form.add_error(None, str(exc))
            return self.form_invalid(form)
        except HsqError as exc:
            return self.failed(form, exc)
        logger.info(
            "transNo=%s merchantNo=%s applied for in the admin: application=%s",
            refund.trans_no,
            refund.merchant_no,
            refund.application,
        )
        self.say(*application_outcome(refund, again=False))
        if self.model_admin.has_view_or_change_permission(self.request, refund):
            return HttpResponseRedirect(self.model_admin.refund_url("change", refund))
        return HttpResponseRedirect(self.request.path)

    def already_applied(self, form: RefundApplyForm, refund: Refund) -> HttpResponse:
        form.add_error(
            None,
            gettext("A refund with transNo %(trans_no)s already exists.")
            % {"trans_no": refund.trans_no},
        )
        url = (
            self.model_admin.refund_url("change", refund)
            if self.model_admin.has_view_or_change_permission(self.request)
            else None
        )
        return self.render_to_response(
            self.get_context_data(form=form, existing=refund, existing_url=url)
        )

    def failed(self, form: RefundApplyForm, exc: HsqError) -> HttpResponse:
        """The settings or keys stand in the way: said with the error's type, nothing sent."""
        self.fail(
            exc,
            "admin application failed before sending: %s",
            gettext("Could not apply for the refund: %(error)s"),
        )
        return self.form_invalid(form)


class SendAgainView(RefundAdminView):
    """Send a refund's application again (same transNo), for a refund flagged because HSQ may
    never have received it: a confirmation page, then a POST that sends.

    The confirming POST carries the number of applications sent when the page was shown; if it
    changed meanwhile (a second click, another person), nothing is sent.
    """

    template_name = "admin/hsq_refunds/refund/send_again_confirm.html"
    title = _("Send the application again")
    http_method_names = ["get", "post"]

    def get(self, request: HttpRequest) -> HttpResponse:
        refund = self.refund
        if refund.attention_reason != AttentionReason.NOT_RECEIVED:
            self.say(
                gettext(
                    "Refund %(trans_no)s is not flagged as possibly not received by HSQ; its "
                    "application was not sent again."
                )
                % {"trans_no": refund.trans_no},
                messages.WARNING,
            )
            return self.back_to_refund()
        context = self.get_context_data(
            object=refund,
            amount=format_fen(refund.amount),
            orig_amount=format_fen(refund.orig_amount),
            change_url=self.model_admin.refund_url("change", refund),
        )
        return self.render_to_response(context)

    def post(self, request: HttpRequest) -> HttpResponse:
        refund = self.refund
        flagged = refund.attention_reason == AttentionReason.NOT_RECEIVED
        if not flagged or "_confirm" not in request.POST:
            return self.get(request)
        if request.POST.get("apply_attempts") != str(refund.apply_attempts):
            self.say(
                gettext(
                    "The application for refund %(trans_no)s was sent again since this page "
                    "was shown; it was not sent once more."
                )
                % {"trans_no": refund.trans_no},
                messages.WARNING,
            )
            return self.back_to_refund()
        try:
            # The count the person confirmed: of several confirmations of one page, the
            # first to count the send sends; the others are told it was sent already.
            refund = send_again(refund, confirmed_attempts=refund.apply_attempts)
        except ValueError as exc:
            self.say(str(exc), messages.ERROR)
        except HsqError as exc:
            self.fail(
                exc,
                "admin send-again failed before sending: %s",
                gettext("Could not send the application again: %(error)s"),
            )
        else:
            self.say(*application_outcome(refund, again=True))
        return self.back_to_refund()
