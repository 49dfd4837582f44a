"""POLYMERIZE_REFUND over real HTTP: signed applications in, signed answers out, refunds kept."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from hsq_refunds.gateway import signing
from hsq_refunds.sandbox import SandboxControl, SandboxServer
from hsq_refunds.sandbox.faults import APPLY, QUERY
from tests.sandbox.receiver import wait_until
from tests.sandbox.wire import (
    application,
    apply,
    apply_fields,
    platform_key,
    query,
    request_date,
    verified_failure,
    verified_result,
)

APPLY_RESULT_KEYS = {
    "merchantNo",
    "transNo",
    "tradeNo",
    "orderAmt",
    "orderStatus",
    "finishedDate",
    "respCode",
    "respMsg",
}


@pytest.fixture
def creds(hsq_sandbox_credentials):
    return hsq_sandbox_credentials


@pytest.fixture
def gateway(hsq_sandbox):
    return hsq_sandbox


def accepted(gateway, creds, trans_no, **kwargs):
    return verified_result(apply(gateway.url, creds, application(trans_no, **kwargs)), creds)


def refused(gateway, creds, business, **kwargs):
    return verified_failure(apply(gateway.url, creds, business, **kwargs), creds)


def test_an_accepted_application_is_a_signed_answer_and_a_queryable_refund(gateway, creds):
    gateway.configure_apply(balance_seconds=60)
    result = accepted(gateway, creds, "R1", orig_trans_no="P1", amount=250, extend="自定义")
    assert set(result) == APPLY_RESULT_KEYS
    assert (result["transNo"], result["merchantNo"], result["orderAmt"]) == (
        "R1",
        creds.merchant_no,
        "250",
    )
    assert (result["orderStatus"], result["finishedDate"]) == ("PROCESSING", "")
    assert len(result["tradeNo"]) == 32 and result["tradeNo"].isdigit()
    queried = verified_result(query(gateway.url, creds, "R1"), creds)
    assert queried["orderStatus"] == "PROCESSING"
    assert (queried["tradeNo"], queried["origTransNo"], queried["extend"]) == (
        result["tradeNo"],
        "P1",
        "自定义",
    )
    assert gateway.application_counts() == {"R1": {"received": 1, "accepted": 1}}
    assert gateway.query_counts() == {"R1": 1}


@pytest.mark.parametrize(
    ("kind", "status"), [("balance", "SUCCESS"), ("refuse", "FAIL"), ("card", "PROCESSING")]
)
def test_the_order_kind_decides_the_timeline(gateway, creds, kind, status):
    gateway.configure_apply(balance_seconds=0, refuse_seconds=0)
    gateway.add_order("P1", 1000, kind=kind)
    result = accepted(gateway, creds, "R1")
    assert result["orderStatus"] == status
    assert (result["finishedDate"] != "") == (status != "PROCESSING")
    assert verified_result(query(gateway.url, creds, "R1"), creds)["orderStatus"] == status


def test_a_balance_refund_succeeds_after_its_seconds(gateway, creds):
    gateway.configure_apply(balance_seconds=0.3)
    assert accepted(gateway, creds, "R1")["orderStatus"] == "PROCESSING"

    def status():
        result = verified_result(query(gateway.url, creds, "R1"), creds)
        return result if result["orderStatus"] != "PROCESSING" else None

    result = wait_until(status, what="SUCCESS")
    assert (result["orderStatus"], result["respCode"]) == ("SUCCESS", "200007")
    assert len(result["finishedDate"]) == 14


def test_the_default_timings(hsq_sandbox):
    assert hsq_sandbox.configure_apply() == {
        "balance_seconds": 2.0,
        "card_seconds": 3600.0,
        "refuse_seconds": 1.0,
    }


def test_amounts_and_refund_type_may_be_numeric_strings(gateway, creds):
    result = accepted(gateway, creds, "R1", orig_amount="1000", amount="100", refund_type="1")
    assert result["orderAmt"] == "100"
    assert accepted(gateway, creds, "R2", orig_amount="1000", amount=900)["orderAmt"] == "900"


def test_the_known_answer_layout_is_accepted(gateway, creds):
    """The business JSON of docs/protocol.md's second known answer, field for field."""
    business = {
        "transNo": "RF20240101120000001",
        "refundType": 1,
        "origTransNo": "DD20240101115900001",
        "origOrderAmt": 100,
        "orderAmt": 100,
        "requestDate": request_date(),
        "refundReason": "退款",
    }
    fields = apply_fields(creds, business)
    expected = (
        f"method=POLYMERIZE_REFUND&version=1.0&format=JSON&merchantNo={creds.merchant_no}"
        '&signType=RSA2&signContent={"transNo":"RF20240101120000001","refundType":1,'
        '"origTransNo":"DD20240101115900001","origOrderAmt":100,"orderAmt":100,'
        f'"requestDate":"{business["requestDate"]}","refundReason":"退款"}}&key={creds.sign_key}'
    )
    assert signing.request_sign_string(fields, creds.sign_key) == expected
    response = requests.post(gateway.url, data=fields, timeout=10)
    assert verified_result(response, creds)["transNo"] == "RF20240101120000001"


