"""No secret ever reaches an output, a log record, an admin page or a database row.

Every entry point runs, in good and in failing runs (a wrong key password, a wrong sign key,
answers whose signature does not verify, gateway errors, a timeout), with every logger at DEBUG;
child processes log everything to stderr. Then all of it, and every row of every table, is
searched for the merchant private key (each PEM line, its DER in base64 and hex, its numbers),
the PKCS#12 file, its password and the sign key.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import Task
from django_q.tasks import async_task

from hsq_refunds import tasks
from hsq_refunds.models import Refund
from hsq_refunds.sandbox.credentials import Credentials
from tests.processes import REPO, child_env

from .leaks import Secrets, database_text, load_merchant_key

WRONG_PASSWORD = "not-the-password-7f3a"
WRONG_SIGN_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
FAULTS = {
    "S-SIG": ("bad_signature", {}),
    "S-GW": ("signed_failure", {"error_code": "E1001", "error_msg": "商户不存在"}),
    "S-UNSIGNED": ("unsigned_failure", {}),
    "S-BROKEN": ("malformed_json", {}),
}
TRANS_NOS = ["S-OK", *FAULTS, "S-SLOW"]


@pytest.fixture
def secrets(hsq_sandbox_credentials) -> Secrets:
    credentials = hsq_sandbox_credentials
    key = load_merchant_key(credentials.private_key, credentials.private_key_password)
    return (
        Secrets()
        .add("sign key", credentials.sign_key)
        .add("key password", credentials.private_key_password)
        .add("wrong key password", WRONG_PASSWORD)
        .add("wrong sign key", WRONG_SIGN_KEY)
        .add_private_key("merchant private key", key)
        .add_file("PKCS#12 file", credentials.private_key)
    )


def key_forms(credentials: Credentials) -> dict[str, dict[str, str]]:
    """The merchant key as a PKCS#12 file with its password, and as text from the environment."""
    key = load_merchant_key(credentials.private_key, credentials.private_key_password)
    no_encryption = serialization.NoEncryption()
    pkcs1_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, no_encryption
    ).decode()
    pkcs8_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, no_encryption
    )
    return {
        "pkcs12-file": {
            "PRIVATE_KEY": credentials.private_key,
            "PRIVATE_KEY_PASSWORD": credentials.private_key_password,
        },
        "pkcs1-pem-text": {"PRIVATE_KEY": pkcs1_pem, "PRIVATE_KEY_PASSWORD": ""},
        "base64-der-text": {
            "PRIVATE_KEY": base64.b64encode(pkcs8_der).decode(),
            "PRIVATE_KEY_PASSWORD": "",
        },
    }


def command(*args: str) -> str:
    """Run a management command in this process; its exit status and everything it printed."""
    out, err = io.StringIO(), io.StringIO()
    status = 0
    try:
        call_command(*args, stdout=out, stderr=err)
    except CommandError as exc:  # SystemCheckError too
        status = exc.returncode
        err.write(str(exc))
    return f"exit {status}\n{out.getvalue()}\n{err.getvalue()}"


