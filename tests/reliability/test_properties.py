"""Properties of the whole query path, from bytes on the wire to the refund's row.

A scripted gateway on 127.0.0.1 serves generated answers (signed ones with arbitrary business
fields, and tampered, unsigned and broken ones); the engine asks about a refund in a generated
starting state through the real client and writes what it decides. Then:

- an answer that is not verified (or not well-formed) changes nothing about the refund's
  status, amount, finish time or anything else the gateway reports; it is recorded as an error;
- a final status (``SUCCESS``, ``FAIL``) never changes; a verified answer that contradicts it
  only flags the refund;
- a verified answer changes a refund only as far as the rules allow, and a well-formed one is
  applied.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsq_refunds.choices import ERROR_OUTCOMES, STATUS_RANK
from hsq_refunds.gateway.signing import failure_sign_strings, sign, success_sign_string
from hsq_refunds.models import Refund, RefundQuery
from hsq_refunds.sync import sync_refund

from .gateway import ScriptedGateway

pytestmark = pytest.mark.django_db

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ASKED = "R-PROP-0001"
OPEN = ("UNKNOWN", "INIT", "PROCESSING")
FINAL = ("SUCCESS", "FAIL")
STATUSES = ("INIT", "PROCESSING", "SUCCESS", "FAIL")
NOT_APPLIED_CODES = ("200004", "200008", "200009", "200021")
FINISHED_BEFORE = datetime(2024, 5, 1, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
BEIJING = ZoneInfo("Asia/Shanghai")
#: A field left out of the result altogether.
ABSENT = "<absent>"
#: What a refund's row reports from the gateway: none of it may change on an unverified answer.
REPORTED_FIELDS = (
    "status",
    "amount",
    "reported_amount",
    "finished_at",
    "trade_no",
    "orig_trans_no",
    "extend",
    "resp_code",
    "resp_msg",
    "last_result",
    "needs_attention",
    "attention_reason",
    "attention_detail",
)


# --------------------------------------------------------------------------- the gateway


@pytest.fixture(scope="module")
def gateway():
    server = ScriptedGateway().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(hsq_sandbox_credentials):
    """What signs the answers: the platform key of the sandbox credentials, and an impostor's."""
    platform = serialization.load_pem_private_key(
        Path(hsq_sandbox_credentials.platform_private_key).read_bytes(), password=None
    )
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return {
        "platform": platform,
        "impostor": impostor,
        "sign_key": hsq_sandbox_credentials.sign_key,
        "merchant_no": hsq_sandbox_credentials.merchant_no,
    }


@pytest.fixture
def engine(settings, gateway, hsq_sandbox_credentials):
    """The app configured to ask the scripted gateway, with the sandbox merchant's keys."""
    settings.HSQ_REFUNDS = {
        **hsq_sandbox_credentials.settings_dict(gateway.url),
        "RETRIES": 0,
        "CONNECT_TIMEOUT": 2,
        "READ_TIMEOUT": 5,
    }
    return gateway


# --------------------------------------------------------------------------- strategies

#: Text as a gateway may send it. NUL is left to ``test_nul_characters_*`` below: PostgreSQL
#: cannot store it, and one failing example would hide every other finding.
characters = st.characters(codec="utf-8", exclude_characters="\x00")
texts = st.text(characters, max_size=40)
json_scalars = st.none() | st.booleans() | st.integers() | texts


@st.composite
def starting_states(draw: st.DrawFn, statuses: tuple[str, ...] = OPEN + FINAL) -> dict[str, Any]:
    """A refund as it may be recorded: any status, flagged or not, erring or not."""
    status = draw(st.sampled_from(statuses))
    reason = draw(st.sampled_from(["", "not_found", "amount_mismatch", "contradiction"]))
    final = status in FINAL
    return {
        "status": status,
        "amount": draw(st.none() | st.integers(0, 10**12)),
        "finished_at": draw(st.sampled_from([None, FINISHED_BEFORE])) if final else None,
        "trade_no": draw(st.sampled_from(["", "T-RECORDED"])),
        "extend": draw(st.sampled_from(["", "recorded"])),
        "last_result": draw(st.sampled_from(["", '{"recorded":true}'])),
        "resp_code": draw(st.sampled_from(["", "200007"])),
        "needs_attention": bool(reason),
        "attention_reason": reason,
        "attention_detail": "flagged earlier" if reason else "",
        "error_count": draw(st.integers(0, 6)),
        "query_count": draw(st.integers(0, 40)),
        "age": timedelta(seconds=draw(st.integers(120, 3 * 86400))),
    }