def test_special_characters_survive_the_form(gateway, creds):
    reason = "退款 & 重试=1+1 %20"
    result = accepted(gateway, creds, "R+1 &=中", reason=reason, extend="a&b=c+d%")
    assert result["transNo"] == "R+1 &=中"
    assert verified_result(query(gateway.url, creds, "R+1 &=中"), creds)["extend"] == "a&b=c+d%"


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"transNo": ""}, "transNo"),
        ({"transNo": "R" * 65}, "transNo"),
        ({"transNo": "R\t1"}, "transNo"),
        ({"transNo": 12}, "transNo"),
        ({"origTransNo": None}, "origTransNo"),
        ({"origTransNo": "P\n1"}, "origTransNo"),
        ({"refundType": "two"}, "refundType"),
        ({"refundType": True}, "refundType"),
        ({"refundType": 1.5}, "refundType"),
        ({"refundType": None}, "refundType"),
        ({"origOrderAmt": 0}, "origOrderAmt"),
        ({"origOrderAmt": "10.00"}, "origOrderAmt"),
        ({"origOrderAmt": 1000.0}, "origOrderAmt"),
        ({"origOrderAmt": 10**17}, "origOrderAmt"),
        ({"orderAmt": 0}, "orderAmt"),
        ({"orderAmt": "-1"}, "orderAmt"),
        ({"orderAmt": " 100"}, "orderAmt"),
        ({"orderAmt": False}, "orderAmt"),
        ({"orderAmt": None}, "orderAmt"),
        ({"requestDate": "2024-01-01 12:00:00"}, "requestDate"),
        ({"requestDate": "20241301120000"}, "requestDate"),
        ({"requestDate": 20240101120000}, "requestDate"),
        ({"refundReason": None}, "refundReason"),
        ({"refundReason": 7}, "refundReason"),
        ({"refundReason": "退\x00款"}, "refundReason"),
        ({"returnUrl": "ftp://example.com/notify"}, "returnUrl"),
        ({"returnUrl": "not a url"}, "returnUrl"),
        ({"returnUrl": "http://"}, "returnUrl"),
        ({"extend": 5}, "extend"),
        ({"extend": "\ud83d"}, "extend"),
    ],
)
def test_every_field_is_checked(gateway, creds, changes, name):
    business = application("R1")
    business.update(changes)
    business = {key: value for key, value in business.items() if value is not None}
    content = json.dumps(business, ensure_ascii=True, separators=(",", ":"))
    body = refused(gateway, creds, content)
    assert (body["errorCode"], body["errorMsg"]) == ("PARAM_ERROR", f"业务参数有误: {name}")
    counts = gateway.application_counts()
    assert [count["accepted"] for count in counts.values()] == [0] * len(counts)
    assert verified_result(query(gateway.url, creds, "R1"), creds)["respCode"] == "200004"


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '"R1"'])
def test_sign_content_must_be_a_json_object(gateway, creds, content):
    body = refused(gateway, creds, content)
    assert (body["errorCode"], body["errorMsg"]) == ("PARAM_ERROR", "业务参数有误: signContent")


