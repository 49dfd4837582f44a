"""``python -m hsq_refunds.sandbox``: init writes credentials; serve answers, stops on signals."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hsq_refunds.sandbox import Credentials, SandboxControl
from tests.sandbox.wire import query, verified_result

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hsq_refunds.sandbox", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_init_writes_loadable_credentials_and_hides_secrets(tmp_path):
    keys_dir = tmp_path / "keys"
    args = ["init", str(keys_dir), "--merchant-no", "888000000077", "--key-size", "1024"]
    completed = run_cli(*args, "--platform-key-size", "1024")
    assert completed.returncode == 0, completed.stderr
    credentials = Credentials.load(keys_dir)
    assert credentials.merchant_no == "888000000077"
    assert credentials.private_key in completed.stdout
    assert credentials.platform_cert in completed.stdout
    assert credentials.sign_key not in completed.stdout + completed.stderr
    assert credentials.private_key_password not in completed.stdout + completed.stderr

    again = run_cli(*args)
    assert again.returncode == 1 and "--force" in again.stderr
    assert Credentials.load(keys_dir) == credentials

    forced = run_cli(*args, "--force", "--show-secrets")
    assert forced.returncode == 0, forced.stderr
    replaced = Credentials.load(keys_dir)
    assert replaced.sign_key != credentials.sign_key
    assert replaced.sign_key in forced.stdout and replaced.private_key_password in forced.stdout


def read_line(process: subprocess.Popen[str], deadline: float = 60) -> str:
    """The next stdout line of ``process``, failing rather than hanging if none comes."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=deadline):
            process.kill()
            pytest.fail("the sandbox printed nothing")
    return process.stdout.readline()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_logs_and_stops_on_signal(hsq_sandbox_credentials, tmp_path, stop_signal):
    creds = hsq_sandbox_credentials
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps({"refunds": [{"transNo": "S1", "timeline": [{"status": "FAIL"}]}]})
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hsq_refunds.sandbox",
            "serve",
            "--keys",
            creds.directory,
            "--port",
            "0",
            "--scenario",
            str(scenario),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        banner = read_line(process)
        match = re.search(r"gateway (\S+), control (\S+)", banner)
        assert match, banner
        url, control_url = match.groups()
        assert verified_result(query(url, creds, "S1"), creds)["orderStatus"] == "FAIL"
        with SandboxControl(control_url) as control:
            assert control.query_counts() == {"S1": 1}
        process.send_signal(stop_signal)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert re.search(r"transNo=S1 answered FAIL respCode=200007", err), err
    assert creds.sign_key not in err and creds.private_key_password not in err


def test_serve_explains_missing_keys(tmp_path):
    completed = run_cli("serve", "--keys", str(tmp_path), "--port", "0")
    assert completed.returncode == 1
    assert "init" in completed.stderr and "Traceback" not in completed.stderr


def test_serve_refuses_a_busy_port(hsq_sandbox, hsq_sandbox_credentials):
    completed = run_cli(
        "serve", "--keys", hsq_sandbox_credentials.directory, "--port", str(hsq_sandbox.port)
    )
    assert completed.returncode == 1, completed.stderr
    assert "error" in completed.stderr and "Traceback" not in completed.stderr


def test_init_prints_the_ready_settings(tmp_path):
    import ast

    url = "http://127.0.0.1:8765/api/acquiring"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hsq_refunds.sandbox",
            "init",
            str(tmp_path / "keys"),
            "--print-settings",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    text = done.stdout.split("HSQ_REFUNDS = ", 1)[1]
    settings = ast.literal_eval(text)
    assert settings["BASE_URL"] == "http://127.0.0.1:8765/api/acquiring"
    [merchant] = settings["MERCHANTS"].values()
    assert set(merchant) == {"SIGN_KEY", "PRIVATE_KEY", "PRIVATE_KEY_PASSWORD", "PLATFORM_CERT"}
    assert Path(merchant["PRIVATE_KEY"]).is_file()
