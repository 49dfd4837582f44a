"""Fuzzing the notification view: whatever is POSTed, the view never fails with a 500, answers
exactly ``SUCCESS`` or ``FAIL``, and only a notification whose signature verifies changes
anything.

Bodies come three ways: arbitrary bytes and texts under assorted content types; HSQ's signed
form damaged by a few mutations (a character flipped, a field dropped, duplicated, renamed or
given another value, bytes spliced into the body, a huge field, the form sent as JSON or under
the wrong content type); and correctly signed forms whose ``signContent`` is anything at all.
Each goes through Django's test client (fast), and a few of each through the live server.

Whether a body verifies is decided here, independently of the app: its fields are decoded once
(a form field given twice is not a verifiable form), and the platform's RSA signature is
checked with ``cryptography`` over the sign string of the values received. The tables are
compared before and after every request: they change exactly when the reply is ``SUCCESS``,
and only for a body that verifies; a body built only from changes that keep the signature
valid (fields reordered or added, the JSON form, another percent-encoding, the signature in
upper case) must be accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import pytest
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from hsq_refunds.models import PaidOrder, Refund, RefundQuery
from tests.notify.conftest import NOTIFY_PATH

SIGNED = ("method", "version", "format", "merchantNo", "signType", "signContent")
FIELDS = (*SIGNED, "sign")
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
TRACKED = ("FZ-1", "FZ-2", "FZ-3")
#: transNos the valid forms name: tracked ones, and ones the app learns of from the notification.
TRANS_NOS = (*TRACKED, "FZ-ELSEWHERE", "退款-FZ")
STATUSES = ("INIT", "PROCESSING", "SUCCESS", "FAIL")
CONTENT_TYPES = (
    FORM,
    f"{FORM}; charset=utf-8",
    JSON,
    f"{JSON}; charset=utf-8",
    "text/plain",
    "multipart/form-data; boundary=xyz",
    "application/xml",
    "",
)
#: Characters that form-encoding and HSQ's sign string care about, and some that are not ASCII.
TRICKY = "&=+%;# ?/\\\"'<>中文退款\u00e9\U0001f600"

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --------------------------------------------------------------------------- the oracle


@pytest.fixture(scope="session")
def platform_public(hsq_sandbox_credentials):
    data = Path(hsq_sandbox_credentials.platform_cert).read_bytes()
    return x509.load_pem_x509_certificate(data).public_key()


def decoded(body: bytes, content_type: str) -> dict[str, Any] | None:
    """The fields of a body, decoded once; ``None`` where it has none to verify (not UTF-8, not
    a JSON object, a form field given twice: which of its values was signed is ambiguous)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if content_type.split(";")[0].strip().lower() == JSON:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    pairs = parse_qsl(text, keep_blank_values=True)
    form = dict(pairs)
    return form if len(form) == len(pairs) else None


@pytest.fixture
def verifies(hsq_sandbox_credentials, platform_public) -> Callable[[bytes, str], bool]:
    """``verifies(body, content_type)``: whether the body carries the platform's signature."""
    sign_key = hsq_sandbox_credentials.sign_key

    def check(body: bytes, content_type: str) -> bool:
        form = decoded(body, content_type)
        if form is None or not all(isinstance(form.get(name), str) for name in FIELDS):
            return False
        message = "&".join(f"{name}={form[name]}" for name in SIGNED) + f"&key={sign_key}"
        try:
            signature = bytes.fromhex(form["sign"])
            platform_public.verify(
                signature, message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
            )
        except (ValueError, UnicodeEncodeError, InvalidSignature):
            return False
        return True

    return check


# --------------------------------------------------------------------------- fixtures


@dataclass
class Body:
    data: bytes
    content_type: str
    #: Built only from changes that keep the signature valid and the form readable.
    intact: bool = False


@pytest.fixture
def tracked(refunds) -> None:
    refunds(
        [
            {"transNo": t, "status": "PROCESSING", "timeline": [{"status": "PROCESSING"}]}
            for t in TRACKED
        ]
    )


def snapshot() -> tuple[list, list, list]:
    return (
        list(Refund.objects.order_by("id").values()),
        list(RefundQuery.objects.order_by("id").values()),
        list(PaidOrder.objects.order_by("id").values()),
    )


@pytest.fixture
def check(verifies) -> Callable[..., None]:
    """``check(body, status, text, before, after)``: the view's properties for one request."""

    def assert_properties(body: Body, status: int, text: str, before, after) -> None:
        assert status != 500
        assert (status, text) == (200, "SUCCESS") or (status in (400, 413) and text == "FAIL"), (
            status,
            text,
        )
        changed = before != after
        if currently_in_test_context():  # the reply's kind, in --hypothesis-show-statistics
            event(f"{status} {text}" + (" (intact)" if body.intact else ""))
        if text != "SUCCESS":
            assert not changed, "a FAIL wrote something"
        elif not changed:  # only a delivery already recorded is acknowledged without a write
            form = decoded(body.data, body.content_type) or {}
            recorded = {row["sign"] for row in before[1] if row["source"] == "notification"}
            assert form.get("sign") in recorded, "a SUCCESS wrote nothing"
        if changed:
            assert verifies(body.data, body.content_type), "a body that does not verify landed"
        if body.intact:
            assert text == "SUCCESS", "a validly signed notification was refused"

    return assert_properties


