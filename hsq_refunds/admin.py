"""The Django admin of hsq_refunds: see refunds, add one by hand, refresh their status, apply
to HSQ for new ones.

Refreshing goes through the same engine as the management command and the django-q2 task
(:func:`hsq_refunds.sync.sync_refunds`). The admin only decides how much work one web request
may do (at most ``ADMIN_SYNC_LIMIT`` refunds; more are queued on django-q2 or refused) and
turns the engine's report into messages. Gateway failures become messages naming the error
type and the gateway's own code and message: never a 500, never key material.

Applying (:meth:`RefundAdmin.apply_view`) and sending an application again
(:meth:`RefundAdmin.send_again_view`) go through :mod:`hsq_refunds.apply` and need their own
permission, ``hsq_refunds.apply_refund``. Both show what is about to be sent and send only on a
confirming POST, which carries what makes a replay harmless (the new refund's transNo; the
number of applications sent so far).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from . import conf, tasks
from .apply import balance_of, send_again, unknown_amounts_message
from .dashboard import DashboardAdminMixin
from .export import ExportAdminMixin
from .gateway import ConfigurationError, HsqError, new_trans_no
from .gateway.validation import (
    MAX_AMOUNT_FEN,
    REFUND_REASON_MAX_LENGTH,
    TRANS_NO_MAX_LENGTH,
    has_forbidden_characters,
)
from .models import (
    Application,
    AttentionReason,
    Refund,
    RefundQuery,
    RefundQuerySet,
    validate_trans_no,
)
from .money import format_fen, yuan_to_fen
from .report import SyncReport, describe_error, describe_failures, error_label
from .sync import sync_refund, sync_refunds

__all__ = ["RefundAddForm", "RefundAdmin", "RefundApplyForm", "RefundQueryInline"]

logger = logging.getLogger("hsq_refunds.admin")

#: How many of a refund's queries its page shows, newest first.
RECENT_QUERIES = 20
#: The columns the search box looks in (by prefix, through their indexes).
SEARCHED_NUMBERS = ("trans_no", "orig_trans_no", "trade_no")
#: How many of an order's refunds the confirmation of a new one lists, newest first.
ORDER_REFUNDS_SHOWN = 50


def _offer_merchants(
    form: forms.BaseForm, *, first_when_several: bool
) -> ConfigurationError | None:
    """Fill the form's ``merchant_no`` choices with the configured merchants; returns the
    setting's error, said once by the form's ``clean()`` rather than as "select a valid
    choice"."""
    field = cast(forms.ChoiceField, form.fields["merchant_no"])
    try:
        merchants = conf.merchant_numbers()
    except ConfigurationError as exc:
        field.required = False
        field.choices = []
        return exc
    choices = [(number, number) for number in merchants]
    default = conf.default_merchant_no() or (
        merchants[0] if first_when_several and merchants else None
    )
    field.choices = choices if default or not merchants else [("", "---------"), *choices]
    field.initial = default if merchants else None
    if not merchants:
        field.help_text = _("No merchant is configured in the HSQ_REFUNDS setting.")
    return None


def _amount_editable(fields: Any) -> tuple[Any, ...]:
    return tuple("amount" if name == "amount_display" else name for name in fields)


def _printable(value: str, message: str) -> str:
    """``value``, or a form error with ``message`` when it holds control characters."""
    if has_forbidden_characters(value):
        raise forms.ValidationError(message, code="control_characters")
    return value


def _refuse_broken_settings(error: ConfigurationError | None) -> None:
    if error is not None:
        raise forms.ValidationError(
            gettext("The HSQ_REFUNDS setting is invalid: %(error)s (see manage.py check).")
            % {"error": error}
        )


