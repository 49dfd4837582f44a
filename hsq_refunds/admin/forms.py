"""The forms of the refund admin: adding a refund to track, applying for one, a refund's
recent queries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from django import forms
from django.db.models import QuerySet
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import conf
from ..gateway import ConfigurationError
from ..gateway.validation import (
    MAX_AMOUNT_FEN,
    REFUND_REASON_MAX_LENGTH,
    TRANS_NO_MAX_LENGTH,
    has_forbidden_characters,
)
from ..models import Refund, RefundQuery, validate_trans_no
from ..money import yuan_to_fen

#: How many of a refund's queries its page shows, newest first.
RECENT_QUERIES = 20

#: The bounds of an amount typed in yuan, refused by the field before any arithmetic: two
#: decimals, the gateway's largest amount (``MAX_AMOUNT_FEN``).
_YUAN_BOUNDS: dict[str, Any] = {
    "max_value": Decimal(MAX_AMOUNT_FEN).scaleb(-2),
    "max_digits": len(str(MAX_AMOUNT_FEN)),
    "decimal_places": 2,
}
_TOO_LARGE = {
    "max_value": _("The amount is too large."),
    "max_whole_digits": _("The amount is too large."),
    "max_digits": _("The amount has too many digits: enter it in yuan, with at most two decimals."),
}


def typed_fen(form: forms.BaseForm, name: str) -> int:
    """The amount typed in ``form``'s field ``name`` (already a valid ``DecimalField``), in fen;
    a form error on the field when :func:`~hsq_refunds.money.yuan_to_fen` refuses it.

    Converted from the text as typed, not from the field's :class:`Decimal`: Django reads
    full-width ``１２`` or ``1_000`` as numbers, and a person typing money should see it read
    only as written.
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


def _printable(value: str, message: str) -> str:
    """``value``, or a form error with ``message`` when it holds control characters."""
    if has_forbidden_characters(value):
        raise forms.ValidationError(message, code="control_characters")
    return value


class MerchantForm(forms.BaseForm):
    """A form whose ``merchant_no`` choices are the configured merchants. A broken setting is
    said once by ``clean()`` rather than as "select a valid choice"."""

    #: Whether the first of several merchants is chosen when no default is configured.
    first_when_several = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = cast(forms.ChoiceField, self.fields["merchant_no"])
        self.settings_error: ConfigurationError | None = None
        try:
            merchants = conf.merchant_numbers()
        except ConfigurationError as exc:
            field.required = False
            field.choices = []
            self.settings_error = exc
            return
        choices = [(number, number) for number in merchants]
        default = conf.default_merchant_no() or (
            merchants[0] if self.first_when_several and merchants else None
        )
        field.choices = choices if default or not merchants else [("", "---------"), *choices]
        field.initial = default if merchants else None
        if not merchants:
            field.help_text = _("No merchant is configured in the HSQ_REFUNDS setting.")

    def clean(self) -> dict[str, Any]:
        if self.settings_error is not None:
            raise forms.ValidationError(
                gettext("The HSQ_REFUNDS setting is invalid: %(error)s (see manage.py check).")
                % {"error": self.settings_error}
            )
        return super().clean() or {}


class RefundAddForm(MerchantForm, forms.ModelForm):
    """Start tracking a refund applied for elsewhere: its transNo and merchant are enough.

    The amount is typed in yuan and stored in fen, converted exactly with :class:`Decimal`.
    Everything else comes from HSQ with the first query.
    """

    merchant_no = forms.ChoiceField(label=_("merchant number"))
    amount_yuan = forms.DecimalField(
        label=_("amount (yuan)"),
        required=False,
        min_value=Decimal("0.01"),
        error_messages=_TOO_LARGE,
        help_text=_("Optional: the amount expected, e.g. 12.34. Taken from HSQ when empty."),
        **_YUAN_BOUNDS,
    )

    class Meta:
        model = Refund
        fields = ("trans_no", "merchant_no", "orig_trans_no")

    def clean_amount_yuan(self) -> Decimal | None:
        amount: Decimal | None = self.cleaned_data.get("amount_yuan")
        if amount is not None:
            typed_fen(self, "amount_yuan")
        return amount

    def amount_fen(self) -> int | None:
        """The amount typed, in fen (``None`` when left empty)."""
        amount = self.cleaned_data.get("amount_yuan")
        return None if amount is None else yuan_to_fen(amount)


class RefundApplyForm(MerchantForm, forms.Form):
    """Apply to HSQ for a refund of a paid order: the amounts typed in yuan, sent in fen.

    The amounts are converted exactly (:class:`Decimal`, :func:`~hsq_refunds.money.yuan_to_fen`).
    ``trans_no`` is the new refund's own order number: empty on the form, generated for the
    confirmation step and carried in it as a hidden field, so that posting one confirmation
    twice cannot apply twice.
    """

    # Money moves: with several merchants, a person picks one.
    first_when_several = False
    # Above zero is checked by _yuan().
    _yuan_bounds: dict[str, Any] = {
        **_YUAN_BOUNDS,
        "error_messages": {
            **_TOO_LARGE,
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
        cleaned = super().clean()
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
        field's bounds, then :func:`typed_fen` on the text as typed."""
        amount: Decimal = self.cleaned_data[name]
        if amount <= 0:
            raise forms.ValidationError(gettext("Enter an amount above zero."), code="not_positive")
        typed_fen(self, name)
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
        names = ("merchant_no", "orig_trans_no", "orig_amount_yuan", "amount_yuan", "reason")
        return {**{name: str(data[name]) for name in names}, "trans_no": trans_no}


class RecentQueriesFormSet(forms.BaseInlineFormSet):
    """A refund's queries, newest first, limited to the most recent ``RECENT_QUERIES``."""

    def get_queryset(self) -> QuerySet[RefundQuery]:
        if not hasattr(self, "_recent"):
            self._recent = super().get_queryset().order_by("-queried_at", "-pk")[:RECENT_QUERIES]
        return self._recent