def page(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    messages = response.context["messages"] if response.context else []
    return response.content.decode() + "\n".join(str(message) for message in messages)


def admin_pages(client: Client) -> dict[str, str]:
    """Every admin page of the app, and what its actions and buttons answer."""
    refunds = list(Refund.objects.order_by("trans_no"))
    add = reverse("admin:hsq_refunds_refund_add")
    shown = {
        "admin index": page(client.get(reverse("admin:index"))),
        "change list": page(client.get(reverse("admin:hsq_refunds_refund_changelist"))),
        "search": page(client.get(reverse("admin:hsq_refunds_refund_changelist") + "?q=S-")),
        "add page": page(client.get(add)),
        "add refused": page(client.post(add, {"trans_no": "S-\x07", "merchant_no": "?"})),
        "action": page(
            client.post(
                reverse("admin:hsq_refunds_refund_changelist"),
                {"action": "refresh_status", "_selected_action": [r.pk for r in refunds]},
                follow=True,
            )
        ),
    }
    for refund in refunds:
        shown[f"button {refund.trans_no}"] = page(
            client.post(reverse("admin:hsq_refunds_refund_refresh", args=[refund.pk]), follow=True)
        )
        shown[f"change page {refund.trans_no}"] = page(
            client.get(reverse("admin:hsq_refunds_refund_change", args=[refund.pk]))
        )
    return shown


def scheduled_task() -> str:
    Refund.objects.update(next_query_at=timezone.now() - timedelta(seconds=1))
    task = Task.objects.get(id=async_task(tasks.CYCLE_TASK))
    return f"{task.success} {task.result}"


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every record as formatted, and every attribute of every record (arguments, extras)."""
    return caplog.text + "\n".join(str(vars(record)) for record in caplog.records)


@pytest.mark.django_db
@pytest.mark.parametrize("key_form", ["pkcs12-file", "pkcs1-pem-text", "base64-der-text"])
def test_in_process_entry_points_show_no_secret(
    key_form,
    admin_client,
    make_refunds,
    sandbox,
    configure,
    merchant_no,
    hsq_sandbox_credentials,
    secrets,
    caplog,
    capfd,
):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="hsq_refunds")
    base = configure()["MERCHANTS"][merchant_no]
    keys = key_forms(hsq_sandbox_credentials)[key_form]

    def merchant(**changes: str) -> None:
        configure(MERCHANTS={merchant_no: {**base, **keys, **changes}})

    merchant()
    make_refunds(TRANS_NOS)
    for trans_no, (fault, params) in FAULTS.items():
        sandbox.set_fault(fault, trans_no=trans_no, **params)
    sandbox.set_fault("latency", trans_no="S-SLOW", times=1, seconds=2)

    shown = {
        "sync_refunds -v 3": command("sync_refunds", "-v", "3"),
        "sync_refunds --json --all": command("sync_refunds", "--json", "--all"),
        "sync_refunds --dry-run": command("sync_refunds", "S-OK", "S-SIG", "--dry-run"),
        "check": command("check", "-v", "3"),
        "task": scheduled_task(),
        **admin_pages(admin_client),
    }
    for failure, changes in {
        "wrong key password": {"PRIVATE_KEY_PASSWORD": WRONG_PASSWORD},
        "wrong sign key": {"SIGN_KEY": WRONG_SIGN_KEY},
    }.items():
        merchant(**changes)
        shown[f"{failure}: sync_refunds"] = command("sync_refunds", "--all", "-v", "3")
        shown[f"{failure}: check"] = command("check")
        shown[f"{failure}: task"] = scheduled_task()
        shown.update(
            {f"{failure}: {name}": text for name, text in admin_pages(admin_client).items()}
        )
    captured = capfd.readouterr()
    shown["stdout"], shown["stderr"] = captured.out, captured.err
    shown["log"] = log_text(caplog)
    tables = database_text()

    # What was searched holds what it should: the runs ran, failed where meant to, and logged.
    assert "S-SIG [" in shown["sync_refunds -v 3"] and "signature" in shown["sync_refunds -v 3"]
    assert "signature" in shown["wrong sign key: sync_refunds"]
    if key_form == "pkcs12-file":  # (a password given with a key that has none is ignored)
        assert "wrong password" in shown["wrong key password: sync_refunds"]
        assert "hsq_refunds.E008" in shown["wrong key password: check"]
    assert any(
        r.levelno == logging.DEBUG and r.name.startswith("hsq_refunds") for r in caplog.records
    )
    assert "S-UNSIGNED" in tables["hsq_refunds_refundquery"] + tables["hsq_refunds_refund"]
    assert "S-SIG" in tables["django_q_task"]

    leaks = secrets.leaks({**shown, **{f"table {name}": text for name, text in tables.items()}})
    assert leaks == {}


# --------------------------------------------------------------------------- child processes


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def debug_manage(*args: str) -> subprocess.CompletedProcess[str]:
    """A management command in a child process, logging everything to stderr."""
    return run([sys.executable, "-m", "tests.reliability.debug_manage", *args], child_env())


def cli_env(credentials: Credentials, url: str, **changes: str) -> dict[str, str]:
    """The environment of ``python -m hsq_refunds query-refund``, secrets in variables."""
    key = load_merchant_key(credentials.private_key, credentials.private_key_password)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    env = {name: value for name, value in os.environ.items() if not name.startswith("HSQ_")}
    env.update(
        HSQ_MERCHANT_NO=credentials.merchant_no,
        HSQ_SIGN_KEY=credentials.sign_key,
        HSQ_PRIVATE_KEY=pem,
        HSQ_PLATFORM_CERT=credentials.platform_cert,
        HSQ_BASE_URL=url,
        HSQ_TIMEOUT="5",
        PYTHONPATH=str(REPO),
    )
    env.update(changes)
    return env


def query_refund(trans_no: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "hsq_refunds", "query-refund", trans_no, "-v"], env)


def transcript(process: subprocess.CompletedProcess[str]) -> str:
    return f"exit {process.returncode}\n{process.stdout}\n{process.stderr}"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_child_processes_print_no_secret(
    make_refunds, sandbox, configure, merchant_no, hsq_sandbox_credentials, secrets, tmp_path
):
    credentials = hsq_sandbox_credentials
    base = configure()["MERCHANTS"][merchant_no]
    pem_form = key_forms(credentials)["pkcs1-pem-text"]
    configure(MERCHANTS={merchant_no: {**base, **pem_form}})
    make_refunds(["C-OK", "C-SIG", "C-GW"])
    sandbox.set_fault("bad_signature", trans_no="C-SIG")
    sandbox.set_fault("signed_failure", trans_no="C-GW", error_code="E9", error_msg="拒绝")

    processes = {
        "sync_refunds -v 3": debug_manage("sync_refunds", "-v", "3"),
        "sync_refunds --json --all": debug_manage("sync_refunds", "--json", "--all"),
        "check": debug_manage("check"),
    }
    configure(MERCHANTS={merchant_no: {**base, "PRIVATE_KEY_PASSWORD": WRONG_PASSWORD}})
    processes["wrong key password: sync_refunds"] = debug_manage("sync_refunds", "--all", "-v", "3")
    processes["wrong key password: check"] = debug_manage("check")

    env = cli_env(credentials, sandbox.url)
    processes["query-refund"] = query_refund("C-OK", env)
    processes["query-refund, bad signature"] = query_refund("C-SIG", env)
    processes["query-refund, gateway error"] = query_refund("C-GW", env)
    processes["query-refund, wrong sign key"] = query_refund(
        "C-OK", {**env, "HSQ_SIGN_KEY": WRONG_SIGN_KEY}
    )
    processes["query-refund, wrong key password"] = query_refund(
        "C-OK",
        {
            **env,
            "HSQ_PRIVATE_KEY": credentials.private_key,
            "HSQ_PRIVATE_KEY_PASSWORD": WRONG_PASSWORD,
        },
    )
    sandbox_cli, own = sandbox_command_line(tmp_path, cli_env(credentials, sandbox.url))
    processes.update(sandbox_cli)

    shown = {name: transcript(process) for name, process in processes.items()}
    tables = database_text()

    statuses = {name: process.returncode for name, process in processes.items()}
    assert statuses == {
        "sync_refunds -v 3": 1,
        "sync_refunds --json --all": 1,
        "check": 0,
        "wrong key password: sync_refunds": 2,
        "wrong key password: check": 1,
        "query-refund": 0,
        "query-refund, bad signature": 5,
        "query-refund, gateway error": 4,
        "query-refund, wrong sign key": 5,
        "query-refund, wrong key password": 2,
        "sandbox init": 0,
        "sandbox serve": 0,
        "query-refund, sandbox served by its command line": 8,  # S-CLI: not found (200004)
    }, shown
    assert "DEBUG hsq_refunds.gateway.client" in shown["sync_refunds -v 3"]
    assert "PRIVATE_KEY_PASSWORD" in shown["wrong key password: check"]
    assert "transNo=S-CLI" in shown["sandbox serve"]

    everything = {**shown, **{f"table {name}": text for name, text in tables.items()}}
    assert secrets.leaks(everything) == {}
    assert own.leaks(everything) == {}


def sandbox_command_line(
    tmp_path: Any, env: dict[str, str]
) -> tuple[dict[str, subprocess.CompletedProcess[str]], Secrets]:
    """``init`` new sandbox keys, ``serve`` them, query the server once, stop it with SIGTERM.

    Returns the three processes and the new credentials' secrets (the sandbox's platform
    private key included: only the fake gateway has it, and it must not print it either).
    """
    directory = tmp_path / "sandbox-keys"
    sandbox = [sys.executable, "-m", "hsq_refunds.sandbox"]
    init = run([*sandbox, "init", str(directory), "--key-size", "1024"], env)
    credentials = Credentials.load(directory)
    platform = serialization.load_pem_private_key(
        Path(credentials.platform_private_key).read_bytes(), password=None
    )
    own = (
        Secrets()
        .add("sandbox sign key", credentials.sign_key)
        .add("sandbox key password", credentials.private_key_password)
        .add_private_key(
            "sandbox merchant key",
            load_merchant_key(credentials.private_key, credentials.private_key_password),
        )
        .add_private_key("sandbox platform private key", platform)  # type: ignore[arg-type]
    )
    server = subprocess.Popen(
        [*sandbox, "serve", "--keys", str(directory), "--port", "0"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = server.stdout.readline()  # type: ignore[union-attr]
        url = banner.split("gateway ", 1)[1].split(",", 1)[0]
        query = query_refund("S-CLI", cli_env(credentials, url))
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    serve = subprocess.CompletedProcess(server.args, server.returncode, banner + out, err)
    processes = {
        "sandbox init": init,
        "sandbox serve": serve,
        "query-refund, sandbox served by its command line": query,
    }
    return processes, own