class RefundAddForm(forms.ModelForm):
    """Start tracking a refund applied for elsewhere: its transNo and merchant are enough.

    The amount is typed in yuan and stored in fen, converted exactly with :class:`Decimal`.
    Everything else comes from HSQ with the first query.
    """

    merchant_no = forms.ChoiceField(label=_("merchant number"))
    amount_yuan = forms.DecimalField(
        label=_("amount (yuan)"),
        required=False,
        min_value=Decimal("0.01"),
        # The gateway's bound (MAX_AMOUNT_FEN), refused by the field before any arithmetic.
        max_value=Decimal(MAX_AMOUNT_FEN).scaleb(-2),
        max_digits=len(str(MAX_AMOUNT_FEN)),
        decimal_places=2,
        error_messages={
            "max_value": _("The amount is too large."),
            "max_whole_digits": _("The amount is too large."),
            "max_digits": _(
                "The amount has too many digits: enter it in yuan, with at most two decimals."
            ),
        },
        help_text=_("Optional: the amount expected, e.g. 12.34. Taken from HSQ when empty."),
    )

    class Meta:
        model = Refund
        fields = ("trans_no", "merchant_no", "orig_trans_no")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings_error = _offer_merchants(self, first_when_several=True)

    def clean_amount_yuan(self) -> Decimal | None:
        amount: Decimal | None = self.cleaned_data.get("amount_yuan")
        if amount is not None:
            self._typed_fen(self, "amount_yuan")
        return amount

    def clean(self) -> dict[str, Any]:
        _refuse_broken_settings(self.settings_error)
        return super().clean() or {}

    def amount_fen(self) -> int | None:
        """The amount typed, in fen (``None`` when left empty)."""
        amount = self.cleaned_data.get("amount_yuan")
        return None if amount is None else yuan_to_fen(amount)

    @staticmethod
    def _typed_fen(form: forms.BaseForm, name: str) -> int:
        """The amount typed in ``form``'s field ``name`` (already a valid ``DecimalField``), in
        fen; a form error on the field when :func:`~hsq_refunds.money.yuan_to_fen` refuses it.

        Converted from the text as typed, not from the field's :class:`Decimal`: Django reads
        full-width ``１２`` or ``1_000`` as numbers, and a person typing money should see it
        read only as written. Shared with :class:`RefundApplyForm`.
        """
        typed = form[name].data
        try:
            return yuan_to_fen(typed if isinstance(typed, str) else form.cleaned_data[name])
        except ValueError as exc:
            code = getattr(exc, "code", "invalid")
            problems = {
                "digits": gettext("Enter the amount with the digits 0-9."),
                "decimals": gettext("Enter the amount in yuan with at most two decimals."),
                "too_large": gettext("The amount is too large."),
            }
            message = problems.get(code, form.fields[name].error_messages["invalid"])
            raise forms.ValidationError(message, code=code) from None


class RefundApplyForm(forms.Form):
    """Apply to HSQ for a refund of a paid order: the amounts typed in yuan, sent in fen.

    The amounts are converted exactly (:class:`Decimal`, :func:`~hsq_refunds.money.yuan_to_fen`).
    ``trans_no`` is the new refund's own order number: empty on the form, generated for the
    confirmation step and carried in it as a hidden field, so that posting one confirmation
    twice cannot apply twice.
    """

    # The amounts' bounds, refused by the fields before any arithmetic: two decimals, the
    # gateway's largest amount (MAX_AMOUNT_FEN); above zero is checked by _yuan().
    _yuan_bounds: dict[str, Any] = {
        "max_value": Decimal(MAX_AMOUNT_FEN).scaleb(-2),
        "max_digits": len(str(MAX_AMOUNT_FEN)),
        "decimal_places": 2,
        "error_messages": {
            "max_value": _("The amount is too large."),
            "max_whole_digits": _("The amount is too large."),
            "max_digits": _(
                "The amount has too many digits: enter it in yuan, with at most two decimals."
            ),
            "max_decimal_places": _("Enter the amount in yuan with at most two decimals."),
        },
    }

    merchant_no = forms.ChoiceField(label=_("merchant number"))
    orig_trans_no = forms.CharField(
        label=_("original order number"),
        max_length=TRANS_NO_MAX_LENGTH,
        help_text=_("The merchant order number of the payment to refund."),
    )
    orig_amount_yuan = forms.DecimalField(
        label=_("paid amount (yuan)"),
        help_text=_("What the customer paid for that order, e.g. 50.00."),
        **_yuan_bounds,
    )
    amount_yuan = forms.DecimalField(
        label=_("refund amount (yuan)"),
        help_text=_("What to refund now: all of the paid amount or a part of it, e.g. 12.34."),
        **_yuan_bounds,
    )
    reason = forms.CharField(
        label=_("refund reason"),
        required=False,
        max_length=REFUND_REASON_MAX_LENGTH,
        help_text=_("Optional: sent to HSQ with the application."),
    )
    trans_no = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Money moves: with several merchants, a person picks one.
        self.settings_error = _offer_merchants(self, first_when_several=False)

    def clean_orig_trans_no(self) -> str:
        return _printable(
            self.cleaned_data["orig_trans_no"],
            gettext("The order number cannot contain control characters."),
        )

    def clean_orig_amount_yuan(self) -> Decimal:
        return self._yuan("orig_amount_yuan")

    def clean_amount_yuan(self) -> Decimal:
        return self._yuan("amount_yuan")

    def clean_reason(self) -> str:
        return _printable(
            self.cleaned_data["reason"],
            gettext("The reason cannot contain control characters such as line breaks."),
        )

    def clean_trans_no(self) -> str:
        value = self.cleaned_data["trans_no"]
        if value:
            try:
                validate_trans_no(value)
            except ValueError as exc:
                raise forms.ValidationError(str(exc), code="invalid_trans_no") from None
        return value

    def clean(self) -> dict[str, Any]:
        _refuse_broken_settings(self.settings_error)
        cleaned = super().clean() or {}
        paid, amount = cleaned.get("orig_amount_yuan"), cleaned.get("amount_yuan")
        if paid is not None and amount is not None and amount > paid:
            self.add_error(
                "amount_yuan",
                forms.ValidationError(
                    gettext("The refund amount cannot be more than the paid amount."),
                    code="above_paid",
                ),
            )
        return cleaned

    def _yuan(self, name: str) -> Decimal:
        """An amount in yuan that is a whole number of fen, above zero, not absurdly large: the
        field's bounds, then :func:`~hsq_refunds.money.yuan_to_fen` on the text as typed."""
        amount: Decimal = self.cleaned_data[name]
        if amount <= 0:
            raise forms.ValidationError(gettext("Enter an amount above zero."), code="not_positive")
        RefundAddForm._typed_fen(self, name)
        return amount

    def orig_amount_fen(self) -> int:
        """The paid amount typed, in fen."""
        return yuan_to_fen(self.cleaned_data["orig_amount_yuan"])

    def amount_fen(self) -> int:
        """The refund amount typed, in fen."""
        return yuan_to_fen(self.cleaned_data["amount_yuan"])

    def hidden_values(self, trans_no: str) -> dict[str, str]:
        """What the confirmation step posts back, as typed (cleaned), with ``trans_no``."""
        data = self.cleaned_data
        return {
            "merchant_no": data["merchant_no"],
            "orig_trans_no": data["orig_trans_no"],
            "orig_amount_yuan": str(data["orig_amount_yuan"]),
            "amount_yuan": str(data["amount_yuan"]),
            "reason": data["reason"],
            "trans_no": trans_no,
        }