@pytest.fixture
def send_by_client(client, check) -> Callable[[Body], None]:
    def send(body: Body) -> None:
        before = snapshot()
        reply = client.post(NOTIFY_PATH, data=body.data, content_type=body.content_type)
        after = snapshot()
        check(body, reply.status_code, reply.content.decode("utf-8", "replace"), before, after)
        assert reply["Content-Type"].startswith("text/plain")

    return send


@pytest.fixture
def send_live(live_server, check) -> Callable[[Body], None]:
    session = requests.Session()

    def send(body: Body) -> None:
        before = snapshot()
        headers = {"Content-Type": body.content_type} if body.content_type else {}
        reply = session.post(
            live_server.url + NOTIFY_PATH, data=body.data, headers=headers, timeout=30
        )
        after = snapshot()
        check(body, reply.status_code, reply.text, before, after)

    yield send
    session.close()


# --------------------------------------------------------------------------- the bodies

arbitrary_bodies = st.builds(
    Body,
    st.one_of(
        st.binary(max_size=600),
        st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.dictionaries(
            st.sampled_from(FIELDS) | st.text(max_size=10),
            st.text(max_size=40) | st.sampled_from(["", "1.0", "JSON", "RSA2", "{}", "00"]),
            max_size=9,
        ).map(lambda form: urlencode(form).encode("utf-8", "surrogatepass")),
    ),
    st.sampled_from(CONTENT_TYPES),
)

contents = st.fixed_dictionaries(
    {
        "transNo": st.sampled_from(TRANS_NOS),
        "status": st.sampled_from(STATUSES),
        "amount": st.sampled_from(["1500", "1500", "1", "99999"]) | st.integers(1, 10**6),
        "extend": st.text(alphabet=st.sampled_from(TRICKY + "abc123"), max_size=30),
    }
)


def pick(pairs: list[tuple[str, str]], data: st.DataObject) -> int:
    return data.draw(st.integers(0, len(pairs) - 1), label="field")


