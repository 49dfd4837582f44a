"""The sandbox answers HSQ's refund query over real HTTP, signed both ways, as
docs/protocol.md says."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse

import pytest
import requests

from hsq_refunds.gateway import signing
from tests.sandbox.wire import failure_verifies, query, signed_fields, verified_result

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def ago(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)


@pytest.fixture
def creds(hsq_sandbox_credentials):
    return hsq_sandbox_credentials


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


def test_signed_query_gets_a_verifiable_double_encoded_answer(hsq_sandbox, creds, session):
    hsq_sandbox.add_refund("R1", amount=250, orig_trans_no="P1", extend="自定义参数")
    result = verified_result(query(hsq_sandbox.url, creds, "R1", session=session), creds)
    assert result == {
        "extend": "自定义参数",
        "finishedDate": "",
        "merchantNo": creds.merchant_no,
        "orderAmt": "250",
        "orderStatus": "PROCESSING",
        "origTransNo": "P1",
        "respCode": "100201",
        "respMsg": "交易处理中,请稍后查询",
        "tradeNo": result["tradeNo"],
        "transNo": "R1",
    }
    assert len(result["tradeNo"]) == 32 and result["tradeNo"].isdigit()


def test_given_trade_no_and_merchant_no_are_answered(hsq_sandbox, creds):
    hsq_sandbox.add_refund("R1", trade_no="T" * 32, merchant_no="888000000999")
    result = verified_result(query(hsq_sandbox.url, creds, "R1"), creds)
    assert (result["tradeNo"], result["merchantNo"]) == ("T" * 32, "888000000999")


def test_the_timeline_moves_with_the_refund_age(hsq_sandbox, creds, session):
    created = ago(45)
    hsq_sandbox.add_refund("OLD", created_at=created)  # default: PROCESSING 30 s, then SUCCESS
    hsq_sandbox.add_refund("NEW")
    old = verified_result(query(hsq_sandbox.url, creds, "OLD", session=session), creds)
    new = verified_result(query(hsq_sandbox.url, creds, "NEW", session=session), creds)
    assert (old["orderStatus"], old["respCode"], old["respMsg"]) == (
        "SUCCESS",
        "200007",
        "查询成功",
    )
    expected = (created + dt.timedelta(seconds=30)).astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")
    assert old["finishedDate"] == expected
    assert new["orderStatus"] == "PROCESSING" and new["finishedDate"] == ""


@pytest.mark.parametrize(
    ("age", "status", "resp_code", "finished_offset"),
    [
        (5, "INIT", "200007", None),
        (15, "PROCESSING", "100201", None),
        (25, "FAIL", "200007", 20),
        (100, "SUCCESS", "200007", 30),  # an anomaly the client must record, not apply
    ],
)
def test_every_status_step(hsq_sandbox, creds, age, status, resp_code, finished_offset):
    created = ago(age)
    timeline = [
        {"status": "INIT", "seconds": 10},
        {"status": "PROCESSING", "seconds": 10},
        {"status": "FAIL", "seconds": 10},
        {"status": "SUCCESS"},
    ]
    hsq_sandbox.add_refund("R1", timeline=timeline, created_at=created)
    result = verified_result(query(hsq_sandbox.url, creds, "R1"), creds)
    assert (result["orderStatus"], result["respCode"]) == (status, resp_code)
    if finished_offset is None:
        assert result["finishedDate"] == ""
    else:
        began = created + dt.timedelta(seconds=finished_offset)
        assert result["finishedDate"] == began.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("200021", "订单号有误或超过查询期限!"),
        ("200008", "查询失败"),
        ("200004", "订单不存在"),
        ("200009", "查询结果集为空"),
    ],
)
def test_resp_code_steps_answer_without_order_status(hsq_sandbox, creds, code, message):
    timeline = [{"status": "PROCESSING", "seconds": 60}, {"respCode": code}]
    hsq_sandbox.add_refund("EXPIRED", timeline=timeline, created_at=ago(61))
    hsq_sandbox.add_refund("YOUNG", timeline=timeline)
    result = verified_result(query(hsq_sandbox.url, creds, "EXPIRED"), creds)
    assert result == {
        "merchantNo": creds.merchant_no,
        "transNo": "EXPIRED",
        "respCode": code,
        "respMsg": message,
    }
    young = verified_result(query(hsq_sandbox.url, creds, "YOUNG"), creds)
    assert young["orderStatus"] == "PROCESSING"


def test_unknown_trans_no_is_a_signed_200004(hsq_sandbox, creds):
    result = verified_result(query(hsq_sandbox.url, creds, "NOPE"), creds)
    assert result == {
        "merchantNo": creds.merchant_no,
        "transNo": "NOPE",
        "respCode": "200004",
        "respMsg": "订单不存在",
    }


def test_a_refund_created_in_the_future_is_not_visible_yet(hsq_sandbox, creds):
    hsq_sandbox.add_refund("R1", created_at=ago(-3600), timeline=[{"status": "SUCCESS"}])
    assert verified_result(query(hsq_sandbox.url, creds, "R1"), creds)["respCode"] == "200004"


def test_lowercase_format_is_accepted(hsq_sandbox, creds):
    hsq_sandbox.add_refund("R1")
    response = query(hsq_sandbox.url, creds, "R1", format="json")
    assert verified_result(response, creds)["transNo"] == "R1"


def signed_failure(response, creds) -> dict:
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False and body["result"] is None
    assert failure_verifies(body, creds), body
    return body


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"sign_key": "0" * 32}, "SIGN_ERROR"),
        ({"merchantNo": "888000000002"}, "MERCHANT_NOT_EXIST"),
        ({"method": "POLYMERIZE_CLOSE"}, "METHOD_NOT_SUPPORTED"),
        ({"version": "2.0"}, "PARAM_ERROR"),
        ({"format": "XML"}, "PARAM_ERROR"),
        ({"signType": "RSA"}, "PARAM_ERROR"),
        ({"signContent": '{"orderNo":"R1"}'}, "PARAM_ERROR"),
    ],
)
def test_bad_requests_get_signed_failures(hsq_sandbox, creds, kwargs, code):
    body = signed_failure(query(hsq_sandbox.url, creds, "R1", **kwargs), creds)
    assert body["errorCode"] == code and body["errorMsg"]


def test_a_signature_by_another_key_is_refused(hsq_sandbox, creds, tmp_path):
    from hsq_refunds.sandbox import create_credentials

    other = create_credentials(
        tmp_path, key_size=1024, platform_key_size=1024, sign_key=creds.sign_key
    )
    from tests.sandbox.wire import merchant_key

    stranger = merchant_key(other.private_key, other.private_key_password)
    body = signed_failure(query(hsq_sandbox.url, creds, "R1", private_key=stranger), creds)
    assert (body["errorCode"], body["errorMsg"]) == ("SIGN_ERROR", "验签失败")


def test_signature_covers_the_received_values(hsq_sandbox, creds):
    hsq_sandbox.add_refund("R1")
    hsq_sandbox.add_refund("R2")
    fields = signed_fields(creds, "R1")
    fields["signContent"] = '{"transNo":"R2"}'
    body = signed_failure(requests.post(hsq_sandbox.url, data=fields, timeout=10), creds)
    assert body["errorCode"] == "SIGN_ERROR"
    # The same content with other spacing is another string: signed as sent, it is accepted.
    spaced = signed_fields(creds, "R1", signContent='{"transNo": "R1"}')
    response = requests.post(hsq_sandbox.url, data=spaced, timeout=10)
    assert verified_result(response, creds)["transNo"] == "R1"


def test_missing_fields_and_non_form_bodies(hsq_sandbox, creds):
    fields = signed_fields(creds, "R1")
    del fields["sign"]
    body = signed_failure(requests.post(hsq_sandbox.url, data=fields, timeout=10), creds)
    assert body["errorCode"] == "PARAM_ERROR" and "sign" in body["errorMsg"]
    garbage = requests.post(hsq_sandbox.url, data=b"\xff\xfe", timeout=10)
    assert signed_failure(garbage, creds)["errorCode"] == "PARAM_ERROR"


def test_form_encoding_of_special_characters(hsq_sandbox, creds):
    trans_no = "R+1 &=中"
    hsq_sandbox.add_refund(trans_no)
    body = urllib.parse.urlencode(signed_fields(creds, trans_no))
    response = requests.post(
        hsq_sandbox.url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert verified_result(response, creds)["transNo"] == trans_no


def test_other_paths_and_methods_get_spring_errors(hsq_sandbox):
    base = hsq_sandbox.url.removesuffix("/api/acquiring")
    response = requests.post(base + "/api/other", data={"a": "b"}, timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    body = response.json()
    assert set(body) == {"timestamp", "status", "error", "message", "path"}
    assert (body["status"], body["error"], body["path"]) == (404, "Not Found", "/api/other")
    response = requests.get(hsq_sandbox.url, timeout=10)
    assert response.status_code == 405 and response.json()["status"] == 405


def test_counts_every_query_whose_trans_no_is_readable(hsq_sandbox, creds, session):
    hsq_sandbox.add_refund("R1")
    for _ in range(3):
        query(hsq_sandbox.url, creds, "R1", session=session)
    query(hsq_sandbox.url, creds, "R1", session=session, sign_key="f" * 32)  # bad signature
    query(hsq_sandbox.url, creds, "GHOST", session=session)
    hsq_sandbox.set_fault("drop", trans_no="R2")
    with pytest.raises(requests.ConnectionError):
        query(hsq_sandbox.url, creds, "R2", session=session)
    session.post(hsq_sandbox.url, data={"signContent": "not json"}, timeout=10)
    assert hsq_sandbox.query_counts() == {"R1": 4, "GHOST": 1, "R2": 1}


def test_reset_forgets_refunds_faults_and_counts(hsq_sandbox, creds):
    hsq_sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
    hsq_sandbox.set_fault("http_error", trans_no="R2")
    query(hsq_sandbox.url, creds, "R1")
    hsq_sandbox.reset()
    assert hsq_sandbox.query_counts() == {}
    assert verified_result(query(hsq_sandbox.url, creds, "R1"), creds)["respCode"] == "200004"
    assert query(hsq_sandbox.url, creds, "R2").status_code == 200


def test_many_concurrent_keep_alive_clients(hsq_sandbox, creds):
    from concurrent.futures import ThreadPoolExecutor

    hsq_sandbox.add_refunds([{"transNo": f"C{i}", "amount": i} for i in range(40)])
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=20)
    with requests.Session() as shared:
        shared.mount("http://", adapter)
        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(
                pool.map(
                    lambda i: query(hsq_sandbox.url, creds, f"C{i % 40}", session=shared),
                    range(400),
                )
            )
    amounts = [int(verified_result(r, creds)["orderAmt"]) for r in responses]
    assert amounts == [i % 40 for i in range(400)]
    assert hsq_sandbox.query_counts() == {f"C{i}": 10 for i in range(40)}


def test_add_refunds_is_all_or_nothing(hsq_sandbox, creds):
    with pytest.raises(ValueError, match="R2"):
        hsq_sandbox.add_refunds([{"transNo": "R1"}, {"transNo": "R2", "amount": -1}])
    assert verified_result(query(hsq_sandbox.url, creds, "R1"), creds)["respCode"] == "200004"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeline": [{"status": "PROCESSING"}, {"status": "SUCCESS"}]}, "seconds"),
        ({"timeline": [{"status": "DONE"}]}, "status"),
        ({"timeline": [{"respCode": "999999"}]}, "respCode"),
        ({"timeline": [{"status": "SUCCESS", "respCode": "200004"}]}, "either"),
        ({"timeline": []}, "non-empty"),
        ({"amount": 1.5}, "amount"),
        ({"created_at": dt.datetime(2024, 1, 1)}, "timezone"),
    ],
)
def test_invalid_refunds_are_refused(hsq_sandbox, kwargs, match):
    with pytest.raises(ValueError, match=match):
        hsq_sandbox.add_refund("R1", **kwargs)


def test_unknown_spec_keys_are_refused(hsq_sandbox):
    with pytest.raises(ValueError, match="amout"):
        hsq_sandbox.add_refunds([{"transNo": "R1", "amout": 5}])


def test_scenario_file(hsq_sandbox_credentials, tmp_path):
    from hsq_refunds.sandbox import SandboxServer

    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            {
                "refunds": [
                    {"transNo": "S1", "amount": 7, "timeline": [{"status": "SUCCESS"}]},
                    {"transNo": "S2"},
                ],
                "faults": [{"name": "http_error", "transNo": "S2", "status": 502}],
            }
        )
    )
    creds = hsq_sandbox_credentials
    with SandboxServer(creds, scenario=scenario) as server:
        result = verified_result(query(server.url, creds, "S1"), creds)
        assert (result["orderStatus"], result["orderAmt"]) == ("SUCCESS", "7")
        assert query(server.url, creds, "S2").status_code == 502


def test_bad_scenario_file_is_refused(hsq_sandbox_credentials, tmp_path):
    from hsq_refunds.sandbox import SandboxServer

    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"faults": [{"name": "explode"}]}))
    with pytest.raises(ValueError, match="explode"):
        SandboxServer(hsq_sandbox_credentials, scenario=scenario)


def test_stop_closes_keep_alive_connections(hsq_sandbox_credentials):
    from hsq_refunds.sandbox import SandboxServer

    creds = hsq_sandbox_credentials
    server = SandboxServer(creds).start()
    url = server.url
    with requests.Session() as pooled:
        verified_result(query(url, creds, "R1", session=pooled), creds)
        server.stop()
        with pytest.raises(requests.ConnectionError):
            query(url, creds, "R1", session=pooled)
    with pytest.raises(RuntimeError):
        _ = server.port


def test_request_signature_is_what_hsq_expects(hsq_sandbox, creds):
    """The sign string layout is the protocol's, not the sandbox's own invention."""
    fields = signed_fields(creds, "R1")
    expected = (
        f"method=POLYMERIZE_REFUND_QUERY&version=1.0&format=JSON&merchantNo={creds.merchant_no}"
        f'&signType=RSA2&signContent={{"transNo":"R1"}}&key={creds.sign_key}'
    )
    assert signing.request_sign_string(fields, creds.sign_key) == expected
