"""The proof behind a final status: HSQ's own signed answer, kept on the refund and checked again.

When an answer makes a refund final, the rules keep it on the refund exactly as received
(``final_result``, ``final_sign``), written once. :func:`check_proof` shows, at any later time,
that HSQ said so: the signature verifies against the merchant's platform certificate and sign
key, and what the signed text says agrees with the row (order number, status, amount). A row
edited in the database, or a certificate that is not the one HSQ signed with, fails.
``manage.py hsq_refunds_verify`` runs it over every final refund.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from django.utils.translation import gettext

from .choices import Source
from .conf import get_settings, setting_path
from .gateway import (
    ConfigurationError,
    load_platform_key,
    verify_notification_signature,
    verify_result,
)
from .models import Refund

__all__ = ["ProofFailure", "ProofKeys", "check_proof"]


@dataclass(frozen=True)
class ProofFailure:
    """Why a refund's proof does not hold: ``missing``, ``signature`` or ``mismatch``."""

    trans_no: str
    merchant_no: str
    kind: str
    message: str


class ProofKeys:
    """Each merchant's sign key and platform key, loaded once, from ``HSQ_REFUNDS``."""

    def __init__(self) -> None:
        self._settings = get_settings()
        self._keys: dict[str, tuple[str, rsa.RSAPublicKey]] = {}

    def __repr__(self) -> str:
        return f"ProofKeys(merchants={sorted(self._keys)!r})"

    def of(self, merchant_no: str) -> tuple[str, rsa.RSAPublicKey]:
        """Raises :class:`~hsq_refunds.gateway.ConfigurationError` for a merchant not configured."""
        if merchant_no not in self._keys:
            merchant = self._settings.MERCHANTS.get(merchant_no)
            if merchant is None:
                raise ConfigurationError(
                    f"merchant {merchant_no!r} is not configured in {setting_path('MERCHANTS')}"
                )
            try:
                platform_key = load_platform_key(merchant.platform_cert)
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"{setting_path('MERCHANTS', merchant_no, 'PLATFORM_CERT')}: {exc.message}"
                ) from None
            self._keys[merchant_no] = (merchant.sign_key, platform_key)
        return self._keys[merchant_no]


def check_proof(refund: Refund, keys: ProofKeys) -> ProofFailure | None:
    """``None`` when the refund's stored final answer verifies and agrees with the row."""

    def failure(kind: str, message: str) -> ProofFailure:
        return ProofFailure(refund.trans_no, refund.merchant_no, kind, message)

    if not refund.final_result or not refund.final_sign:
        return failure(
            "missing",
            gettext("no stored proof (it became final before proofs were kept, or by hand)"),
        )
    sign_key, platform_key = keys.of(refund.merchant_no)
    if refund.final_source == Source.NOTIFICATION:
        form = _json_object(refund.final_result)
        verified = form is not None and verify_notification_signature(
            {**form, "sign": refund.final_sign}, sign_key=sign_key, platform_key=platform_key
        )
        fields = _json_object(form.get("signContent", "")) if form else None
    else:
        verified = verify_result(
            refund.final_result, refund.final_sign, sign_key=sign_key, platform_key=platform_key
        )
        fields = _json_object(refund.final_result)
    if not verified:
        return failure(
            "signature",
            gettext(
                "the stored answer's signature does not verify with the configured platform "
                "certificate and sign key"
            ),
        )
    if fields is None:
        return failure("mismatch", gettext("the stored answer is not a JSON object"))
    disagreements = _disagreements(refund, fields)
    if disagreements:
        return failure(
            "mismatch",
            gettext("the signed answer disagrees with the row: %(fields)s")
            % {"fields": ", ".join(disagreements)},
        )
    return None


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _disagreements(refund: Refund, fields: dict[str, Any]) -> list[str]:
    found = []
    if str(fields.get("transNo", "")) != refund.trans_no:
        found.append(f"transNo {fields.get('transNo')!r} != {refund.trans_no!r}")
    if str(fields.get("orderStatus", "")) != refund.status:
        found.append(f"orderStatus {fields.get('orderStatus')!r} != {refund.status!r}")
    recorded = refund.reported_amount if refund.reported_amount is not None else refund.amount
    signed = fields.get("orderAmt")
    if signed not in (None, "") and recorded is not None and str(signed) != str(recorded):
        found.append(f"orderAmt {signed!r} != {recorded}")
    return found