def mutate(pairs: list[tuple[str, str]], data: st.DataObject) -> bool:
    """Apply one mutation to ``pairs``; returns whether the form is still intact."""
    op = data.draw(
        st.sampled_from(
            # A field twice is the likeliest way to get a form read otherwise than it was
            # verified: twice as often as the others.
            [
                *("flip", "drop", "duplicate", "duplicate", "replace", "rename"),
                *("extra", "reorder", "upper", "huge"),
            ]
        ),
        label="mutation",
    )
    if op == "reorder":
        order = data.draw(st.permutations(range(len(pairs))), label="order")
        pairs[:] = [pairs[i] for i in order]
        return True
    if op == "extra":
        name = data.draw(st.text(min_size=1, max_size=12), label="extra name")
        if name in {key for key, _value in pairs}:
            return False
        pairs.insert(data.draw(st.integers(0, len(pairs))), (name, data.draw(st.text(max_size=20))))
        return True
    if not pairs:
        return False
    index = pick(pairs, data)
    key, value = pairs[index]
    if op == "upper":
        if key != "sign":
            return True
        pairs[index] = (key, value.upper())
        return True
    if op == "flip":
        if not value:
            pairs[index] = (key, data.draw(st.text(min_size=1, max_size=3)))
            return False
        at = data.draw(st.integers(0, len(value) - 1), label="position")
        other = data.draw(st.characters(codec="utf-8").filter(lambda c: c != value[at]))
        pairs[index] = (key, value[:at] + other + value[at + 1 :])
    elif op == "drop":
        del pairs[index]
    elif op == "duplicate":
        copy = value if data.draw(st.booleans(), label="same value") else data.draw(st.text())
        pairs.insert(data.draw(st.integers(0, len(pairs))), (key, copy))
    elif op == "replace":
        pairs[index] = (key, data.draw(st.text(max_size=60) | st.sampled_from(["", value + " "])))
    elif op == "rename":
        pairs[index] = (data.draw(st.sampled_from([key.upper(), key + " ", "x" + key])), value)
    else:  # huge: a value of tens of KiB, over the view's 64 KiB limit or not
        size = data.draw(st.sampled_from([20_000, 64 * 1024, 70_000]), label="size")
        pairs[index] = (key, (value or "x") * (size // max(len(value), 1) + 1))
    return False


def encode(pairs: list[tuple[str, str]], data: st.DataObject, intact: bool) -> Body:
    how = data.draw(
        st.sampled_from(["form", "form", "form-quote", "json", "json-as-form", "form-as-json"]),
        label="encoding",
    )
    if how in ("json", "json-as-form"):
        members = ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs)
        body = Body(("{" + members + "}").encode("utf-8", "surrogatepass"), JSON, intact)
        if len({key for key, _value in pairs}) != len(pairs):  # the last one wins in JSON
            body.intact = False
        if how == "json-as-form":
            body.content_type, body.intact = FORM, False
        return body
    quote_via = quote if how == "form-quote" else None
    text = urlencode(pairs, quote_via=quote_via) if quote_via else urlencode(pairs)
    body = Body(text.encode("utf-8", "surrogatepass"), FORM, intact)
    if how == "form-as-json":
        body.content_type, body.intact = JSON, False
    return body


def splice(body: Body, data: st.DataObject) -> None:
    """Maybe put raw bytes into the encoded body, or cut it short."""
    how = data.draw(st.sampled_from(["none", "none", "bytes", "cut"]), label="splice")
    if how == "none" or not body.data:
        return
    at = data.draw(st.integers(0, len(body.data)), label="at")
    if how == "bytes":
        extra = data.draw(
            st.binary(min_size=1, max_size=6) | st.sampled_from([b"\xff", b"%", b"&", b"=", b"%zz"])
        )
        body.data = body.data[:at] + extra + body.data[at:]
    else:
        body.data = body.data[:at]
    body.intact = False


def draw_mutated(data: st.DataObject, notification: Callable[..., dict[str, str]]) -> Body:
    content = data.draw(contents, label="content")
    form = notification(
        content["transNo"], content["status"], amount=content["amount"], extend=content["extend"]
    )
    pairs = list(form.items())
    intact = True
    for _step in range(data.draw(st.integers(0, 3), label="mutations")):
        intact = mutate(pairs, data) and intact
    body = encode(pairs, data, intact)
    splice(body, data)
    return body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def draw_signed_content(data: st.DataObject, sign_form: Callable[..., dict[str, str]]) -> Body:
    """A correctly signed form whose signContent is anything: HSQ's fields with values of any
    JSON type, any JSON at all, or any text."""
    base = {
        "transNo": data.draw(st.sampled_from(TRANS_NOS) | st.text(max_size=70)),
        "origTransNo": "PO1",
        "tradeNo": "T1",
        "orderAmt": "1500",
        "orderStatus": data.draw(st.sampled_from(STATUSES) | st.text(max_size=12)),
        "finishedDate": "20261201100000",
        "respCode": "200007",
        "respMsg": "成功",
        "extend": "",
    }
    for name in data.draw(st.lists(st.sampled_from(sorted(base)), max_size=4, unique=True)):
        if data.draw(st.booleans()):
            del base[name]
        else:
            base[name] = data.draw(json_values)
    content = data.draw(
        st.one_of(
            st.just(json.dumps(base, ensure_ascii=False)),
            json_values.map(json.dumps),
            st.text(max_size=200),
        ),
        label="signContent",
    )
    try:
        form = sign_form(content)
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 bytes to sign
        return Body(b"", FORM)
    body = Body(urlencode(form).encode("utf-8"), FORM)
    if data.draw(st.booleans(), label="as JSON"):
        body = Body(json.dumps(form).encode("utf-8"), JSON)
    return body


# --------------------------------------------------------------------------- the tests


@pytest.mark.django_db
@settings(FUZZ, max_examples=200)
@given(body=arbitrary_bodies)
def test_arbitrary_bodies_are_refused_and_change_nothing(sandbox, tracked, send_by_client, body):
    send_by_client(body)


@pytest.mark.django_db
@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_mutated_notifications_land_only_when_their_signature_still_verifies(
    sandbox, tracked, notification, send_by_client, data
):
    send_by_client(draw_mutated(data, notification))


@pytest.mark.django_db
@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_signed_notifications_of_any_content_never_break_the_view(
    sandbox, tracked, sign_form, send_by_client, data
):
    send_by_client(draw_signed_content(data, sign_form))


@pytest.mark.django_db(transaction=True)
@settings(FUZZ, max_examples=20)
@given(data=st.data())
def test_through_the_live_server(sandbox, tracked, notification, sign_form, send_live, data):
    kind = data.draw(st.sampled_from(["arbitrary", "mutated", "signed"]), label="kind")
    if kind == "arbitrary":
        body = data.draw(arbitrary_bodies)
    elif kind == "mutated":
        body = draw_mutated(data, notification)
    else:
        body = draw_signed_content(data, sign_form)
    send_live(body)


@pytest.mark.django_db(transaction=True)
def test_the_oracle_and_the_live_server_agree_on_plain_cases(
    sandbox, tracked, notification, send_live, verifies
):
    """The fixed points of the properties above: a valid form and its JSON twin land, a
    signature one digit off and a body over the limit are refused."""
    form = notification("FZ-1", "SUCCESS")
    valid = Body(urlencode(form).encode(), FORM, intact=True)
    as_json = Body(json.dumps(form).encode(), JSON, intact=True)
    flipped = {**form, "sign": form["sign"][:-1] + ("0" if form["sign"][-1] != "0" else "1")}
    bad = Body(urlencode(flipped).encode(), FORM)
    huge = Body(urlencode({**form, "extra": "x" * 70_000}).encode(), FORM)
    assert verifies(valid.data, FORM) and verifies(as_json.data, JSON)
    assert not verifies(bad.data, FORM)
    for body in (valid, as_json, bad, huge):
        send_live(body)
    assert Refund.objects.get(trans_no="FZ-1").status == "SUCCESS"