def business_fields(merchant_no: str) -> st.SearchStrategy[dict[str, Any]]:
    """The business result of a refund query: a well-formed one with up to three fields given
    odd values (another refund, an unknown status, a bad amount, a documented failure code...).
    """
    well_formed = st.fixed_dictionaries(
        {
            "transNo": st.just(ASKED),
            "merchantNo": st.sampled_from([merchant_no, merchant_no, "", None, ABSENT]),
            "orderStatus": st.sampled_from(STATUSES),
            "orderAmt": st.integers(0, 10**12) | st.integers(0, 10**12).map(str),
            "respCode": st.sampled_from(["200007", "200007", "100201", "", "999999", ABSENT]),
            "respMsg": texts | st.just(ABSENT) | st.text(characters, min_size=250, max_size=400),
            "finishedDate": st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
                lambda moment: moment.strftime("%Y%m%d%H%M%S")
            )
            | st.sampled_from(["", None, ABSENT, 20240501120000]),
            "tradeNo": texts | st.just(ABSENT) | st.text(characters, min_size=65, max_size=80),
            "origTransNo": texts | st.just(ABSENT),
            "extend": texts | st.none() | st.just(ABSENT),
        }
    )
    odd = {
        "transNo": st.sampled_from([ASKED + "X", "", None, ABSENT, 7]),
        "merchantNo": st.sampled_from(["999", merchant_no + "0", " " + merchant_no]),
        "orderStatus": st.sampled_from(["", None, ABSENT, "success", "REFUNDING"]) | st.integers(),
        "orderAmt": st.sampled_from([None, "", ABSENT, -1, "12.50", "1e3", " 100", 1.5, True]),
        "respCode": st.sampled_from(NOT_APPLIED_CODES),
        "finishedDate": st.sampled_from(["20241340000000", "2024-05-01", "0", 1.5]),
        "tradeNo": st.sampled_from([True, [1], {"no": 1}]),
        "extend": st.lists(texts, max_size=2),
    }

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        fields = draw(well_formed)
        for name in draw(st.lists(st.sampled_from(sorted(odd)), max_size=3, unique=True)):
            fields[name] = draw(odd[name])
        return {key: value for key, value in fields.items() if value != ABSENT}

    return build()


def result_text(fields: dict[str, Any], style: int) -> str:
    """The ``result`` string as some gateway might serialize it."""
    if style == 0:
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if style == 1:
        return json.dumps(fields)
    return json.dumps(fields, ensure_ascii=False, indent=1)


def envelope_bytes(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, ensure_ascii=False).encode("utf-8")


@st.composite
def verified_answers(draw: st.DrawFn, keys: dict[str, Any]) -> dict[str, Any]:
    """A success answer signed by the platform over ``result`` exactly as sent."""
    fields = draw(business_fields(keys["merchant_no"]))
    text = result_text(fields, draw(st.integers(0, 2)))
    signature = sign(keys["platform"], success_sign_string(text, keys["sign_key"]))
    envelope: dict[str, Any] = {
        "success": draw(st.sampled_from([True, "true"])),
        "result": text,
        "sign": signature.upper() if draw(st.booleans()) else signature,
    }
    if draw(st.booleans()):
        envelope.update(errorCode=None, errorMsg=None)
    return {"status": 200, "body": envelope_bytes(envelope), "fields": fields, "kind": "verified"}


UNVERIFIED_KINDS = (
    "tampered-result",
    "corrupt-sign",
    "truncated-sign",
    "missing-sign",
    "null-sign",
    "empty-sign",
    "sign-not-hex",
    "sign-not-text",
    "other-sign-key",
    "impostor-key",
    "result-not-a-string",
    "success-flag-invalid",
    "unsigned-failure",
    "failure-bad-sign",
    "signed-failure",
    "truncated-body",
    "not-an-object",
    "spring-error-page",
    "http-error-status",
    "garbage",
)


