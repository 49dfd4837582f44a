"""The admin of refunds: the list, a refund's page with its queries, adding one by hand, the
actions."""

from __future__ import annotations

import logging
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.contrib.auth import get_permission_codename
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .. import conf, tasks
from ..choices import AttentionReason
from ..dashboard import DashboardAdminMixin
from ..export import ExportAdminMixin
from ..gateway import HsqError
from ..gateway.validation import MAX_AMOUNT_FEN
from ..models import Refund, RefundQuery, RefundQuerySet, SyncTrigger
from ..money import format_fen
from ..report import describe_error, describe_failures, error_label
from ..sync import sync_refunds
from .forms import RecentQueriesFormSet, RefundAddForm
from .views import ApplyView, RefreshView, RefundAdminView, SendAgainView

logger = logging.getLogger("hsq_refunds.admin")

#: The columns the search box looks in (by prefix, through their indexes).
SEARCHED_NUMBERS = ("trans_no", "orig_trans_no", "trade_no")


def _amount_editable(fields: Any) -> tuple[Any, ...]:
    return tuple("amount" if name == "amount_display" else name for name in fields)


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

    has_change_permission = has_delete_permission = has_add_permission

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Whoever may see a refund may see how it was queried."""
        opts = Refund._meta
        return any(
            request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
            for action in ("view", "change")
        )


@admin.register(Refund)
class RefundAdmin(DashboardAdminMixin, ExportAdminMixin, admin.ModelAdmin):
    """Refunds: the list, a refund's page with its queries, adding, refreshing and applying."""

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

    # -- URLs and permissions ------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        def page(route: str, view: type[RefundAdminView], name: str) -> URLPattern:
            own = self.admin_site.admin_view(view.as_view(model_admin=self))
            return path(route, own, name=f"{self.opts.app_label}_{self.opts.model_name}_{name}")

        # First: the default URLs end with a catch-all ``<path:object_id>/``.
        return [
            page("<path:object_id>/refresh/", RefreshView, "refresh"),
            page("apply/", ApplyView, "apply"),
            page("<path:object_id>/send-again/", SendAgainView, "send_again"),
            *super().get_urls(),
        ]

    def refund_url(self, name: str, refund: Refund | None = None) -> str:
        """The URL of this admin's page ``name`` (``changelist``, ``apply``...), of ``refund``."""
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_{name}",
            args=[] if refund is None else [quote(refund.pk)],
            current_app=self.admin_site.name,
        )

    def has_refresh_permission(self, request: HttpRequest, obj: Refund | None = None) -> bool:
        """Asking HSQ is its own permission (``hsq_refunds.refresh_refund``), apart from change."""
        codename = get_permission_codename("refresh", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def has_apply_permission(self, request: HttpRequest, obj: Refund | None = None) -> bool:
        """Applying to HSQ moves money: its own permission (``hsq_refunds.apply_refund``)."""
        codename = get_permission_codename("apply", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def has_delete_permission(self, request: HttpRequest, obj: Refund | None = None) -> bool:
        """Refunds are records of money: not deleted in the admin unless ``ALLOW_ADMIN_DELETE``
        (for development) says so. The audit rows stay protected even then."""
        parsed, _problems = conf.inspect_settings()  # a broken setting shows elsewhere
        if not parsed.ALLOW_ADMIN_DELETE:
            return False
        return super().has_delete_permission(request, obj)

    # -- list and search -----------------------------------------------------------------------

    @method_decorator(transaction.non_atomic_requests)
    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """Not in a request transaction (``ATOMIC_REQUESTS``): the refresh action's claims must
        be committed at once, or they would block every other sync while HSQ answers."""
        if self.has_apply_permission(request):
            extra_context = {**(extra_context or {}), "hsq_apply_url": self.refund_url("apply")}
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
        if change and obj is not None:
            if self.has_refresh_permission(request, obj):
                context["hsq_refresh_url"] = self.refund_url("refresh", obj)
            if obj.attention_reason == AttentionReason.NOT_RECEIVED and self.has_apply_permission(
                request
            ):
                context["hsq_send_again_url"] = self.refund_url("send_again", obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- actions -------------------------------------------------------------------------------

    @admin.action(description=_("Refresh status from HSQ"), permissions=["refresh"])
    def refresh_status(self, request: HttpRequest, queryset: QuerySet[Refund]) -> None:
        """Query the selected refunds now, or queue them when there are too many for a request."""
        try:
            limit = conf.get_settings().ADMIN_SYNC_LIMIT
            count = queryset.count()
            if count > limit:
                self._refresh_later(request, queryset, count, limit)
                return
            report = sync_refunds(queryset, trigger=SyncTrigger.ADMIN)
        except HsqError as exc:
            logger.warning("admin refresh failed: %s", exc.kind)
            error = describe_error(exc.kind, exc.code, exc.message)
            self.message_user(
                request, gettext("Could not refresh: %(error)s") % {"error": error}, messages.ERROR
            )
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
