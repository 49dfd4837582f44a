"""``python -m hsq_refunds apply-refund``: arguments, exit codes and the printed JSON, against a
local stub gateway that answers applications signed with a test platform key."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from hsq_refunds import cli

from .conftest import REPO_ROOT
from .support import MERCHANT_NO, SIGN_KEY, apply_result, failure_body, success_body

PASSWORD = "cli-Password-42"
REQUIRED = ["--orig-trans-no", "PAY1", "--orig-amount", "2000", "--amount", "1500"]


@pytest.fixture
def stub(recording_gateway, platform_private):
    """Accepts every application, answering about the transNo it was sent."""

    def accept(request):
        content = json.loads(request.form["signContent"])
        fields = apply_result(transNo=content["transNo"], orderAmt=content["orderAmt"])
        return 200, {}, success_body(platform_private, fields)

    recording_gateway.responder = accept
    return recording_gateway


@pytest.fixture
def env(stub, merchant_private, platform_public) -> dict[str, str]:
    private_pem = merchant_private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    ).decode()
    public_pem = platform_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return {
        "PATH": os.environ.get("PATH", ""),
        "HSQ_MERCHANT_NO": MERCHANT_NO,
        "HSQ_SIGN_KEY": SIGN_KEY,
        "HSQ_PRIVATE_KEY": private_pem,
        "HSQ_PRIVATE_KEY_PASSWORD": PASSWORD,
        "HSQ_PLATFORM_CERT": public_pem,
        "HSQ_BASE_URL": stub.url,
    }


def run(args, env, capsys):
    """``main`` in process: exit status, stdout, stderr (checked for secrets and tracebacks)."""
    code = cli.main(["apply-refund", *args], environ=env)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    for secret in (SIGN_KEY, PASSWORD):
        assert secret not in out + err
    return code, out, err


def sent(stub, index=-1) -> dict:
    return json.loads(stub.requests[index].form["signContent"])


def test_success_prints_one_json_object(stub, env, capsys):
    code, out, err = run([*REQUIRED, "--trans-no", "RF-CLI-1", "--reason", "退货"], env, capsys)
    assert (code, err) == (0, "")
    assert out.count("\n") == 1 and "退款处理中" in out  # one line, not \u-escaped
    printed = json.loads(out)
    assert printed == {
        "merchantNo": MERCHANT_NO, "transNo": "RF-CLI-1",
        "tradeNo": "12000020240101000000000000000009", "orderAmt": 1500,
        "orderStatus": "PROCESSING", "finishedDate": "", "respCode": "100201",
        "respMsg": "退款处理中",
    }  # fmt: skip
    assert sent(stub) == {
        "transNo": "RF-CLI-1", "refundType": 2, "origTransNo": "PAY1", "origOrderAmt": 2000,
        "orderAmt": 1500, "requestDate": sent(stub)["requestDate"], "refundReason": "退货",
    }  # fmt: skip
    assert re.fullmatch(r"20[0-9]{12}", sent(stub)["requestDate"])


def test_a_trans_no_is_generated_when_none_is_given(stub, env, capsys):
    code, out, _err = run(REQUIRED, env, capsys)
    assert code == 0
    trans_no = json.loads(out)["transNo"]
    assert re.fullmatch(r"RF[0-9]{14}[0-9]{8}", trans_no)
    assert sent(stub)["transNo"] == trans_no
    run(REQUIRED, env, capsys)
    assert sent(stub, 1)["transNo"] != trans_no


def test_every_option_reaches_the_request(stub, env, capsys):
    args = [*REQUIRED, "--refund-type", "1", "--return-url", "https://example.com/n",
            "--extend", "x=1&y=2", "--reason", "a b"]  # fmt: skip
    assert run(args, env, capsys)[0] == 0
    content = sent(stub)
    assert (content["refundType"], content["returnUrl"], content["extend"]) == (
        1,
        "https://example.com/n",
        "x=1&y=2",
    )
    assert content["refundReason"] == "a b"


def test_flags_override_the_environment(stub, env, capsys):
    code, _out, err = run([*REQUIRED, "--merchant-no", "999"], env, capsys)
    assert code == 6  # the stub's answer names the configured merchant, not 999
    assert "merchantNo" in err
    assert stub.requests[0].form["merchantNo"] == "999"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--orig-trans-no", "PAY1", "--orig-amount", "2000"],
        ["--orig-trans-no", "PAY1", "--amount", "5"],
        [*REQUIRED[:-1], "15.00"],
        [*REQUIRED[:-1], "-5"],
        [*REQUIRED[:-1], "1e3"],
        [*REQUIRED[:-1], "１５"],
        [*REQUIRED[:-1], "5\n"],
        [*REQUIRED[:-1], "1" * 18],
        [*REQUIRED, "--refund-type", "two"],
        [*REQUIRED, "--refund-type", "-1"],
        [*REQUIRED, "--unknown", "x"],
        [*REQUIRED, "extra"],
    ],
)
def test_usage_errors_exit_64(args, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["apply-refund", *args], environ={})
    assert caught.value.code == cli.EXIT_USAGE
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        (["--orig-trans-no", "PAY1", "--orig-amount", "100", "--amount", "101"], "amount"),
        (["--orig-trans-no", "PAY1", "--orig-amount", "100", "--amount", "0"], "amount"),
        ([*REQUIRED, "--trans-no", "x" * 65], "trans_no"),
        ([*REQUIRED, "--reason", "r" * 129], "reason"),
        ([*REQUIRED, "--return-url", "mailto:a@example.com"], "return_url"),
        ([*REQUIRED, "--refund-type", "9999999999"], "refund_type"),
    ],
)
def test_invalid_requests_exit_7_before_sending(stub, env, capsys, args, argument):
    code, out, err = run(args, env, capsys)
    assert (code, out) == (7, "")
    assert err.startswith(f"error: InvalidRequestError: {argument} ")
    assert "transNo" not in err  # nothing was sent: no outcome to look up
    assert stub.requests == []


@pytest.mark.parametrize("missing", ["HSQ_MERCHANT_NO", "HSQ_SIGN_KEY", "HSQ_PRIVATE_KEY"])
def test_missing_settings_exit_2(env, capsys, missing):
    env[missing] = ""
    code, _out, err = run(REQUIRED, env, capsys)
    assert code == 2
    assert err.startswith("error: ConfigurationError: ") and missing in err


def test_a_signed_refusal_exits_4(stub, env, capsys, platform_private):
    stub.answer(200, failure_body(platform_private, "REPEAT_ORDER", "订单号重复"))
    code, out, err = run([*REQUIRED, "--trans-no", "RF-DUP"], env, capsys)
    assert (code, out) == (4, "")
    assert err == (
        "error: GatewayError: gateway error REPEAT_ORDER: 订单号重复 (signed) "
        "[transNo RF-DUP: refused]\n"
    )


@pytest.mark.parametrize(
    ("answer", "error", "exit_code"),
    [
        ((500, b""), "TransportError", 3),
        ((200, b"<html>"), "TransportError", 3),
        ((200, failure_body(None, "SYSTEM_ERROR", "系统繁忙")), "GatewayError", 4),
        ((200, b'{"success": true, "result": "{}", "sign": "00"}'), "SignatureError", 5),
    ],
)  # fmt: skip
def test_unknown_outcomes_name_the_trans_no(stub, env, capsys, answer, error, exit_code):
    stub.answer(*answer)
    code, out, err = run([*REQUIRED, "--trans-no", "RF-LOST"], env, capsys)
    assert (code, out) == (exit_code, "")
    assert err.startswith(f"error: {error}: ")
    assert err.endswith("[transNo RF-LOST: outcome unknown; query it before applying again]\n")
    assert err.count("\n") == 1
    assert len(stub.requests) == 1  # not sent again, not even after a 500


def test_an_answer_about_another_refund_exits_6(stub, env, capsys, platform_private):
    stub.answer(200, success_body(platform_private, apply_result(transNo="OTHER")))
    code, _out, err = run([*REQUIRED, "--trans-no", "RF-X"], env, capsys)
    assert code == 6
    assert err.startswith("error: ResponseError: the result is about transNo 'OTHER'")


def test_gateway_text_is_escaped(stub, env, capsys):
    stub.answer(200, failure_body(None, "E\x1b[31m", "line\nbreak"))
    code, _out, err = run(REQUIRED, env, capsys)
    assert code == 4
    assert "\x1b" not in err and err.count("\n") == 1
    assert "line\\nbreak" in err


def test_verbose_logs_the_application(stub, env, capsys):
    code, _out, err = run([*REQUIRED, "-v", "--trans-no", "RF-V"], env, capsys)
    assert code == 0
    assert "POLYMERIZE_REFUND transNo=RF-V outcome=ok" in err


def test_as_a_process(stub, env):
    done = subprocess.run(
        [sys.executable, "-m", "hsq_refunds", "apply-refund", *REQUIRED, "--trans-no", "RF-P"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["transNo"] == "RF-P"
    assert done.stderr == ""