@st.composite
def unverified_answers(draw: st.DrawFn, keys: dict[str, Any]) -> dict[str, Any]:
    """Answers that must never change a refund: not verified, not an answer, or a failure.

    They start from a well-formed, correctly signed answer, so that only the damage stands
    between them and a status change.
    """
    kind = draw(st.sampled_from(UNVERIFIED_KINDS))
    fields = draw(business_fields(keys["merchant_no"]))
    fields.update(transNo=ASKED, merchantNo=keys["merchant_no"], respCode="200007")
    fields["orderStatus"] = draw(st.sampled_from(STATUSES))
    text = result_text(fields, 0)
    signature = sign(keys["platform"], success_sign_string(text, keys["sign_key"]))
    envelope: dict[str, Any] = {"success": True, "result": text, "sign": signature}
    status = 200
    error_code = draw(texts)
    error_msg = draw(st.text(characters, max_size=60))
    if kind == "tampered-result":
        other = dict(fields, orderStatus=draw(st.sampled_from(STATUSES)))
        other["orderAmt"] = draw(st.integers(0, 10**6))
        tampered = result_text(other, draw(st.integers(0, 2)))
        envelope["result"] = tampered if tampered != text else text + " "
    elif kind == "corrupt-sign":
        index = draw(st.integers(0, len(signature) - 1))
        digit = "0" if signature[index] != "0" else "1"
        envelope["sign"] = signature[:index] + digit + signature[index + 1 :]
    elif kind == "truncated-sign":
        envelope["sign"] = signature[: draw(st.integers(1, len(signature) - 1))]
    elif kind == "missing-sign":
        del envelope["sign"]
    elif kind == "null-sign":
        envelope["sign"] = None
    elif kind == "empty-sign":
        envelope["sign"] = ""
    elif kind == "sign-not-hex":
        envelope["sign"] = "zz" * (len(signature) // 2)
    elif kind == "sign-not-text":
        envelope["sign"] = draw(st.sampled_from([0, 1.5, True, [signature], {"hex": signature}]))
    elif kind == "other-sign-key":
        envelope["sign"] = sign(keys["platform"], success_sign_string(text, "f" * 32))
    elif kind == "impostor-key":
        envelope["sign"] = sign(keys["impostor"], success_sign_string(text, keys["sign_key"]))
    elif kind == "result-not-a-string":
        envelope["result"] = fields
    elif kind == "success-flag-invalid":
        # Any case of "true"/"false" is a valid flag (the gateway may send either); these are not.
        flag = draw(st.sampled_from([None, 1, 0, "yes", "ture", "t", "", [True], ABSENT]))
        if flag == ABSENT:
            del envelope["success"]
        else:
            envelope["success"] = flag
    elif kind in ("unsigned-failure", "failure-bad-sign", "signed-failure"):
        envelope = {"success": draw(st.sampled_from([False, "false"])), "result": None}
        envelope.update(errorCode=error_code, errorMsg=error_msg)
        failure = failure_sign_strings(error_code, error_msg, keys["sign_key"])[0]
        if kind == "signed-failure":
            envelope["sign"] = sign(keys["platform"], failure)
        elif kind == "failure-bad-sign":
            envelope["sign"] = sign(keys["impostor"], failure)
    elif kind == "truncated-body":
        whole = envelope_bytes(envelope)
        return answer(kind, whole[: draw(st.integers(0, len(whole) - 1))])
    elif kind == "not-an-object":
        value = draw(st.lists(json_scalars, max_size=3) | json_scalars)
        return answer(kind, json.dumps(value).encode())
    elif kind == "spring-error-page":
        status = draw(st.sampled_from([200, 500]))
        envelope = {
            "timestamp": "2024-05-01T12:00:00.000+00:00",
            "status": 500,
            "error": "Internal Server Error",
            "message": error_msg,
            "path": "/api/acquiring",
        }
    elif kind == "http-error-status":
        status = draw(st.sampled_from([400, 404, 500, 502, 503]))
    else:  # garbage
        return answer(kind, draw(st.binary(max_size=120)))
    return answer(kind, envelope_bytes(envelope), status)


def answer(kind: str, body: bytes, status: int = 200) -> dict[str, Any]:
    return {"status": status, "body": body, "fields": None, "kind": kind}


# --------------------------------------------------------------------------- running one


def install(state: dict[str, Any], merchant_no: str) -> Refund:
    """Replace whatever an earlier example left with one refund in ``state``."""
    Refund.objects.all().delete_with_history()
    state = dict(state)
    now = timezone.now()
    final = state["status"] in FINAL
    return Refund.objects.create(
        merchant_no=merchant_no,
        trans_no=ASKED,
        applied_at=now - state.pop("age"),
        next_query_at=None if final else now - timedelta(seconds=1),
        last_queried_at=now - timedelta(minutes=1) if state["query_count"] else None,
        **state,
    )


def ask(
    gateway: ScriptedGateway, refund: Refund, reply: dict[str, Any]
) -> tuple[Refund, RefundQuery]:
    """Let the engine ask about ``refund`` while the gateway gives ``reply``; return the new row
    and its audit row."""
    gateway.answer(reply["body"], reply["status"])
    started = timezone.now()
    report = sync_refund(refund)
    assert gateway.requests == 1  # asked once (no retries), whatever came back
    assert (report.selected, report.skipped, report.queried) == (1, 0, 1)
    after = Refund.objects.get(pk=refund.pk)
    assert (after.claim_token, after.claimed_until) == ("", None)
    assert after.last_queried_at is not None and after.last_queried_at >= started
    (audit,) = RefundQuery.objects.filter(refund=refund)
    return after, audit


def beijing(value: Any) -> datetime:
    return datetime.strptime(str(value), "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)


def well_formed(fields: dict[str, Any], merchant_no: str) -> bool:
    """Whether a verified result is one the protocol says to apply (read independently of the
    client's parser)."""
    amount = fields.get("orderAmt")
    finished = fields.get("finishedDate")
    if type(finished) is int:
        finished = str(finished)
    try:
        date_ok = finished in (None, "") or (
            isinstance(finished, str) and len(finished) == 14 and bool(beijing(finished))
        )
    except ValueError:
        date_ok = False
    return (
        fields.get("transNo") == ASKED
        and fields.get("merchantNo") in (merchant_no, "", None)
        and fields.get("orderStatus") in STATUSES
        and fields.get("respCode") not in NOT_APPLIED_CODES
        and (
            amount in (None, "")
            or (type(amount) is int and amount >= 0)
            or (isinstance(amount, str) and amount.isascii() and amount.isdigit())
        )
        and date_ok
        and all(
            fields.get(name) is None or isinstance(fields.get(name), str)
            for name in ("respMsg", "tradeNo", "origTransNo", "extend")
        )
    )


def reported(refund: Refund) -> dict[str, Any]:
    return {name: getattr(refund, name) for name in REPORTED_FIELDS}


# --------------------------------------------------------------------------- properties


def test_unverified_answers_change_nothing_and_are_recorded_as_errors(engine, keys):
    @PROPERTY
    @given(state=starting_states(), reply=unverified_answers(keys))
    def check(state: dict[str, Any], reply: dict[str, Any]) -> None:
        refund = install(state, keys["merchant_no"])
        before = Refund.objects.get(pk=refund.pk)

        after, audit = ask(engine, refund, reply)

        assert reported(after) == reported(before), reply["kind"]
        assert after.query_count == before.query_count + 1
        assert audit.outcome in ERROR_OUTCOMES
        assert (audit.status_seen, audit.result) == ("", "")
        assert audit.error_type in ("transport", "signature", "response", "gateway")
        if before.status in FINAL:
            # A final refund keeps what it recorded; the failed query is in the audit row.
            assert after.next_query_at is None
            assert (after.error_count, after.last_error_type) == (
                before.error_count,
                before.last_error_type,
            )
        else:
            assert after.next_query_at is not None and after.next_query_at > timezone.now()
            assert after.error_count == before.error_count + 1
            assert audit.error_type == after.last_error_type

    check()


def test_a_verified_answer_changes_only_what_the_rules_allow(engine, keys):
    merchant_no = keys["merchant_no"]

    @PROPERTY
    @given(state=starting_states(), reply=verified_answers(keys))
    def check(state: dict[str, Any], reply: dict[str, Any]) -> None:
        refund = install(state, merchant_no)
        before = Refund.objects.get(pk=refund.pk)
        fields = reply["fields"]

        after, audit = ask(engine, refund, reply)

        if audit.outcome in ERROR_OUTCOMES:  # verified, but not usable: nothing is applied
            unchanged = [name for name in REPORTED_FIELDS if not name.startswith(("resp", "last"))]
            assert {n: getattr(after, n) for n in unchanged} == {
                n: getattr(before, n) for n in unchanged
            }
            if before.status not in FINAL:  # a final refund's errors are in the audit row
                assert after.error_count == before.error_count + 1
            assert before.status in FINAL or not well_formed(fields, merchant_no)
        if before.status in FINAL:
            assert (after.status, after.finished_at, after.amount) == (
                before.status,
                before.finished_at,
                before.amount,
            )
            assert after.next_query_at is None
            if audit.outcome == "ok" and audit.status_seen != before.status:
                assert after.needs_attention and after.attention_reason == "contradiction"
        elif after.status != before.status:
            assert after.status == fields["orderStatus"] == audit.status_seen
            assert audit.outcome == "ok" and well_formed(fields, merchant_no)
        elif well_formed(fields, merchant_no) and audit.outcome == "out_of_order":
            # A status older than the recorded one is recorded, not applied.
            assert STATUS_RANK[fields["orderStatus"]] < STATUS_RANK[before.status]
            assert audit.status_seen == fields["orderStatus"] and after.error_count == 0
        elif well_formed(fields, merchant_no):
            # A well-formed verified answer about an unfinished refund is applied.
            assert audit.outcome == "ok" and after.status == fields["orderStatus"]
            assert after.error_count == 0 and after.last_result
            if before.amount is None and fields.get("orderAmt") not in (None, ""):
                assert after.amount == int(fields["orderAmt"])
        # Amounts: an expected amount is never overwritten; a missing one is taken from HSQ.
        if before.amount is not None:
            assert after.amount == before.amount
        elif after.amount is not None:
            assert audit.outcome == "ok" and after.amount == int(fields["orderAmt"])
        if after.reported_amount is not None:
            assert after.reported_amount == int(fields["orderAmt"]) != before.amount
            assert after.needs_attention and after.attention_reason == "amount_mismatch"
        if after.finished_at != before.finished_at:
            assert before.status in OPEN and after.status in FINAL
            assert after.finished_at == beijing(fields["finishedDate"])

    check()


def test_final_states_never_change_whatever_the_gateway_answers(engine, keys):
    answers = verified_answers(keys) | unverified_answers(keys)

    @PROPERTY
    @given(state=starting_states(FINAL), reply=answers)
    def check(state: dict[str, Any], reply: dict[str, Any]) -> None:
        refund = install(state, keys["merchant_no"])
        before = Refund.objects.get(pk=refund.pk)

        after, audit = ask(engine, refund, reply)

        assert (after.status, after.finished_at, after.amount, after.next_query_at) == (
            before.status,
            before.finished_at,
            before.amount,
            None,
        )
        contradicted = audit.outcome == "not_found" or (
            audit.outcome == "ok" and audit.status_seen != before.status
        )
        if contradicted:
            assert after.needs_attention and after.attention_reason == "contradiction"
        elif not before.needs_attention:
            assert not after.needs_attention

    check()


# --------------------------------------------------------------------------- NUL from the gateway


def test_nul_characters_in_a_verified_answer_are_stored(engine, keys):
    refund = install(next_state(), keys["merchant_no"])
    fields = {
        "transNo": ASKED,
        "merchantNo": keys["merchant_no"],
        "orderStatus": "PROCESSING",
        "orderAmt": 1500,
        "respCode": "200007",
        "respMsg": "处理中\x00",
        "tradeNo": "T\x001",
        "extend": "\x00",
    }
    text = result_text(fields, 0)
    signature = sign(keys["platform"], success_sign_string(text, keys["sign_key"]))
    reply = answer("verified", envelope_bytes({"success": True, "result": text, "sign": signature}))

    after, audit = ask(engine, refund, reply)

    assert after.status == "PROCESSING" and audit.outcome == "ok"
    assert after.next_query_at is not None and after.next_query_at > timezone.now()


def test_nul_characters_in_an_unsigned_failure_are_recorded_as_its_error(engine, keys):
    refund = install(next_state(), keys["merchant_no"])
    body = {"success": False, "result": None, "errorCode": "E\x00", "errorMsg": "busy\x00"}

    after, audit = ask(engine, refund, answer("unsigned-failure", envelope_bytes(body)))

    assert after.status == "UNKNOWN" and after.error_count == 1
    assert after.last_error_type == audit.error_type == "gateway"
    assert after.next_query_at is not None and after.next_query_at > timezone.now()


def next_state() -> dict[str, Any]:
    """An unfinished refund, applied for ten minutes ago, never asked about."""
    return {
        "status": "UNKNOWN",
        "amount": 1500,
        "query_count": 0,
        "error_count": 0,
        "age": timedelta(minutes=10),
    }