def test_a_query_form_sent_as_an_application_is_refused(gateway, creds):
    body = refused(gateway, creds, {"transNo": "R1"})
    assert body["errorCode"] == "PARAM_ERROR"


@pytest.mark.parametrize(("offset", "ok"), [(-540, True), (540, True), (-660, False), (660, False)])
def test_the_request_date_must_be_within_ten_minutes(gateway, creds, offset, ok):
    business = application("R1", date=request_date(offset))
    response = apply(gateway.url, creds, business)
    if ok:
        assert verified_result(response, creds)["transNo"] == "R1"
    else:
        body = verified_failure(response, creds)
        assert (body["errorCode"], body["errorMsg"]) == (
            "REQUEST_DATE_ERROR",
            "请求时间与服务器时间相差超过10分钟",
        )


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"sign_key": "0" * 32}, "SIGN_ERROR"),
        ({"merchantNo": "888000000002"}, "MERCHANT_NOT_EXIST"),
        ({"version": "2.0"}, "PARAM_ERROR"),
        ({"signType": "RSA"}, "PARAM_ERROR"),
    ],
)
def test_envelope_errors_are_refused_before_the_fields(gateway, creds, kwargs, code):
    body = refused(gateway, creds, application("R1"), **kwargs)
    assert body["errorCode"] == code
    assert gateway.application_counts() == {"R1": {"received": 1, "accepted": 0}}


def test_a_signature_over_other_content_is_refused(gateway, creds):
    fields = apply_fields(creds, application("R1", amount=1))
    fields["signContent"] = fields["signContent"].replace('"orderAmt":1', '"orderAmt":999')
    body = verified_failure(requests.post(gateway.url, data=fields, timeout=10), creds)
    assert (body["errorCode"], body["errorMsg"]) == ("SIGN_ERROR", "验签失败")


def test_a_duplicate_trans_no_is_refused(gateway, creds):
    accepted(gateway, creds, "R1")
    body = refused(gateway, creds, application("R1"))
    assert (body["errorCode"], body["errorMsg"]) == ("REPEAT_ORDER", "订单号重复")
    gateway.add_refund("KNOWN", orig_trans_no="P9")
    assert refused(gateway, creds, application("KNOWN"))["errorCode"] == "REPEAT_ORDER"
    assert gateway.application_counts() == {
        "R1": {"received": 2, "accepted": 1},
        "KNOWN": {"received": 1, "accepted": 0},
    }


def test_refunds_cannot_exceed_what_is_left_of_the_order(gateway, creds):
    gateway.add_order("P1", 1000)
    accepted(gateway, creds, "R1", amount=600)
    body = refused(gateway, creds, application("R2", amount=500))
    assert (body["errorCode"], body["errorMsg"]) == ("REFUND_AMOUNT_EXCEED", "退款金额超过可退金额")
    accepted(gateway, creds, "R3", amount=400)
    assert refused(gateway, creds, application("R4", amount=1))["errorCode"] == (
        "REFUND_AMOUNT_EXCEED"
    )
    body = refused(gateway, creds, application("R5", orig_amount=1000, amount=1001))
    assert body["errorCode"] == "REFUND_AMOUNT_EXCEED"


def test_refunds_added_directly_count_against_their_order(gateway, creds):
    gateway.add_order("P1", 1000)
    gateway.add_refund("OLD", amount=900, orig_trans_no="P1", timeline=[{"status": "SUCCESS"}])
    assert refused(gateway, creds, application("R1", amount=101))["errorCode"] == (
        "REFUND_AMOUNT_EXCEED"
    )
    accepted(gateway, creds, "R1", amount=100)


