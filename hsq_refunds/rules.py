"""What one answer from HSQ may change about a refund, and when to ask again.

Every rule about a refund's state lives here, as pure functions: :func:`decide` takes the
refund as it is recorded and the outcome of one query (a verified
:class:`~hsq_refunds.gateway.RefundQueryResult` or the exception the query raised) and returns a
:class:`Decision`: the field values to write, the audit row, and what to signal. Nothing here
touches the database, so each rule can be tested on its own.

The rules:

- Only a verified result changes a refund; an error never changes its status.
- Statuses only move forward: ``UNKNOWN`` < ``INIT`` < ``PROCESSING`` < ``SUCCESS``/``FAIL``. An
  answer older than the recorded status (``INIT`` after ``PROCESSING``) is recorded and not
  applied (:attr:`Outcome.OUT_OF_ORDER`).
- ``SUCCESS`` and ``FAIL`` are final. A later answer that says otherwise is recorded and flagged
  (:attr:`AttentionReason.CONTRADICTION`), never applied. The verified answer that made a refund
  final is kept on it as received (``final_result``, ``final_sign``), written once; later answers
  about a final refund add audit rows and flags, and change none of its recorded result.
- An amount that differs from the expected one is stored as ``reported_amount`` and flagged,
  never written over ``amount``. A refund tracked without an amount takes HSQ's.
- ``200004``/``200009`` (not found) are normal within ``NOT_FOUND_GRACE`` of applying; later the
  refund is flagged, and still asked about (it may yet appear). The flag clears itself when HSQ
  finds the refund after all.
- ``200021`` (wrong order number or past the query window): stop asking, flag.
- ``200008`` (query failed), an answer without ``orderStatus``, transport and signature errors,
  malformed answers and unsigned gateway errors: keep everything, record the error, ask again
  after ``ERROR_BACKOFF``. A signed gateway error backs off two steps further.
- Configuration errors and requests that cannot be sent are recorded as errors but are not
  counted as queries to HSQ. They back off like any failure; after ``ATTENTION_AFTER_ERRORS`` in
  a row, as do unexpected errors, the refund is flagged for a person
  (:attr:`AttentionReason.NOT_CONFIGURED`, :attr:`AttentionReason.REPEATED_ERRORS`): nothing a
  later query does can fix them.
- The next query follows ``QUERY_INTERVALS`` by the refund's age; an unfinished refund older
  than ``MAX_AGE`` is no longer asked about and is flagged (unless already flagged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.utils.translation import gettext

from .choices import (
    ERROR_OUTCOMES,
    FINAL_STATUSES,
    STATUS_RANK,
    Application,
    AttentionReason,
    Outcome,
    Source,
    Status,
)
from .columns import (
    CODE_LENGTH,
    ERROR_CODE_LENGTH,
    ERROR_MESSAGE_LENGTH,
    RESP_MSG_LENGTH,
    TRADE_NO_LENGTH,
    TRANS_NO_LENGTH,
)
from .conf import HsqRefundsSettings
from .gateway import (
    ConfigurationError,
    GatewayError,
    HsqError,
    InvalidRequestError,
    RefundApplyResult,
    RefundQueryResult,
    RefundStatus,
    RespCode,
    ResponseError,
    SignatureError,
    TransportError,
)
from .money import format_fen

__all__ = [
    "Decision",
    "ErrorInfo",
    "RefundState",
    "classify",
    "decide",
    "decide_application",
    "decide_failure",
    "error_backoff",
    "next_query_time",
    "scheduled_interval",
]


_ERROR_OUTCOME_BY_CLASS: tuple[tuple[type[BaseException], Outcome], ...] = (
    (ConfigurationError, Outcome.CONFIG_ERROR),
    (InvalidRequestError, Outcome.INVALID_REQUEST),
    (TransportError, Outcome.TRANSPORT_ERROR),
    (SignatureError, Outcome.SIGNATURE_ERROR),
    (ResponseError, Outcome.RESPONSE_ERROR),
    (GatewayError, Outcome.GATEWAY_ERROR),
)
#: Errors raised before anything reached HSQ: not counted as queries.
_NOT_SENT = frozenset({Outcome.CONFIG_ERROR, Outcome.INVALID_REQUEST})
#: Errors no later query can fix: after ``ATTENTION_AFTER_ERRORS`` in a row, a person is asked.
_STUCK = {
    Outcome.CONFIG_ERROR: AttentionReason.NOT_CONFIGURED,
    Outcome.INTERNAL_ERROR: AttentionReason.REPEATED_ERRORS,
}
#: Applications whose arrival at HSQ no answer has confirmed.
_UNCONFIRMED = frozenset({Application.SENDING.value, Application.UNKNOWN.value})
#: Flags that clear themselves when HSQ finds the refund after all.
_FOUND_AFTER_ALL = frozenset({AttentionReason.NOT_FOUND.value, AttentionReason.NOT_RECEIVED.value})
#: How many steps further along ERROR_BACKOFF a signed gateway error starts.
_SIGNED_ERROR_EXTRA_STEPS = 2
#: The error type of a failure that is no :class:`~hsq_refunds.gateway.HsqError`.
INTERNAL = "internal"


class RefundState(Protocol):
    """The fields of a refund the rules read (a :class:`~hsq_refunds.models.Refund` has them)."""

    status: str
    amount: int | None
    orig_trans_no: str
    applied_at: datetime
    finished_at: datetime | None
    query_count: int
    error_count: int
    needs_attention: bool
    attention_reason: str
    application: str
    next_query_at: datetime | None
    extend: str


@dataclass(frozen=True)
class ErrorInfo:
    """A failed query as stored and reported: the error's kind, the gateway's code, a message."""

    type: str
    code: str
    message: str


@dataclass(frozen=True)
class Decision:
    """What one query outcome does to a refund.

    ``changes`` maps refund field names to their new values (only fields that are written);
    ``log`` holds the fields of the :class:`~hsq_refunds.models.RefundQuery` audit row;
    ``attention`` is the reason newly raised by this answer, if any (to be signalled);
    ``amount_mismatch`` says HSQ reported another amount than the one expected.
    """

    outcome: str
    old_status: str
    new_status: str
    changes: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)
    attention: str | None = None
    error: ErrorInfo | None = None
    queried: bool = True
    amount_mismatch: bool = False

    @property
    def status_changed(self) -> bool:
        return self.old_status != self.new_status


# --------------------------------------------------------------------------- the schedule


def scheduled_interval(age: timedelta, policy: HsqRefundsSettings) -> timedelta:
    """The normal wait between queries for a refund of this age (``QUERY_INTERVALS``)."""
    seconds = age.total_seconds()
    for limit, interval in policy.QUERY_INTERVALS:
        if seconds < limit:
            return timedelta(seconds=interval)
    return timedelta(seconds=policy.QUERY_INTERVALS[-1][1])


def error_backoff(
    error_count: int, policy: HsqRefundsSettings, *, signed: bool = False
) -> timedelta:
    """The wait after ``error_count`` consecutive failed queries (``ERROR_BACKOFF``)."""
    steps = policy.ERROR_BACKOFF
    index = max(error_count, 1) - 1 + (_SIGNED_ERROR_EXTRA_STEPS if signed else 0)
    return timedelta(seconds=steps[min(index, len(steps) - 1)])


def next_query_time(
    applied_at: datetime,
    now: datetime,
    policy: HsqRefundsSettings,
    *,
    at_least: timedelta = timedelta(0),
) -> datetime | None:
    """When to ask about an unfinished refund next; ``None`` once it is past ``MAX_AGE``.

    The wait is the scheduled interval for the refund's age, or ``at_least`` if that is longer
    (an error's backoff never makes a refund asked about more often). The last query falls on
    the deadline itself.
    """
    deadline = applied_at + timedelta(seconds=policy.MAX_AGE)
    if now >= deadline:
        return None
    wait = max(scheduled_interval(now - applied_at, policy), at_least)
    return min(now + wait, deadline)


# --------------------------------------------------------------------------- the decision


def classify(result: RefundQueryResult) -> Outcome:
    """The outcome of a verified result, from its ``respCode`` and ``orderStatus``.

    Documented failure codes decide first. Any other answer with an ``orderStatus`` is trusted
    (``200007``, ``100201`` and codes the gateway's page does not list: a verified status is the
    gateway's own statement); an answer with neither is not usable.
    """
    code = result.resp_code
    if code in RespCode.NOT_FOUND_CODES:
        return Outcome.NOT_FOUND
    if code == RespCode.QUERY_FAILED:
        return Outcome.QUERY_FAILED
    if code == RespCode.WRONG_OR_EXPIRED:
        return Outcome.EXPIRED
    if result.status is None:
        return Outcome.NO_STATUS
    return Outcome.OK


def decide(
    refund: RefundState,
    answer: RefundQueryResult | BaseException,
    *,
    now: datetime,
    policy: HsqRefundsSettings,
    source: str = Source.QUERY,
) -> Decision:
    """Apply the rules to one answer about ``refund`` as it is recorded; see the module
    docstring.

    ``source`` says how the answer came, which orders it against what is recorded:

    - ``query``: HSQ's answer now. One that disagrees with a final status contradicts it.
    - ``notification``: HSQ's push. Notifications may arrive late and out of order, so one
      older than a final status is only recorded (:attr:`Outcome.OUT_OF_ORDER`); one that
      disagrees with it at the same step contradicts it. It is not a query.
    - ``application``: the answer to the app's own application, which is older than any
      notification about the refund. When a notification has already recorded a later state
      the answer is :attr:`Outcome.SUPERSEDED`: recorded, nothing changed, no flag. Use
      :func:`decide_application`, which also decides what the answer says of the application.
    """
    if isinstance(answer, RefundQueryResult):
        outcome = classify(answer)
        if outcome in ERROR_OUTCOMES:
            decision = _decide_error(refund, answer, outcome, now, policy)
        else:
            decision = _decide_answer(refund, answer, outcome, now, policy, source=source)
    else:
        decision = _decide_error(refund, answer, _error_outcome(answer), now, policy)
    if source != Source.QUERY:
        decision.changes.pop("last_queried_at", None)
        decision.changes.pop("query_count", None)
        # Not a query: it never brings the next query sooner.
        _not_sooner(decision, refund)
    return decision


def decide_application(
    refund: RefundState,
    reply: RefundApplyResult | BaseException,
    *,
    now: datetime,
    policy: HsqRefundsSettings,
    first: bool,
) -> Decision:
    """The answer to an application (``first``: the first one, not one a person sent again)
    through the same rules as a query's, and what it says of the application.

    A verified answer means the application arrived (``accepted``). A signed refusal of the
    first application fails the refund with HSQ's code and message, unless a verified status
    was recorded meanwhile (HSQ's notification overtook the answer): then HSQ has the refund,
    and the refusal is kept in its history as superseded and changes nothing else. A refusal of
    an application sent again is recorded as an error (the first may have arrived after all).
    Anything else leaves the outcome unknown (``unknown``: the refund is queried by transNo,
    never sent again by the app). The first query still waits ``FIRST_QUERY_DELAY``
    (``NOTIFY_FIRST_QUERY_DELAY`` with a ``returnUrl``), so that a notification can come first.
    """
    if isinstance(reply, RefundApplyResult):
        decision = decide(
            refund,
            _as_query_result(refund, reply),
            now=now,
            policy=policy,
            source=Source.APPLICATION,
        )
        application = Application.ACCEPTED
    elif isinstance(reply, GatewayError) and reply.signed and first:
        if refund.status == Status.UNKNOWN:
            return _refused(refund, reply, now)
        return _superseded_refusal(refund, reply, now)
    else:
        decision = decide(refund, reply, now=now, policy=policy, source=Source.APPLICATION)
        application = Application.UNKNOWN
    if refund.application in _UNCONFIRMED:
        decision.changes.setdefault("application", application)
    return decision


def _not_sooner(decision: Decision, refund: RefundState) -> None:
    scheduled = decision.changes.get("next_query_at")
    if scheduled is not None and refund.next_query_at is not None:
        decision.changes["next_query_at"] = max(scheduled, refund.next_query_at)


def _refused(refund: RefundState, error: GatewayError, now: datetime) -> Decision:
    """A signed refusal of the first application, nothing verified recorded before it: the
    refund failed, with HSQ's words."""
    info = _error_info(error, Outcome.GATEWAY_ERROR)
    changes = {
        "updated_at": now,
        "status": Status.FAIL.value,
        "application": Application.REFUSED.value,
        "resp_code": error.code[:CODE_LENGTH],
        "resp_msg": error.error_msg[:RESP_MSG_LENGTH],
        "finished_at": now,
        "next_query_at": None,
    }
    return Decision(
        outcome=Outcome.GATEWAY_ERROR.value,
        old_status=refund.status,
        new_status=Status.FAIL.value,
        changes=changes,
        log=_log(Outcome.GATEWAY_ERROR, error=info),
        queried=False,
    )


def _superseded_refusal(refund: RefundState, error: GatewayError, now: datetime) -> Decision:
    """A signed refusal that arrives after a verified status was recorded: history only."""
    changes: dict[str, Any] = {"updated_at": now}
    if refund.application in _UNCONFIRMED:
        changes["application"] = Application.ACCEPTED.value  # HSQ has the refund
    return Decision(
        outcome=Outcome.SUPERSEDED.value,
        old_status=refund.status,
        new_status=refund.status,
        changes=changes,
        log=_log(Outcome.SUPERSEDED, error=_error_info(error, Outcome.GATEWAY_ERROR)),
        queried=False,
    )


def _as_query_result(refund: RefundState, result: RefundApplyResult) -> RefundQueryResult:
    """The application's verified result in the shape of a query's (it has no origTransNo nor
    extend: the refund's own are kept)."""
    return RefundQueryResult(
        merchant_no=result.merchant_no,
        trans_no=result.trans_no,
        status=RefundStatus(result.status) if result.status else None,
        resp_code=result.resp_code,
        resp_msg=result.resp_msg,
        orig_trans_no=refund.orig_trans_no,
        trade_no=result.trade_no,
        amount=result.amount,
        finished_at=result.finished_at,
        extend=refund.extend,
        raw_result=result.raw_result,
        sign=result.sign,
    )


def decide_failure(
    refund: RefundState, exc: BaseException, *, now: datetime, policy: HsqRefundsSettings
) -> Decision:
    """The decision for an answer that could not be handled (an exception in the rules, or a
    database that refused what they decided): recorded like any failed query, and nothing of
    the answer kept. Built from plain fields, so that it can always be written."""
    return _decide_error(refund, exc, Outcome.INTERNAL_ERROR, now, policy)


class _Builder:
    """Collects the changes of one decision."""

    def __init__(self, refund: RefundState, now: datetime, *, queried: bool) -> None:
        self.refund = refund
        self.now = now
        self.changes: dict[str, Any] = {"updated_at": now}
        self.attention: str | None = None
        if queried:
            self.changes["last_queried_at"] = now
            self.changes["query_count"] = refund.query_count + 1

    def flag(self, reason: AttentionReason, detail: str) -> None:
        """Raise ``reason``; signalled only if the refund was not already flagged for it."""
        refund = self.refund
        if not (refund.needs_attention and refund.attention_reason == reason):
            self.attention = reason.value
        self.changes.update(needs_attention=True, attention_reason=reason.value)
        self.changes["attention_detail"] = detail

    def flagged(self) -> bool:
        return self.refund.needs_attention or self.attention is not None

    def clear_errors(self) -> None:
        if self.refund.error_count:
            self.changes["error_count"] = 0
        self.changes.update(last_error_type="", last_error_code="", last_error_message="")

    def schedule(self, policy: HsqRefundsSettings, at_least: timedelta = timedelta(0)) -> None:
        """Set the next query of an unfinished refund; give up (and flag) past ``MAX_AGE``."""
        when = next_query_time(self.refund.applied_at, self.now, policy, at_least=at_least)
        self.changes["next_query_at"] = when
        if when is None and not self.flagged():
            self.flag(
                AttentionReason.GAVE_UP,
                gettext("Still unfinished %(days)s days after it was applied for; not asked again.")
                % {"days": _days(policy.MAX_AGE)},
            )


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g}"


def _decide_answer(
    refund: RefundState,
    result: RefundQueryResult,
    outcome: Outcome,
    now: datetime,
    policy: HsqRefundsSettings,
    *,
    source: str = Source.QUERY,
) -> Decision:
    build = _Builder(refund, now, queried=True)
    old = refund.status
    new = old
    mismatch = False
    pushed = source == Source.NOTIFICATION
    older = source == Source.APPLICATION  # older than anything a notification recorded
    if old in FINAL_STATUSES and older:
        build.changes["next_query_at"] = None
        if not (outcome == Outcome.OK and result.status is not None and result.status == old):
            outcome = Outcome.SUPERSEDED
    elif (
        old in FINAL_STATUSES and pushed and outcome == Outcome.OK and _goes_backwards(old, result)
    ):
        outcome = Outcome.OUT_OF_ORDER  # a late notification of an earlier step
        build.changes["next_query_at"] = None
    elif old in FINAL_STATUSES:
        # Its result is kept as it was when it became final; this answer is audit only.
        build.changes["next_query_at"] = None
        _contradict_final(build, result, outcome)
    elif older and outcome == Outcome.OK and _goes_backwards(old, result):
        outcome = Outcome.SUPERSEDED  # a notification recorded a later step first
        build.schedule(policy)
    else:
        build.clear_errors()
        build.changes.update(
            resp_code=result.resp_code[:CODE_LENGTH],
            resp_msg=result.resp_msg[:RESP_MSG_LENGTH],
            last_result=result.raw_result,
        )
        if outcome == Outcome.OK and _goes_backwards(old, result):
            outcome = Outcome.OUT_OF_ORDER
            build.schedule(policy)
        elif outcome == Outcome.OK:
            new, mismatch = _apply_status(build, result, policy)
        elif outcome == Outcome.NOT_FOUND:
            _not_found(build, now, policy)
        else:  # Outcome.EXPIRED
            build.changes["next_query_at"] = None
            build.flag(
                AttentionReason.EXPIRED,
                gettext(
                    "HSQ answered %(code)s (%(message)s): the order number is wrong or past "
                    "the query window. Not asked again."
                )
                % {"code": result.resp_code, "message": result.resp_msg or "-"},
            )
    return Decision(
        outcome=outcome.value,
        old_status=old,
        new_status=new,
        changes=build.changes,
        log=_log(outcome, result=result),
        attention=build.attention,
        amount_mismatch=mismatch,
    )


def _goes_backwards(old: str, result: RefundQueryResult) -> bool:
    return STATUS_RANK[result.status.value] < STATUS_RANK[old]  # type: ignore[union-attr]


def _contradict_final(build: _Builder, result: RefundQueryResult, outcome: Outcome) -> None:
    """A later answer about a final refund: flagged when it says otherwise, nothing applied."""
    old = build.refund.status
    if outcome == Outcome.OK and result.status is not None and result.status.value != old:
        build.flag(
            AttentionReason.CONTRADICTION,
            gettext(
                "HSQ now reports %(new)s for this refund, recorded as %(old)s; the recorded "
                "status was kept."
            )
            % {"new": result.status.value, "old": old},
        )
    elif outcome == Outcome.NOT_FOUND:
        build.flag(
            AttentionReason.CONTRADICTION,
            gettext("HSQ no longer finds this refund, recorded as %(old)s; the status was kept.")
            % {"old": old},
        )


def _apply_status(
    build: _Builder, result: RefundQueryResult, policy: HsqRefundsSettings
) -> tuple[str, bool]:
    """A verified ``orderStatus`` of an unfinished refund; returns it and whether HSQ reported
    another amount than the one expected."""
    refund, changes = build.refund, build.changes
    old, new = refund.status, result.status.value  # type: ignore[union-attr]
    if new != old:
        changes["status"] = new
    if refund.needs_attention and refund.attention_reason in _FOUND_AFTER_ALL:
        changes.update(needs_attention=False, attention_reason="", attention_detail="")
    if refund.application in _UNCONFIRMED:  # HSQ has it: the application arrived
        changes["application"] = Application.ACCEPTED.value
    if result.trade_no:
        changes["trade_no"] = result.trade_no[:TRADE_NO_LENGTH]
    if result.orig_trans_no and not refund.orig_trans_no:
        changes["orig_trans_no"] = result.orig_trans_no[:TRANS_NO_LENGTH]
    changes["extend"] = result.extend
    mismatch = _check_amount(build, result.amount)
    if new in FINAL_STATUSES:
        changes["finished_at"] = result.finished_at or refund.finished_at
        changes["next_query_at"] = None
        changes["final_result"] = result.raw_result
        changes["final_sign"] = result.sign
    else:
        build.schedule(policy)
    return new, mismatch


def _check_amount(build: _Builder, reported: int | None) -> bool:
    expected = build.refund.amount
    if reported is None:
        return False
    if expected is None:
        build.changes.update(amount=reported, reported_amount=None)
        return False
    if reported == expected:
        build.changes["reported_amount"] = None
        return False
    build.changes["reported_amount"] = reported
    build.flag(
        AttentionReason.AMOUNT_MISMATCH,
        gettext("HSQ reports %(reported)s; %(expected)s was expected.")
        % {"reported": format_fen(reported), "expected": format_fen(expected)},
    )
    return True


def _not_found(build: _Builder, now: datetime, policy: HsqRefundsSettings) -> None:
    refund = build.refund
    grace = timedelta(seconds=policy.NOT_FOUND_GRACE)
    if now - refund.applied_at > grace and refund.application in _UNCONFIRMED:
        build.flag(
            AttentionReason.NOT_RECEIVED,
            gettext(
                "HSQ does not know this refund %(minutes)s minutes after the app applied for it: "
                "the application may not have reached HSQ. It was not sent again; a person with "
                "the apply permission can send it again from its page."
            )
            % {"minutes": f"{policy.NOT_FOUND_GRACE / 60:g}"},
        )
    elif now - refund.applied_at > grace:
        build.flag(
            AttentionReason.NOT_FOUND,
            gettext(
                "HSQ does not know this order number %(minutes)s minutes after it was applied "
                "for. Check the transNo; it is still asked about."
            )
            % {"minutes": f"{policy.NOT_FOUND_GRACE / 60:g}"},
        )
    build.schedule(policy)


def _decide_error(
    refund: RefundState,
    answer: RefundQueryResult | BaseException,
    outcome: Outcome,
    now: datetime,
    policy: HsqRefundsSettings,
) -> Decision:
    queried = outcome not in _NOT_SENT
    build = _Builder(refund, now, queried=queried)
    error = _error_info(answer, outcome)
    final = refund.status in FINAL_STATUSES
    if not final:
        error_count = refund.error_count + 1
        build.changes.update(
            error_count=error_count,
            last_error_type=error.type,
            last_error_code=error.code,
            last_error_message=error.message,
        )
        if isinstance(answer, RefundQueryResult):
            build.changes.update(
                resp_code=answer.resp_code[:CODE_LENGTH],
                resp_msg=answer.resp_msg[:RESP_MSG_LENGTH],
                last_result=answer.raw_result,
            )
        signed = isinstance(answer, GatewayError) and answer.signed
        build.schedule(policy, at_least=error_backoff(error_count, policy, signed=signed))
        reason = _STUCK.get(outcome)
        if reason is not None and error_count >= policy.ATTENTION_AFTER_ERRORS:
            build.flag(
                reason,
                gettext("%(count)d failures in a row, the last: %(error)s")
                % {"count": error_count, "error": error.message or error.type},
            )
    return Decision(
        outcome=outcome.value,
        old_status=refund.status,
        new_status=refund.status,
        changes=build.changes,
        log=_log(
            outcome, result=answer if isinstance(answer, RefundQueryResult) else None, error=error
        ),
        attention=build.attention,
        error=error,
        queried=queried,
    )


def _error_outcome(exc: BaseException) -> Outcome:
    for cls, outcome in _ERROR_OUTCOME_BY_CLASS:
        if isinstance(exc, cls):
            return outcome
    return Outcome.INTERNAL_ERROR


def _error_info(answer: RefundQueryResult | BaseException, outcome: Outcome) -> ErrorInfo:
    if isinstance(answer, RefundQueryResult):
        message = answer.resp_msg or (
            gettext("the answer has no orderStatus") if outcome == Outcome.NO_STATUS else ""
        )
        return ErrorInfo(
            outcome.value, answer.resp_code[:ERROR_CODE_LENGTH], message[:ERROR_MESSAGE_LENGTH]
        )
    if isinstance(answer, GatewayError):
        # The code has its own column: keep the gateway's own message, and whether it was signed.
        message = answer.error_msg if answer.signed else f"{answer.error_msg} (unsigned)"
        return ErrorInfo(
            answer.kind, answer.code[:ERROR_CODE_LENGTH], message[:ERROR_MESSAGE_LENGTH]
        )
    if isinstance(answer, HsqError):
        return ErrorInfo(
            answer.kind, answer.code[:ERROR_CODE_LENGTH], answer.message[:ERROR_MESSAGE_LENGTH]
        )
    message = f"{type(answer).__name__}: {answer}"
    return ErrorInfo(INTERNAL, "", message[:ERROR_MESSAGE_LENGTH])


def _log(
    outcome: Outcome, *, result: RefundQueryResult | None = None, error: ErrorInfo | None = None
) -> dict[str, Any]:
    """The fields of the audit row (``RefundQuery``) for one outcome."""
    return {
        "outcome": outcome.value,
        "error_type": error.type if error else "",
        "error_code": error.code if error else "",
        "error_message": error.message if error else "",
        "resp_code": result.resp_code[:CODE_LENGTH] if result else "",
        "status_seen": result.status.value if result and result.status else "",
        "result": result.raw_result if result else "",
        "sign": result.sign if result else "",
    }