class RecentQueriesFormSet(forms.BaseInlineFormSet):
    """A refund's queries, newest first, limited to the most recent ``RECENT_QUERIES``."""

    def get_queryset(self) -> QuerySet[RefundQuery]:
        if not hasattr(self, "_recent"):
            self._recent = super().get_queryset().order_by("-queried_at", "-pk")[:RECENT_QUERIES]
        return self._recent


class RefundQueryInline(admin.TabularInline):
    """The recent queries of a refund, read-only: they are its audit trail."""

    model = RefundQuery
    formset = RecentQueriesFormSet
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = _("recent queries (newest first)")
    fields = (
        "queried_at",
        "outcome",
        "status_seen",
        "resp_code",
        "error_type_display",
        "error_code",
        "error_message",
        "duration_ms",
    )
    readonly_fields = fields

    @admin.display(description=_("error type"))
    def error_type_display(self, query: RefundQuery) -> str:
        return error_label(query.error_type) if query.error_type else "-"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Whoever may see a refund may see how it was queried."""
        opts = Refund._meta
        return any(
            request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
            for action in ("view", "change")
        )


@admin.register(Refund)
class RefundAdmin(DashboardAdminMixin, ExportAdminMixin, admin.ModelAdmin):
    """Refunds: the list, a refund's page with its queries, adding and refreshing."""

    list_display = (
        "trans_no",
        "orig_trans_no",
        "amount_display",
        "status_badge",
        "finished_at",
        "last_queried_at",
        "next_query_at",
        "attention_display",
        "merchant_no",
    )
    list_filter = ("status", "merchant_no", "needs_attention", "applied_at")
    search_fields = ("^trans_no", "^orig_trans_no", "^trade_no")
    search_help_text = _("Refund order number, original order number or HSQ trade number.")
    list_per_page = 50
    show_full_result_count = False
    actions = ("refresh_status", "clear_attention", "export_csv")
    inlines = (RefundQueryInline,)

    #: What a person may edit on a tracked refund; everything else comes from HSQ.
    editable_fields = ("needs_attention",)

    fieldsets = (
        (
            None,
            {
                "fields": (
                    "trans_no",
                    "merchant_no",
                    "orig_trans_no",
                    "trade_no",
                    "amount_display",
                    "reported_amount_display",
                    "status_badge",
                    "finished_at",
                    "resp_code",
                    "resp_msg",
                    "extend",
                    "applied_at",
                )
            },
        ),
        (
            _("Attention"),
            {"fields": ("needs_attention", "attention_reason", "attention_detail")},
        ),
        (
            _("Application"),
            {"fields": ("application", "orig_amount_display", "reason", "apply_attempts")},
        ),
        (
            _("Queries"),
            {
                "fields": (
                    "last_queried_at",
                    "next_query_at",
                    "query_count",
                    "error_count",
                    "last_error_display",
                    "created_at",
                    "updated_at",
                )
            },
        ),
        (
            _("Verified results"),
            {"fields": ("last_result", "final_result", "final_sign"), "classes": ("collapse",)},
        ),
    )
    add_fieldsets = (
        (None, {"fields": ("trans_no", "merchant_no", "orig_trans_no", "amount_yuan")}),
    )

    class Media:
        css = {"all": ("hsq_refunds/admin.css",)}

    # -- list, search and deletion --------------------------------------------------------------

    @method_decorator(transaction.non_atomic_requests)
    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """Not in a request transaction (``ATOMIC_REQUESTS``): the refresh action's claims must
        be committed at once, or they would block every other sync while HSQ answers."""
        if self.has_apply_permission(request):
            extra_context = {
                **(extra_context or {}),
                "hsq_apply_url": reverse(
                    f"admin:{self.opts.app_label}_{self.opts.model_name}_apply",
                    current_app=self.admin_site.name,
                ),
            }
        return super().changelist_view(request, extra_context)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Refund], search_term: str
    ) -> tuple[QuerySet[Refund], bool]:
        """Each word a prefix of a refund's, original order's or HSQ's number, as typed or in
        capitals: ``LIKE 'x%'`` on the columns themselves, which their indexes serve (a
        case-insensitive ``UPPER(...) LIKE`` would read every row)."""
        for term in search_term.split():
            spellings = dict.fromkeys((term, term.upper()))
            match = Q()
            for name in SEARCHED_NUMBERS:
                for spelling in spellings:
                    match |= Q(**{f"{name}__startswith": spelling})
            queryset = queryset.filter(match)
        return queryset, False

    def has_delete_permission(self, request: HttpRequest, obj: Refund | None = None) -> bool:
        """Refunds are records of money: not deleted in the admin unless ``ALLOW_ADMIN_DELETE``
        (for development) says so. The audit rows stay protected even then."""
        parsed, _problems = conf.inspect_settings()  # a broken setting shows elsewhere
        if not parsed.ALLOW_ADMIN_DELETE:
            return False
        return super().has_delete_permission(request, obj)

    # -- display ------------------------------------------------------------------------------

    @admin.display(description=_("amount"), ordering="amount")
    def amount_display(self, refund: Refund) -> str:
        return format_fen(refund.amount)

    @admin.display(description=_("amount reported by HSQ"))
    def reported_amount_display(self, refund: Refund) -> str:
        return format_fen(refund.reported_amount)

    @admin.display(description=_("paid amount of the original order"))
    def orig_amount_display(self, refund: Refund) -> str:
        return format_fen(refund.orig_amount)

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, refund: Refund) -> SafeString:
        return format_html(
            '<span class="hsq-status hsq-status-{}">{}</span>',
            refund.status.lower(),
            refund.get_status_display(),
        )

    @admin.display(description=_("needs attention"), ordering="needs_attention")
    def attention_display(self, refund: Refund) -> SafeString | str:
        """The reason a refund waits for a person; nothing for the others."""
        if not refund.needs_attention:
            return ""
        return format_html(
            '<span class="hsq-attention" title="{}">{}</span>',
            refund.attention_detail,
            refund.get_attention_reason_display() or gettext("Yes"),
        )

    @admin.display(description=_("last error"))
    def last_error_display(self, refund: Refund) -> str:
        if not refund.last_error_type:
            return "-"
        return describe_error(
            refund.last_error_type, refund.last_error_code, refund.last_error_message
        )

    # -- forms ---------------------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: Refund | None = None) -> Any:
        if obj is None:
            return self.add_fieldsets
        fieldsets = super().get_fieldsets(request, obj)
        if obj.amount is None:
            # Not known yet (tracked without one, HSQ has not reported it): a person may enter
            # it, so that the order's balance can be known.
            fieldsets = [
                (title, {**options, "fields": _amount_editable(options["fields"])})
                for title, options in fieldsets
            ]
        return fieldsets

    def get_form(
        self, request: HttpRequest, obj: Refund | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = RefundAddForm
            kwargs["fields"] = None
        return super().get_form(request, obj, change=change, **kwargs)

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "amount":  # entered by hand when unknown: fen, within HSQ's bounds
            kwargs.update(min_value=0, max_value=MAX_AMOUNT_FEN)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_readonly_fields(
        self, request: HttpRequest, obj: Refund | None = None
    ) -> list[str] | tuple[str, ...]:
        if obj is None:
            return ()
        shown = [str(name) for _title, options in self.fieldsets for name in options["fields"]]
        editable = (*self.editable_fields, "amount") if obj.amount is None else self.editable_fields
        return [name for name in shown if name not in editable]

    def get_inlines(self, request: HttpRequest, obj: Refund | None) -> Any:
        return self.inlines if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Refund, form: Any, change: bool) -> None:
        if change:
            self._save_edits(obj, form)
            return
        tracked = Refund.objects.track(
            form.cleaned_data["trans_no"],
            merchant_no=form.cleaned_data["merchant_no"],
            orig_trans_no=form.cleaned_data["orig_trans_no"] or None,
            amount=form.amount_fen(),
        )
        obj.pk = tracked.pk
        obj.refresh_from_db()
        logger.info("transNo=%s merchantNo=%s added in the admin", obj.trans_no, obj.merchant_no)

    @staticmethod
    def _save_edits(refund: Refund, form: Any) -> None:
        """Write only what a person may edit, so a sync running meanwhile keeps what it wrote.

        An amount entered for a refund that had none is written only if it still has none (HSQ
        may have reported one meanwhile: HSQ's is kept)."""
        amount = form.cleaned_data.get("amount") if "amount" in form.changed_data else None
        if amount is not None:
            Refund.objects.filter(pk=refund.pk, amount__isnull=True).update(
                amount=amount, version=F("version") + 1, updated_at=timezone.now()
            )
        fields = ["needs_attention", "updated_at"]
        if not refund.needs_attention:
            refund.attention_reason = ""
            refund.attention_detail = ""
            fields += ["attention_reason", "attention_detail"]
        refund.save(update_fields=fields)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Refund | None = None,
    ) -> HttpResponse:
        if change and obj is not None and self.has_refresh_permission(request, obj):
            context["hsq_refresh_url"] = reverse(
                "admin:hsq_refunds_refund_refresh",
                args=[quote(obj.pk)],
                current_app=self.admin_site.name,
            )
        if (
            change
            and obj is not None
            and obj.attention_reason == AttentionReason.NOT_RECEIVED
            and self.has_apply_permission(request)
        ):
            context["hsq_send_again_url"] = reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_send_again",
                args=[quote(obj.pk)],
                current_app=self.admin_site.name,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- actions -------------------------------------------------------------------------------

    def has_refresh_permission(self, request: HttpRequest, obj: Refund | None = None) -> bool:
        """Asking HSQ is its own permission (``hsq_refunds.refresh_refund``), apart from change."""
        codename = get_permission_codename("refresh", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    @admin.action(description=_("Refresh status from HSQ"), permissions=["refresh"])
    def refresh_status(self, request: HttpRequest, queryset: QuerySet[Refund]) -> None:
        """Query the selected refunds now, or queue them when there are too many for a request."""
        try:
            limit = conf.get_settings().ADMIN_SYNC_LIMIT
            count = queryset.count()
            if count > limit:
                self._refresh_later(request, queryset, count, limit)
                return
            report = sync_refunds(queryset)
        except HsqError as exc:
            self._report_exception(request, exc)
            return
        self.message_user(
            request, report.summary(), messages.SUCCESS if report.ok else messages.WARNING
        )
        if report.errors:
            self.message_user(request, describe_failures(report.errors), messages.ERROR)

    @admin.action(
        description=_("Mark as handled (clear “needs attention”)"), permissions=["change"]
    )
    def clear_attention(self, request: HttpRequest, queryset: QuerySet[Refund]) -> None:
        cleared = cast(RefundQuerySet, queryset).clear_attention()
        self.message_user(
            request,
            ngettext(
                "%(count)d refund no longer needs attention.",
                "%(count)d refunds no longer need attention.",
                cleared,
            )
            % {"count": cleared},
            messages.SUCCESS,
        )

    def _refresh_later(
        self, request: HttpRequest, queryset: QuerySet[Refund], count: int, limit: int
    ) -> None:
        """Too many for one request: queue them on django-q2, or say how else to do it."""
        if not tasks.cluster_configured():
            message = ngettext(
                "%(count)d refund selected, but the admin refreshes at most %(limit)d at once "
                "and no django-q2 cluster is configured to do it in the background. Select "
                "fewer, or run “manage.py sync_refunds” on the server.",
                "%(count)d refunds selected, but the admin refreshes at most %(limit)d at once "
                "and no django-q2 cluster is configured to do it in the background. Select "
                "fewer, or run “manage.py sync_refunds” on the server.",
                count,
            ) % {"count": count, "limit": limit}
            self.message_user(request, message, messages.WARNING)
            return
        from django.db.models import F

        # Least recently queried first: above CYCLE_LIMIT, the same action run again later
        # takes the refunds this one left out.
        ordered = queryset.order_by(F("last_queried_at").asc(nulls_first=True), "pk")
        queued = tasks.queue_refresh(list(ordered.values_list("pk", flat=True)))
        taken = len(queued.queued)
        logger.info(
            "admin queued a refresh of %d refunds: task group %s (%d left out)",
            taken,
            queued.group,
            len(queued.left),
        )
        message = ngettext(
            "%(count)d refund is queued for a refresh in the background (task group "
            "%(group)s). Reload this page in a while to see the result.",
            "%(count)d refunds are queued for a refresh in the background (task group "
            "%(group)s). Reload this page in a while to see the results.",
            taken,
        ) % {"count": taken, "group": queued.group}
        self.message_user(request, message, messages.INFO)
        if queued.left:
            left = ngettext(
                "%(left)d more selected refund was left for later: one background refresh "
                "queues at most %(limit)d refunds. Run this action again on the same selection "
                "once these are done; it takes the refunds queried least recently first.",
                "%(left)d more selected refunds were left for later: one background refresh "
                "queues at most %(limit)d refunds. Run this action again on the same selection "
                "once these are done; it takes the refunds queried least recently first.",
                len(queued.left),
            ) % {"left": len(queued.left), "limit": taken}
            self.message_user(request, left, messages.WARNING)

    def _report_exception(self, request: HttpRequest, exc: HsqError) -> None:
        """A failure of the whole run (the settings): the engine raises it instead of reporting."""
        logger.warning("admin refresh failed: %s", exc.kind)
        self.message_user(
            request,
            gettext("Could not refresh: %(error)s")
            % {"error": describe_error(exc.kind, exc.code, exc.message)},
            messages.ERROR,
        )

    # -- the "Refresh status" button -----------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        refresh = path(
            "<path:object_id>/refresh/",
            self.admin_site.admin_view(self.refresh_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_refresh",
        )
        apply = path(
            "apply/",
            self.admin_site.admin_view(self.apply_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_apply",
        )
        again = path(
            "<path:object_id>/send-again/",
            self.admin_site.admin_view(self.send_again_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_send_again",
        )
        # First: the default URLs end with a catch-all ``<path:object_id>/``.
        return [refresh, apply, again, *super().get_urls()]

    def _refund_of_view(
        self, request: HttpRequest, object_id: str, *, methods: tuple[str, ...]
    ) -> Refund | HttpResponse:
        """The refund a refund's own view acts on, once the person may see it and the method
        is one of ``methods``; otherwise the answer to give (the admin's redirect for a refund
        that does not exist, 405) or ``PermissionDenied``."""
        refund = self.get_object(request, unquote(object_id))
        if refund is None:
            return self._get_obj_does_not_exist_redirect(  # type: ignore[attr-defined]
                request, self.opts, object_id
            )
        if not self.has_view_or_change_permission(request, refund):
            raise PermissionDenied
        if request.method not in methods:
            return HttpResponseNotAllowed(list(methods))
        return refund

    @method_decorator(transaction.non_atomic_requests)
    def refresh_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Query one refund (POST only; the admin site checks its CSRF token), back to its page."""
        if not self.has_refresh_permission(request):
            raise PermissionDenied
        refund = self._refund_of_view(request, object_id, methods=("POST",))
        if isinstance(refund, HttpResponse):
            return refund
        try:
            report = sync_refund(refund)
        except HsqError as exc:
            self._report_exception(request, exc)
        else:
            self._report_one(request, refund, report)
        url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[quote(refund.pk)],
            current_app=self.admin_site.name,
        )
        return HttpResponseRedirect(url)

    def _report_one(self, request: HttpRequest, refund: Refund, report: SyncReport) -> None:
        """The refund's new status, or why it could not be had."""
        if report.errors:
            self.message_user(request, describe_failures(report.errors), messages.ERROR)
            return
        if report.skipped:
            self.message_user(
                request,
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
            text += " " + gettext("It needs attention: %(reason)s") % {
                "reason": refund.attention_detail or refund.get_attention_reason_display()
            }
            self.message_user(request, text, messages.WARNING)
        else:
            self.message_user(request, text, messages.SUCCESS)

    # -- applying for a refund, and sending an application again -------------------------------

    def has_apply_permission(self, request: HttpRequest, obj: Refund | None = None) -> bool:
        """Applying to HSQ moves money: its own permission (``hsq_refunds.apply_refund``)."""
        codename = get_permission_codename("apply", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    @method_decorator(transaction.non_atomic_requests)
    def apply_view(self, request: HttpRequest) -> HttpResponse:
        """Apply for a refund in two steps: the form, then a confirmation showing the amounts and
        what the order's refunds already take; only the confirming POST sends.

        Not in a request transaction (``ATOMIC_REQUESTS``): the application service commits the
        refund's row before it sends, so that the row exists whatever happens next.
        """
        if not self.has_apply_permission(request):
            raise PermissionDenied
        if request.method == "GET":
            return self._render_apply_form(request, RefundApplyForm())
        if request.method != "POST":
            return HttpResponseNotAllowed(["GET", "POST"])
        form = RefundApplyForm(request.POST)
        if not form.is_valid() or "_edit" in request.POST:
            return self._render_apply_form(request, form)
        if request.POST.get("_step") == "confirm":
            return self._apply_confirmed(request, form)
        return self._review_application(request, form)

    def _review_application(self, request: HttpRequest, form: RefundApplyForm) -> HttpResponse:
        """The confirmation step, or the form again where the order cannot take the refund."""
        data = form.cleaned_data
        merchant_no, orig_trans_no = data["merchant_no"], data["orig_trans_no"]
        paid_given, amount = form.orig_amount_fen(), form.amount_fen()
        balance = balance_of(merchant_no, orig_trans_no)
        paid = paid_given if balance.paid is None else balance.paid
        if paid != paid_given:
            form.add_error(
                "orig_amount_yuan",
                gettext(
                    "Order %(order)s was paid %(paid)s as given before, not %(given)s; no "
                    "refund was applied for."
                )
                % {
                    "order": orig_trans_no,
                    "paid": format_fen(paid),
                    "given": format_fen(paid_given),
                },
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
                % {
                    "order": orig_trans_no,
                    "paid": format_fen(paid),
                    "taken": format_fen(balance.taken),
                    "asked": format_fen(amount),
                },
            )
        if form.errors:
            return self._render_apply_form(request, form)
        try:
            trans_no = new_trans_no(conf.get_settings().TRANS_NO_PREFIX)
        except HsqError as exc:
            self._report_apply_exception(request, exc)
            return self._render_apply_form(request, form)
        order_refunds = Refund.objects.filter(
            merchant_no=merchant_no, orig_trans_no=orig_trans_no
        ).order_by("-applied_at", "-pk")
        shown = list(order_refunds[:ORDER_REFUNDS_SHOWN])
        context = {
            **self._apply_context(request, gettext("Confirm the refund")),
            "form": form,
            "hidden": form.hidden_values(trans_no),
            "trans_no": trans_no,
            "merchant_no": merchant_no,
            "orig_trans_no": orig_trans_no,
            "reason": data["reason"],
            "paid": format_fen(paid),
            "taken": format_fen(balance.taken),
            "amount": format_fen(amount),
            "left": format_fen(paid - balance.taken - amount),
            "first_for_order": balance.paid is None,
            "order_refunds": [
                {
                    "trans_no": refund.trans_no,
                    "url": self._change_url(refund),
                    "amount": format_fen(refund.amount),
                    "status": self.status_badge(refund),
                    "applied_at": refund.applied_at,
                }
                for refund in shown
            ],
            "more_refunds": max(0, order_refunds.count() - len(shown))
            if len(shown) == ORDER_REFUNDS_SHOWN
            else 0,
        }
        return TemplateResponse(request, "admin/hsq_refunds/refund/apply_confirm.html", context)

    def _apply_confirmed(self, request: HttpRequest, form: RefundApplyForm) -> HttpResponse:
        """Send the confirmed application once; its transNo makes a second POST harmless."""
        data = form.cleaned_data
        trans_no, merchant_no = data["trans_no"], data["merchant_no"]
        if not trans_no:
            form.add_error(
                None, gettext("This confirmation has no refund order number: review it again.")
            )
            return self._render_apply_form(request, form)
        existing = Refund.objects.filter(merchant_no=merchant_no, trans_no=trans_no).first()
        if existing is not None:  # the same confirmation posted again: applied already
            return self._already_applied(request, form, existing)
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
                return self._already_applied(request, form, existing)
            form.add_error(None, str(exc))
            return self._render_apply_form(request, form)
        except HsqError as exc:
            self._report_apply_exception(request, exc)
            return self._render_apply_form(request, form)
        logger.info(
            "transNo=%s merchantNo=%s applied for in the admin: application=%s",
            refund.trans_no,
            refund.merchant_no,
            refund.application,
        )
        level, text = self._application_outcome(refund, again=False)
        self.message_user(request, text, level)
        if self.has_view_or_change_permission(request, refund):
            return HttpResponseRedirect(self._change_url(refund))
        return HttpResponseRedirect(request.path)

    def _already_applied(
        self, request: HttpRequest, form: RefundApplyForm, refund: Refund
    ) -> HttpResponse:
        form.add_error(
            None,
            gettext("A refund with transNo %(trans_no)s already exists.")
            % {"trans_no": refund.trans_no},
        )
        url = self._change_url(refund) if self.has_view_or_change_permission(request) else None
        return self._render_apply_form(request, form, existing=refund, existing_url=url)

    def _render_apply_form(
        self, request: HttpRequest, form: RefundApplyForm, **extra: Any
    ) -> TemplateResponse:
        context = {
            **self._apply_context(request, gettext("Apply for a refund")),
            "form": form,
            **extra,
        }
        return TemplateResponse(request, "admin/hsq_refunds/refund/apply_form.html", context)

    def _apply_context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        request.current_app = self.admin_site.name
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "media": self.media,
        }

    def _report_apply_exception(self, request: HttpRequest, exc: HsqError) -> None:
        """The settings or keys stand in the way: said with the error's type, nothing sent."""
        logger.warning("admin application failed before sending: %s", exc.kind)
        self.message_user(
            request,
            gettext("Could not apply for the refund: %(error)s")
            % {"error": describe_error(exc.kind, exc.code, exc.message)},
            messages.ERROR,
        )

    def _application_outcome(self, refund: Refund, *, again: bool) -> tuple[int, str]:
        """The message level and text of what HSQ made of an application."""
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
            text %= words
        elif refund.application == Application.QUEUED:
            text = (
                gettext(
                    "Refund %(trans_no)s is written; its application is sent to HSQ when the "
                    "transaction commits."
                )
                % words
            )
            level = messages.INFO
        elif refund.application == Application.REFUSED:
            text = (
                gettext(
                    "HSQ refused the application for refund %(trans_no)s: code %(code)s, "
                    "“%(message)s”. The refund failed; it takes nothing of the order's "
                    "paid amount."
                )
                % words
            )
            level = messages.ERROR
        else:
            error = (
                describe_error(
                    refund.last_error_type, refund.last_error_code, refund.last_error_message
                )
                if refund.last_error_type
                else gettext("no answer")
            )
            text = gettext(
                "The outcome of the application for refund %(trans_no)s is not known yet "
                "(%(error)s). The app will query HSQ about it; it will not send it again."
            ) % {"trans_no": refund.trans_no, "error": error}
            level = messages.WARNING
        if refund.needs_attention:
            text += " " + gettext("It needs attention: %(reason)s") % {
                "reason": refund.attention_detail or refund.get_attention_reason_display()
            }
            level = max(level, messages.WARNING)
        return level, text

    @method_decorator(transaction.non_atomic_requests)
    def send_again_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Send a refund's application again (same transNo), for a refund flagged because HSQ
        may never have received it: a confirmation page, then a POST that sends.

        The confirming POST carries the number of applications sent when the page was shown;
        if it changed meanwhile (a second click, another person), nothing is sent.
        """
        if not self.has_apply_permission(request):
            raise PermissionDenied
        refund = self._refund_of_view(request, object_id, methods=("GET", "POST"))
        if isinstance(refund, HttpResponse):
            return refund
        back = HttpResponseRedirect(self._change_url(refund))
        if refund.attention_reason != AttentionReason.NOT_RECEIVED:
            self.message_user(
                request,
                gettext(
                    "Refund %(trans_no)s is not flagged as possibly not received by HSQ; its "
                    "application was not sent again."
                )
                % {"trans_no": refund.trans_no},
                messages.WARNING,
            )
            return back
        if request.method == "GET" or "_confirm" not in request.POST:
            return self._render_send_again(request, refund)
        if request.POST.get("apply_attempts") != str(refund.apply_attempts):
            self.message_user(
                request,
                gettext(
                    "The application for refund %(trans_no)s was sent again since this page "
                    "was shown; it was not sent once more."
                )
                % {"trans_no": refund.trans_no},
                messages.WARNING,
            )
            return back
        try:
            # The count the person confirmed: of several confirmations of one page, the
            # first to count the send sends; the others are told it was sent already.
            refund = send_again(refund, confirmed_attempts=refund.apply_attempts)
        except ValueError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        except HsqError as exc:
            logger.warning("admin send-again failed before sending: %s", exc.kind)
            self.message_user(
                request,
                gettext("Could not send the application again: %(error)s")
                % {"error": describe_error(exc.kind, exc.code, exc.message)},
                messages.ERROR,
            )
        else:
            level, text = self._application_outcome(refund, again=True)
            self.message_user(request, text, level)
        return back

    def _render_send_again(self, request: HttpRequest, refund: Refund) -> TemplateResponse:
        context = {
            **self._apply_context(request, gettext("Send the application again")),
            "object": refund,
            "amount": format_fen(refund.amount),
            "orig_amount": format_fen(refund.orig_amount),
            "change_url": self._change_url(refund),
        }
        return TemplateResponse(
            request, "admin/hsq_refunds/refund/send_again_confirm.html", context
        )

    def _change_url(self, refund: Refund) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[quote(refund.pk)],
            current_app=self.admin_site.name,
        )
