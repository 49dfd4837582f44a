"""``python -m hsq_refunds query-refund`` against the sandbox, as a merchant would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hsq_refunds import cli
from hsq_refunds.gateway import HsqError

from .conftest import REPO_ROOT


@pytest.fixture
def env(hsq_sandbox, hsq_sandbox_credentials) -> dict[str, str]:
    credentials = hsq_sandbox_credentials
    return {
        "PATH": os.environ.get("PATH", ""),
        "HSQ_MERCHANT_NO": credentials.merchant_no,
        "HSQ_SIGN_KEY": credentials.sign_key,
        "HSQ_PRIVATE_KEY": credentials.private_key,
        "HSQ_PRIVATE_KEY_PASSWORD": credentials.private_key_password,
        "HSQ_PLATFORM_CERT": Path(credentials.platform_cert).read_text(),  # as text
        "HSQ_BASE_URL": hsq_sandbox.url,
    }


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "hsq_refunds", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr
    for name in ("HSQ_SIGN_KEY", "HSQ_PRIVATE_KEY_PASSWORD"):
        if env.get(name):
            assert env[name] not in done.stderr + done.stdout
    return done


def test_success_prints_one_json_object(hsq_sandbox, env):
    hsq_sandbox.add_refund(
        "R1", amount=2500, timeline=[{"status": "SUCCESS"}], orig_trans_no="P1", extend="备注"
    )
    done = run(["query-refund", "R1"], env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "备注" in done.stdout  # not \u-escaped
    printed = json.loads(done.stdout)
    assert printed["transNo"] == "R1"
    assert printed["orderStatus"] == "SUCCESS"
    assert printed["orderAmt"] == 2500
    assert printed["origTransNo"] == "P1"
    assert printed["respCode"] == "200007"
    assert len(printed["finishedDate"]) == 14
    assert set(printed) == {
        "merchantNo", "transNo", "origTransNo", "tradeNo", "orderAmt", "orderStatus",
        "finishedDate", "respCode", "respMsg", "extend",
    }  # fmt: skip


def test_a_refund_hsq_does_not_know_exits_with_not_found(env):
    done = run(["query-refund", "NOPE"], env)
    assert done.returncode == cli.EXIT_NOT_FOUND == 8, done.stderr
    assert done.stderr == ""
    printed = json.loads(done.stdout)  # the verified answer, printed all the same
    assert (printed["transNo"], printed["respCode"], printed["orderStatus"]) == (
        "NOPE",
        "200004",
        "",
    )
    assert printed["respMsg"] == "订单不存在"


def test_an_empty_result_is_not_found_too(hsq_sandbox, env):
    hsq_sandbox.add_refund("R-EMPTY", timeline=[{"respCode": "200009"}])
    done = run(["query-refund", "R-EMPTY"], env)
    assert done.returncode == cli.EXIT_NOT_FOUND
    assert json.loads(done.stdout)["respCode"] == "200009"


def test_a_refund_hsq_knows_is_not_not_found(hsq_sandbox, env):
    hsq_sandbox.add_refund("R-SLOW", timeline=[{"status": "PROCESSING"}])
    done = run(["query-refund", "R-SLOW"], env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["orderStatus"] == "PROCESSING"


def test_verbose_logs_the_query_without_secrets(hsq_sandbox, env):
    hsq_sandbox.add_refund("R-VERBOSE", timeline=[{"status": "FAIL"}])
    done = run(["query-refund", "-v", "R-VERBOSE"], env)
    assert done.returncode == 0
    assert "transNo=R-VERBOSE" in done.stderr
    assert "outcome=ok" in done.stderr


@pytest.mark.parametrize(
    ("fault", "params", "error", "exit_code"),
    [
        ("http_error", {"status": 404}, "TransportError", 3),
        ("signed_failure", {"error_code": "LIMIT", "error_msg": "请求过于频繁"}, "GatewayError", 4),
        ("bad_signature", {}, "SignatureError", 5),
        ("wrong_trans_no", {}, "ResponseError", 6),
    ],
)
def test_each_error_class_has_its_exit_code(hsq_sandbox, env, fault, params, error, exit_code):
    hsq_sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
    hsq_sandbox.set_fault(fault, **params)
    done = run(["query-refund", "R1"], env)
    assert done.returncode == exit_code
    assert done.stdout == ""
    assert done.stderr.startswith(f"error: {error}: ")
    assert done.stderr.count("\n") == 1
    if error == "GatewayError":
        assert "LIMIT" in done.stderr and "请求过于频繁" in done.stderr


def test_invalid_trans_no(env):
    done = run(["query-refund", "x" * 65], env)
    assert done.returncode == 7
    assert done.stderr.startswith("error: InvalidRequestError: ")


@pytest.mark.parametrize(
    "missing", ["HSQ_MERCHANT_NO", "HSQ_SIGN_KEY", "HSQ_PRIVATE_KEY", "HSQ_PLATFORM_CERT"]
)
def test_missing_setting_names_flag_and_variable(env, missing):
    env[missing] = ""
    done = run(["query-refund", "R1"], env)
    assert done.returncode == 2
    flag = "--" + missing.removeprefix("HSQ_").lower().replace("_", "-")
    assert done.stderr.startswith("error: ConfigurationError: ")
    assert missing in done.stderr and flag in done.stderr


def test_wrong_key_password(env):
    env["HSQ_PRIVATE_KEY_PASSWORD"] = "wrong-Password-1"
    done = run(["query-refund", "R1"], env)
    assert done.returncode == 2
    assert "wrong password" in done.stderr


def test_flags_override_the_environment(hsq_sandbox, env):
    done = run(["query-refund", "--merchant-no", "999", "R1"], env)
    assert done.returncode == 4
    assert "MERCHANT_NOT_EXIST" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["query-refund"],
        ["query-refund", "R1", "R2"],
        ["query-refund", "--nope", "R1"],
        ["query-refund", "--timeout", "soon", "R1"],
        ["query-refund", "--timeout", "-1", "R1"],
        ["query-refund", "--environment", "staging", "R1"],
        ["refund", "R1"],
    ],
)
def test_usage_errors_exit_64(args, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(args, environ={})
    assert caught.value.code == cli.EXIT_USAGE == 64
    assert "usage:" in capsys.readouterr().err


def test_usage_error_as_a_process(env):
    done = run(["query-refund"], env)
    assert done.returncode == 64
    assert "usage:" in done.stderr


def test_bad_timeout_from_the_environment(env, capsys):
    env["HSQ_TIMEOUT"] = "forever"
    assert cli.main(["query-refund", "R1"], environ=env) == 2
    assert "HSQ_TIMEOUT" in capsys.readouterr().err


def test_bad_environment_from_the_environment(env, capsys):
    del env["HSQ_BASE_URL"]
    env["HSQ_ENVIRONMENT"] = "staging"
    assert cli.main(["query-refund", "R1"], environ=env) == 2
    assert "unknown environment 'staging'" in capsys.readouterr().err


def test_timeout_flag(hsq_sandbox, env, capsys):
    hsq_sandbox.set_fault("latency", seconds=1.0)
    assert cli.main(["query-refund", "--timeout", "0.2", "R1"], environ=env) == 3
    assert "read timeout 0.2s" in capsys.readouterr().err


def test_control_characters_from_the_gateway_are_escaped(hsq_sandbox, env, capsys):
    hsq_sandbox.set_fault("unsigned_failure", error_code="E\x1b[31m", error_msg="line\nbreak")
    assert cli.main(["query-refund", "R1"], environ=env) == 4
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert err.count("\n") == 1
    assert "\\x1b[31m" in err and "line\\nbreak" in err


def test_exit_codes_table():
    assert cli.EXIT_CODES == {
        "ConfigurationError": 2,
        "TransportError": 3,
        "GatewayError": 4,
        "SignatureError": 5,
        "ResponseError": 6,
        "InvalidRequestError": 7,
    }


def test_not_found_has_an_exit_status_of_its_own():
    taken = {0, *cli.EXIT_CODES.values(), cli.EXIT_USAGE, cli.EXIT_INTERNAL, cli.EXIT_INTERRUPTED}
    assert cli.EXIT_NOT_FOUND not in taken | {HsqError.exit_code}


# --------------------------------------------------------------------------- apply-refund


def test_apply_refund_applies_once_and_prints_the_verified_result(hsq_sandbox, env):
    done = run(
        [
            "apply-refund",
            "--orig-trans-no",
            "PO-CLI",
            "--orig-amount",
            "5000",
            "--amount",
            "1234",
            "--trans-no",
            "RF-CLI-1",
            "--reason",
            "七天无理由退货",
        ],
        env,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert (printed["transNo"], printed["orderStatus"]) == ("RF-CLI-1", "PROCESSING")
    assert hsq_sandbox.application_counts()["RF-CLI-1"]["received"] == 1
    # HSQ now knows it: the query finds it.
    assert json.loads(run(["query-refund", "RF-CLI-1"], env).stdout)["transNo"] == "RF-CLI-1"


def test_apply_refund_refused_by_hsq_is_a_gateway_error(hsq_sandbox, env):
    hsq_sandbox.add_orders([{"origTransNo": "PO-SMALL", "amount": 100}])
    order = ["apply-refund", "--orig-trans-no", "PO-SMALL", "--orig-amount", "100"]
    done = run([*order, "--amount", "100", "--trans-no", "RF-CLI-2"], env)
    assert done.returncode == 0, done.stderr  # the whole order, once
    again = run([*order, "--amount", "1", "--trans-no", "RF-CLI-3"], env)
    assert again.returncode == 4  # GatewayError: HSQ refused (nothing left of the order)
    assert "RF-CLI-3" in again.stderr and "refused" in again.stderr