def test_a_failed_refund_gives_its_amount_back(gateway, creds):
    gateway.configure_apply(refuse_seconds=0.3)
    gateway.add_order("P1", 1000, kind="refuse")
    assert accepted(gateway, creds, "R1", amount=1000)["orderStatus"] == "PROCESSING"
    assert refused(gateway, creds, application("R2", amount=1))["errorCode"] == (
        "REFUND_AMOUNT_EXCEED"
    )
    wait_until(
        lambda: verified_result(query(gateway.url, creds, "R1"), creds)["orderStatus"] == "FAIL",
        what="FAIL",
    )
    assert accepted(gateway, creds, "R2", amount=1000)["orderStatus"] == "PROCESSING"


def test_a_declared_amount_must_match(gateway, creds):
    gateway.add_order("P1", 1000)
    body = refused(gateway, creds, application("R1", orig_amount=999, amount=1))
    assert (body["errorCode"], body["errorMsg"]) == ("ORIG_ORDER_AMOUNT_ERROR", "原订单金额不符")


def test_an_undeclared_order_is_taken_at_its_first_amount(gateway, creds):
    accepted(gateway, creds, "R1", orig_trans_no="NEW", orig_amount=500, amount=100)
    body = refused(gateway, creds, application("R2", orig_trans_no="NEW", orig_amount=600))
    assert body["errorCode"] == "ORIG_ORDER_AMOUNT_ERROR"
    accepted(gateway, creds, "R3", orig_trans_no="NEW", orig_amount=500, amount=400)
    late = application("R4", orig_trans_no="NEW", orig_amount=500, amount=1)
    body = refused(gateway, creds, late)
    assert body["errorCode"] == "REFUND_AMOUNT_EXCEED"


def test_concurrent_applications_never_overspend_an_order(gateway, creds):
    gateway.add_order("P1", 100)

    def send(index: int) -> bool:
        response = apply(gateway.url, creds, application(f"C{index}", orig_amount=100, amount=10))
        return response.json()["success"] is True

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(send, range(20)))
    assert outcomes.count(True) == 10
    counts = gateway.application_counts()
    assert sum(count["received"] for count in counts.values()) == 20
    assert sum(count["accepted"] for count in counts.values()) == 10
    assert {f"C{i}" for i, ok in enumerate(outcomes) if ok} == {
        trans_no for trans_no, count in counts.items() if count["accepted"]
    }


# ------------------------------------------------------------------------------- faults


def test_accept_then_drop_records_the_refund_but_loses_the_answer(gateway, creds):
    gateway.set_fault("accept_then_drop", trans_no="R1")
    with pytest.raises(requests.ConnectionError):
        apply(gateway.url, creds, application("R1"))
    assert gateway.application_counts() == {"R1": {"received": 1, "accepted": 1}}
    assert verified_result(query(gateway.url, creds, "R1"), creds)["orderStatus"] == "PROCESSING"
    assert refused(gateway, creds, application("R1"))["errorCode"] == "REPEAT_ORDER"


def test_accept_then_delay_records_the_refund_and_answers_late(gateway, creds):
    gateway.set_fault("accept_then_delay", trans_no="R1", seconds=3)
    with pytest.raises(requests.Timeout):
        apply(gateway.url, creds, application("R1"), timeout=0.5)
    assert verified_result(query(gateway.url, creds, "R1"), creds)["transNo"] == "R1"
    assert gateway.application_counts() == {"R1": {"received": 1, "accepted": 1}}


