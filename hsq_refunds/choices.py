"""The words of a refund's life, as stored: its status, why it waits for a person, where its
application stands, how an answer came, and how a query ended."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = [
    "ERROR_OUTCOMES",
    "FINAL_STATUSES",
    "STATUS_RANK",
    "Application",
    "AttentionReason",
    "Outcome",
    "Source",
    "Status",
]


class Status(models.TextChoices):
    """A refund's status as recorded: ``UNKNOWN`` until a verified answer says otherwise."""

    UNKNOWN = "UNKNOWN", _("Unknown")
    INIT = "INIT", _("Accepted")
    PROCESSING = "PROCESSING", _("Processing")
    SUCCESS = "SUCCESS", _("Succeeded")
    FAIL = "FAIL", _("Failed")


FINAL_STATUSES = frozenset({Status.SUCCESS.value, Status.FAIL.value})
#: How far along a status is; an answer may only move a refund to a higher rank.
STATUS_RANK: dict[str, int] = {
    Status.UNKNOWN.value: 0,
    Status.INIT.value: 1,
    Status.PROCESSING.value: 2,
    Status.SUCCESS.value: 3,
    Status.FAIL.value: 3,
}


class AttentionReason(models.TextChoices):
    """Why a refund waits for a person."""

    NOT_FOUND = "not_found", _("Not found at HSQ after the grace period")
    EXPIRED = "expired", _("Wrong order number or past the query window")
    AMOUNT_MISMATCH = "amount_mismatch", _("Amount differs from the expected amount")
    CONTRADICTION = "contradiction", _("Answer contradicts a final status")
    GAVE_UP = "gave_up", _("Unfinished after the maximum age")
    NOT_CONFIGURED = "not_configured", _("Merchant not configured")
    REPEATED_ERRORS = "repeated_errors", _("Its answers cannot be recorded")
    NOT_RECEIVED = "not_received", _("The application may not have reached HSQ")
    NOT_APPLIED_HERE = "not_applied_here", _("Not applied through this app")


class Application(models.TextChoices):
    """Where the app's own application for a refund stands (empty: applied elsewhere).

    ``queued``: written in a caller's transaction and provably not sent yet; it is sent once
    that transaction commits, or by the next sync run if the process died first. ``sending``:
    counted as sent (it may have reached HSQ), its answer not written yet.
    """

    NONE = "", _("Not applied through this app")
    QUEUED = "queued", _("Written, not sent yet")
    SENDING = "sending", _("Written, being sent")
    ACCEPTED = "accepted", _("Answered by HSQ")
    REFUSED = "refused", _("Refused by HSQ")
    UNKNOWN = "unknown", _("Sent, answer not known")


class Source(models.TextChoices):
    """How an answer about a refund reached the app."""

    QUERY = "query", _("Query")
    APPLICATION = "application", _("Application")
    NOTIFICATION = "notification", _("Notification")


class Outcome(models.TextChoices):
    """How one query to HSQ ended."""

    OK = "ok", _("Status received")
    OUT_OF_ORDER = "out_of_order", _("Status older than the recorded one")
    SUPERSEDED = "superseded", _("Overtaken by a newer answer")
    NOT_FOUND = "not_found", _("Order not found")
    EXPIRED = "expired", _("Wrong order number or past the query window")
    QUERY_FAILED = "query_failed", _("Query failed at HSQ")
    NO_STATUS = "no_status", _("Answer without a status")
    GATEWAY_ERROR = "gateway_error", _("Gateway error")
    TRANSPORT_ERROR = "transport_error", _("Network error")
    SIGNATURE_ERROR = "signature_error", _("Invalid signature")
    RESPONSE_ERROR = "response_error", _("Malformed answer")
    CONFIG_ERROR = "config_error", _("Configuration error")
    INVALID_REQUEST = "invalid_request", _("Invalid request")
    INTERNAL_ERROR = "internal_error", _("Unexpected error")


#: Outcomes in which the query failed: the refund's state is unknown and nothing is applied.
ERROR_OUTCOMES = frozenset(Outcome.values) - {
    Outcome.OK,
    Outcome.OUT_OF_ORDER,
    Outcome.SUPERSEDED,
    Outcome.NOT_FOUND,
    Outcome.EXPIRED,
}
