"""The control endpoint drives a sandbox from another process; the pytest fixtures work."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from hsq_refunds.sandbox import SandboxControl
from tests.sandbox.wire import query, verified_result


@pytest.fixture
def control(hsq_sandbox):
    with SandboxControl(hsq_sandbox.control_url) as client:
        yield client


def test_round_trip(hsq_sandbox, hsq_sandbox_credentials, control):
    creds = hsq_sandbox_credentials
    created = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=90)
    control.add_refund(
        "R1",
        amount=555,
        orig_trans_no="P1",
        extend="x",
        trade_no="9" * 32,
        created_at=created,
        timeline=[{"status": "PROCESSING", "seconds": 60}, {"status": "FAIL"}],
    )
    result = verified_result(query(hsq_sandbox.url, creds, "R1"), creds)
    assert (result["orderStatus"], result["orderAmt"], result["tradeNo"]) == (
        "FAIL",
        "555",
        "9" * 32,
    )
    assert (result["origTransNo"], result["extend"]) == ("P1", "x")

    assert control.add_refunds([{"transNo": f"B{i}"} for i in range(500)]) == 500
    control.set_fault("http_error", trans_no="B1", times=1, status=502)
    assert query(hsq_sandbox.url, creds, "B1").status_code == 502
    control.set_fault("drop")
    with pytest.raises(requests.ConnectionError):
        query(hsq_sandbox.url, creds, "B2")
    control.clear_faults()
    verified_result(query(hsq_sandbox.url, creds, "B2"), creds)
    assert control.query_counts() == {"R1": 1, "B1": 1, "B2": 2}
    assert control.query_counts() == hsq_sandbox.query_counts()

    control.reset()
    assert control.query_counts() == {}
    assert verified_result(query(hsq_sandbox.url, creds, "R1"), creds)["respCode"] == "200004"


def test_server_exposes_its_own_control(hsq_sandbox):
    hsq_sandbox.control.add_refund("R1")
    hsq_sandbox.control.set_fault("latency", seconds=0)
    assert hsq_sandbox.control.query_counts() == {}


def test_bad_input_is_a_value_error_with_the_servers_reason(control):
    with pytest.raises(ValueError, match="amount"):
        control.add_refunds([{"transNo": "R1", "amount": "100"}])
    with pytest.raises(ValueError, match="unknown fault"):
        control.set_fault("explode")


def test_raw_control_endpoint_rejects_bad_json_and_unknown_routes(hsq_sandbox):
    base = hsq_sandbox.control_url
    response = requests.post(base + "/refunds", data=b"{not json", timeout=10)
    assert response.status_code == 400 and "error" in response.json()
    response = requests.post(base + "/faults", json={"name": "drop", "sedonds": 1}, timeout=10)
    assert response.status_code == 400 and "sedonds" in response.json()["error"]
    assert requests.get(base + "/nothing", timeout=10).status_code == 404
    assert requests.get(base + "/reset", timeout=10).status_code == 405


def test_hsq_sandbox_resets_before_each_test(request, hsq_sandbox_server, hsq_sandbox_credentials):
    hsq_sandbox_server.add_refund("LEFTOVER")
    query(hsq_sandbox_server.url, hsq_sandbox_credentials, "LEFTOVER")
    hsq_sandbox_server.set_fault("drop")
    sandbox = request.getfixturevalue("hsq_sandbox")
    assert sandbox is hsq_sandbox_server
    assert sandbox.query_counts() == {}
    result = verified_result(
        query(sandbox.url, hsq_sandbox_credentials, "LEFTOVER"), hsq_sandbox_credentials
    )
    assert result["respCode"] == "200004"


def test_settings_fixture_points_at_the_sandbox(hsq_sandbox, hsq_sandbox_settings):
    from hsq_refunds.gateway import keys

    assert hsq_sandbox_settings["BASE_URL"] == hsq_sandbox.url
    ((merchant_no, account),) = hsq_sandbox_settings["MERCHANTS"].items()
    assert merchant_no == hsq_sandbox.credentials.merchant_no
    assert set(account) == {"SIGN_KEY", "PRIVATE_KEY", "PRIVATE_KEY_PASSWORD", "PLATFORM_CERT"}
    keys.load_private_key(account["PRIVATE_KEY"], account["PRIVATE_KEY_PASSWORD"])
    keys.load_platform_key(account["PLATFORM_CERT"])


def test_the_sandbox_and_its_plugin_import_no_django():
    code = (
        "import sys, hsq_refunds.sandbox, hsq_refunds.sandbox.pytest_plugin, "
        "hsq_refunds.sandbox.cli\n"
        "loaded = [m for m in sys.modules if m == 'django' or m.startswith('django.')]\n"
        "assert not loaded, loaded"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert completed.returncode == 0, completed.stderr