def test_accept_then_faults_leave_queries_alone(gateway, creds):
    gateway.set_fault("accept_then_drop")
    verified_result(query(gateway.url, creds, "R1"), creds)  # not dropped, not used up
    with pytest.raises(requests.ConnectionError):
        apply(gateway.url, creds, application("R1"))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("drop", {}),
        ("http_error", {"status": 503}),
        ("spring_error", {}),
        ("unsigned_failure", {}),
        ("signed_failure", {"error_code": "SYSTEM_BUSY", "error_msg": "系统繁忙"}),
    ],
)
def test_faults_that_refuse_an_application_record_nothing(gateway, creds, name, params):
    gateway.set_fault(name, trans_no="R1", times=1, **params)
    try:
        response = apply(gateway.url, creds, application("R1"))
    except requests.ConnectionError:
        assert name == "drop"
    else:
        if name in ("http_error", "spring_error"):
            assert response.status_code == params.get("status", 500)
            assert set(response.json()) == {"timestamp", "status", "error", "message", "path"}
        else:
            body = response.json()
            assert body["success"] is False and body["result"] is None
            assert ("sign" in body) == (name == "signed_failure")
            if name == "signed_failure":
                assert verified_failure(response, creds)["errorCode"] == "SYSTEM_BUSY"
    assert gateway.application_counts() == {"R1": {"received": 1, "accepted": 0}}
    accepted(gateway, creds, "R1")  # the fault is used up, and nothing was recorded


def test_bad_signature_on_an_accepted_application(gateway, creds):
    gateway.set_fault("bad_signature", trans_no="R1")
    body = apply(gateway.url, creds, application("R1")).json()
    assert body["success"] is True and json.loads(body["result"])["transNo"] == "R1"
    text = signing.success_sign_string(body["result"], creds.sign_key)
    assert not signing.verify(platform_key(creds.platform_cert), text, body["sign"])
    assert gateway.application_counts()["R1"]["accepted"] == 1


def test_faults_aimed_at_one_method(gateway, creds):
    gateway.add_refund("Q1", timeline=[{"status": "SUCCESS"}])
    gateway.set_fault("http_error", method=QUERY)
    accepted(gateway, creds, "R1")
    assert query(gateway.url, creds, "Q1").status_code == 500
    gateway.clear_faults()
    gateway.set_fault("drop", method=APPLY)
    verified_result(query(gateway.url, creds, "Q1"), creds)
    with pytest.raises(requests.ConnectionError):
        apply(gateway.url, creds, application("R2"))


def test_a_fault_without_method_hits_both(gateway, creds):
    gateway.set_fault("http_error", times=2, status=502)
    assert query(gateway.url, creds, "Q1").status_code == 502
    assert apply(gateway.url, creds, application("R1")).status_code == 502
    accepted(gateway, creds, "R1")


