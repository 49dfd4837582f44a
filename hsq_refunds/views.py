"""HSQ's refund notification: the push HSQ sends to the ``returnUrl`` of an application.

Received the way provider webhooks are (django-anymail, dj-stripe), with HSQ's own
verification: the form is decoded once, verified over the received values with the sign key and
platform certificate of the ``merchantNo`` it names, and only then read. Its result goes through
the same rules and the same conditional write as a query's answer
(:func:`~hsq_refunds.recording.record_answer`), so a repeat, a late or out-of-order delivery or a
race with the poller never loses a final state nor writes a stale one.

Answers: ``SUCCESS`` (``text/plain``, 200) once the result is committed, also for a
notification that changes nothing (so that HSQ stops sending it); ``FAIL`` with a 4xx for
anything that does not verify, names a merchant that is not configured, or cannot be read
(nothing written but a log line; never an echo of the input, never why verification failed);
405 for anything but ``POST``; 413 above 64 KiB. The signature is the authentication, so CSRF
is exempted and no login is required (``LoginRequiredMiddleware``) for this view alone. It is
not in a request transaction (``ATOMIC_REQUESTS``): the answer is committed by its own write
before ``SUCCESS`` is sent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from urllib.parse import parse_qsl

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt

from .choices import AttentionReason, Source
from .clients import get_client
from .columns import CODE_LENGTH, RESP_MSG_LENGTH, TRADE_NO_LENGTH, TRANS_NO_LENGTH
from .conf import get_settings
from .gateway import ConfigurationError, HsqError, RefundQueryResult, SignatureError
from .gateway.notification import NOTIFICATION_FIELDS, notification_merchant_no
from .gateway.text import cleaned, printable
from .models import Refund, RefundQuery, validate_trans_no
from .recording import record_answer
from .rules import Decision, decide

__all__ = ["MAX_BODY_BYTES", "refund_notify"]

logger = logging.getLogger("hsq_refunds.notifications")

#: A notification is well under 2 KiB; a body larger than this is not one.
MAX_BODY_BYTES = 64 * 1024


def _reply(status: int, text: str) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


@csrf_exempt
@login_not_required
@transaction.non_atomic_requests
def refund_notify(request: HttpRequest) -> HttpResponse:
    """Receive, verify and record one refund notification from HSQ."""
    try:
        return _receive(request)
    except Exception:
        # A last guard: whatever was not foreseen is logged and answered 503 (HSQ sends the
        # notification again), never with Django's error page.
        logger.exception("refund notification not recorded: unexpected error")
        return _reply(503, "FAIL")


def _receive(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        response = _reply(405, "FAIL")
        response["Allow"] = "POST"
        return response
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY_BYTES:
        return _reply(413, "FAIL")
    body = request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return _reply(413, "FAIL")
    form = _form(body, request.content_type or "")
    if form is None:
        logger.warning("refund notification refused: not a readable form")
        return _reply(400, "FAIL")
    try:
        merchant_no = notification_merchant_no(form)
        client = get_client(merchant_no)
        result = client.verify_notification(form)
    except ConfigurationError as exc:
        logger.warning("refund notification refused: %s", printable(exc.message))
        return _reply(400, "FAIL")
    except SignatureError as exc:
        logger.error(
            "refund notification refused: the signature does not verify (%s); if HSQ changed "
            "its platform certificate, update PLATFORM_CERT",
            printable(exc.message),
        )
        return _reply(400, "FAIL")
    except HsqError as exc:
        logger.warning("refund notification refused: %s", printable(exc.message))
        return _reply(400, "FAIL")
    try:
        _record(result, form)
    except ValueError as exc:  # verified, but not a refund the app can hold
        logger.error("refund notification not recorded: %s", printable(str(exc)))
        return _reply(400, "FAIL")
    except DatabaseError:  # the database is unavailable: HSQ sends it again
        logger.exception("transNo=%s: notification not recorded", printable(result.trans_no))
        return _reply(503, "FAIL")
    return _reply(200, "SUCCESS")


def _form(body: bytes, content_type: str) -> dict[str, str] | None:
    """The notification's fields, decoded exactly once; ``None`` when unreadable (not UTF-8,
    a field given twice, a value that is not text)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if content_type == "application/json":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # nesting deeper than the parser goes, too
            return None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return None
        return data
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (ValueError, UnicodeDecodeError):
        return None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            return None
        form[key] = value
    return form


def _record(result: RefundQueryResult, form: dict[str, str]) -> None:
    policy = get_settings()
    # A signed transNo the app could never have applied for (control characters, NUL, which
    # PostgreSQL cannot even look up) is unreadable: a ValueError, answered FAIL.
    validate_trans_no(result.trans_no)
    refund = Refund.objects.filter(merchant_no=result.merchant_no, trans_no=result.trans_no).first()
    unknown = refund is None
    if refund is None:
        if not policy.TRACK_UNKNOWN_NOTIFICATIONS:
            logger.warning(
                "transNo=%s merchantNo=%s: notification for a refund this app does not track; "
                "acknowledged, not recorded",
                printable(result.trans_no),
                result.merchant_no,
            )
            return
        # Its fields are HSQ's, not the app's: stored cleaned (the proof keeps them verbatim).
        refund = Refund.objects.track(
            result.trans_no,
            merchant_no=result.merchant_no,
            orig_trans_no=cleaned(result.orig_trans_no, TRANS_NO_LENGTH) or None,
        )

    def decided(current: Refund) -> Decision | None:
        if _recorded_already(current, result):
            return None
        decision = decide(
            current, _cleaned(result), now=timezone.now(), policy=policy, source=Source.NOTIFICATION
        )
        if "final_result" in decision.changes:
            # The proof of a notification is every field its signature covers, as received.
            signed = {name: form[name] for name in NOTIFICATION_FIELDS if name in form}
            decision.changes["final_result"] = json.dumps(
                signed, ensure_ascii=False, sort_keys=True
            )
        if unknown and not current.needs_attention and not decision.attention:
            # Applied by another system: tracked from the notification, and a person told.
            decision = replace(
                decision,
                attention=AttentionReason.NOT_APPLIED_HERE.value,
                changes={
                    **decision.changes,
                    "needs_attention": True,
                    "attention_reason": AttentionReason.NOT_APPLIED_HERE.value,
                    "attention_detail": gettext(
                        "HSQ notified about this refund; it was not applied through this app."
                    ),
                },
            )
        return decision

    refund, decision = record_answer(refund, decided, source=Source.NOTIFICATION)
    if decision is None:
        logger.info(
            "transNo=%s merchantNo=%s: the same notification again; acknowledged, already recorded",
            printable(refund.trans_no),
            refund.merchant_no,
        )
        return
    level = logging.WARNING if unknown or decision.attention else logging.INFO
    logger.log(
        level,
        "transNo=%s merchantNo=%s notified: outcome=%s status=%s%s%s",
        printable(refund.trans_no),
        refund.merchant_no,
        decision.outcome,
        decision.new_status,
        f" (was {decision.old_status})" if decision.status_changed else "",
        " (not applied through this app)" if unknown else "",
        extra={"trans_no": refund.trans_no, "outcome": decision.outcome},
    )


def _recorded_already(refund: Refund, result: RefundQueryResult) -> bool:
    """Whether this very notification (the same signature, so the same signed content) is in
    the refund's history: a replay, or HSQ sending it again after a lost acknowledgement."""
    return RefundQuery.objects.filter(
        refund=refund, source=Source.NOTIFICATION, sign=result.sign
    ).exists()


def _cleaned(result: RefundQueryResult) -> RefundQueryResult:
    """The notification's text fields as the refund stores them: no NUL, lone surrogate or
    control character, cut to their columns. ``raw_result`` (the signed original) is kept."""
    return replace(
        result,
        orig_trans_no=cleaned(result.orig_trans_no, TRANS_NO_LENGTH),
        trade_no=cleaned(result.trade_no, TRADE_NO_LENGTH),
        resp_code=cleaned(result.resp_code, CODE_LENGTH),
        resp_msg=cleaned(result.resp_msg, RESP_MSG_LENGTH),
        extend=cleaned(result.extend, None),
    )