def test_result_faults_alter_an_accepted_application(gateway, creds):
    gateway.set_fault("status", trans_no="R1", status="SUCCESS")
    result = accepted(gateway, creds, "R1")
    assert (result["orderStatus"], result["respCode"]) == ("SUCCESS", "200007")
    assert len(result["finishedDate"]) == 14
    gateway.set_fault("huge_amount", trans_no="R2")
    response = apply(gateway.url, creds, application("R2"))
    assert '"orderAmt":18446744073709551617' in response.json()["result"]
    assert verified_result(response, creds)["orderAmt"] == 2**64 + 1


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("accept_then_drop", {"method": QUERY}, "acts on"),
        ("notify_never", {"method": APPLY}, "acts on"),
        ("drop", {"method": "POLYMERIZE_CLOSE"}, "method"),
        ("accept_then_delay", {}, "seconds"),
        ("status", {"status": "DONE"}, "status"),
        ("status", {}, "status"),
        ("verbatim_result", {}, "result"),
        ("verbatim_result", {"result": "\ud83d"}, "surrogate"),
        ("huge_amount", {"amount": 1.5}, "integer"),
        ("trickle", {"chunk": 0}, "chunk"),
    ],
)
def test_invalid_new_faults_are_refused(gateway, name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gateway.set_fault(name, **kwargs)
    with pytest.raises(ValueError, match=match):
        gateway.control.set_fault(name, **kwargs)


# ------------------------------------------------------------------- control and scenario


def test_the_control_endpoint_drives_applications(gateway, creds):
    with SandboxControl(gateway.control_url) as control:
        control.add_order("P1", 300, kind="refuse")
        assert control.add_orders([{"origTransNo": f"B{i}", "amount": 5} for i in range(3)]) == 3
        assert control.configure_apply(refuse_seconds=0)["refuse_seconds"] == 0
        assert accepted(gateway, creds, "R1", orig_amount=300, amount=300)["orderStatus"] == "FAIL"
        control.set_fault("signed_failure", method=APPLY, times=1)
        refused(gateway, creds, application("R2", orig_trans_no="B1", orig_amount=5, amount=5))
        assert control.application_counts() == {
            "R1": {"received": 1, "accepted": 1},
            "R2": {"received": 1, "accepted": 0},
        }
        assert control.application_counts() == gateway.application_counts()
        raw = requests.get(gateway.control_url + "/counts", timeout=10).json()
        assert raw == {"counts": {}, "applications": control.application_counts()}
        with pytest.raises(ValueError, match="kind"):
            control.add_order("P2", 100, kind="cash")
        with pytest.raises(ValueError, match="amount"):
            control.add_orders([{"origTransNo": "P2", "amount": "100"}])
        with pytest.raises(ValueError, match="balance_secs"):
            control.configure_apply(balance_secs=1)
        with pytest.raises(ValueError, match="card_seconds"):
            control.configure_apply(card_seconds=-1)
        control.reset()
        assert control.application_counts() == {}
        assert control.configure_apply()["refuse_seconds"] == 1.0


def test_reset_forgets_orders_and_applications_and_restores_the_timings(gateway, creds):
    gateway.add_order("P1", 100)
    gateway.configure_apply(balance_seconds=0)
    accepted(gateway, creds, "R1", orig_amount=100, amount=100)
    gateway.reset()
    assert gateway.application_counts() == {}
    assert gateway.configure_apply()["balance_seconds"] == 2.0
    result = accepted(gateway, creds, "R1", orig_amount=50, amount=50)  # P1 forgotten too
    assert result["orderStatus"] == "PROCESSING"


def test_a_scenario_declares_orders_timings_and_method_faults(creds, tmp_path):
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            {
                "orders": [
                    {"origTransNo": "P1", "amount": 100, "kind": "card"},
                    {"origTransNo": "P2", "amount": 100},
                ],
                "apply": {"balance_seconds": 0},
                "notify": {"schedule": [0.1], "method": "REFUND_NOTIFY"},
                "faults": [
                    {"name": "http_error", "method": QUERY, "status": 503},
                    {"name": "status", "transNo": "R0", "status": "FAIL", "times": 1},
                ],
            }
        )
    )
    with SandboxServer(creds, scenario=scenario) as server:
        # The fault alters the answer only: the refund stays PROCESSING and keeps its 1 fen.
        assert accepted(server, creds, "R0", orig_amount=100, amount=1)["orderStatus"] == "FAIL"
        assert refused(server, creds, application("R1", orig_amount=100))["errorCode"] == (
            "REFUND_AMOUNT_EXCEED"
        )
        result = accepted(server, creds, "R1", orig_amount=100, amount=99)
        assert result["orderStatus"] == "PROCESSING"
        result = accepted(server, creds, "R2", orig_trans_no="P2", orig_amount=100)
        assert result["orderStatus"] == "SUCCESS"
        assert query(server.url, creds, "R1").status_code == 503
        server.reset()  # a scenario's settings are the base that reset returns to
        assert server.configure_apply()["balance_seconds"] == 0
        assert server.configure_notify()["method"] == "REFUND_NOTIFY"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"orders": [{"origTransNo": "P1", "amount": 0}]}, "amount"),
        ({"orders": [{"origTransNo": "P1", "amount": 1, "colour": "red"}]}, "colour"),
        ({"apply": {"balance_seconds": "2"}}, "balance_seconds"),
        ({"notify": {"schedule": "1,2"}}, "schedule"),
        ({"notify": {"read_timeout": 0}}, "read_timeout"),
        ({"refund": []}, "only"),
    ],
)
def test_bad_scenarios_are_refused(creds, tmp_path, data, match):
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        SandboxServer(creds, scenario=scenario)
