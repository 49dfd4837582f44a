"""The example project's own parts, without Django: settings from the environment, tables."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from example_project import environment
from example_project.console import display_width, pad, render_table, yuan
from example_project.scenario import (
    QUICK,
    SLOW,
    Applied,
    SandboxBook,
    make_refunds,
    order_specs,
)

# --------------------------------------------------------------------------- DATABASE_URL


def test_sqlite_in_the_state_folder_by_default(tmp_path):
    db = environment.database_settings(tmp_path, environ={})
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(tmp_path / "db.sqlite3")


def test_postgres_url_is_split_into_django_settings(tmp_path):
    url = "postgres://shop%40eu:p%3Ass%2Fw0rd@db.internal:6543/refunds?sslmode=require"
    db = environment.database_settings(tmp_path, environ={"DATABASE_URL": url})
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"]) == ("refunds", "shop@eu", "p:ss/w0rd")
    assert (db["HOST"], db["PORT"]) == ("db.internal", "6543")
    assert db["OPTIONS"] == {"sslmode": "require"}


def test_postgresql_scheme_without_port_or_password(tmp_path):
    db = environment.database_settings(
        tmp_path, environ={"DATABASE_URL": "postgresql://shop@localhost/refunds"}
    )
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == ("shop", "", "localhost", "")


@pytest.mark.parametrize("url", ["sqlite:////srv/x/db.sqlite3", "sqlite:///srv/x/db.sqlite3"])
def test_sqlite_url_names_an_absolute_file(tmp_path, url):
    db = environment.database_settings(tmp_path, environ={"DATABASE_URL": url})
    assert db["NAME"] == "/srv/x/db.sqlite3"


@pytest.mark.parametrize(
    "url", ["mysql://user:hunter2@host/db", "postgres://user:hunter2@host/", "sqlite://"]
)
def test_unusable_database_url_is_refused_without_showing_the_password(tmp_path, url):
    with pytest.raises(ValueError, match="DATABASE_URL") as raised:
        environment.database_settings(tmp_path, environ={"DATABASE_URL": url})
    assert "hunter2" not in str(raised.value)


# --------------------------------------------------------------------------- state folder


def test_sandbox_credentials_are_made_once_and_reused(tmp_path):
    first = environment.sandbox_credentials(tmp_path)
    second = environment.sandbox_credentials(tmp_path)
    assert first == second
    assert Path(first.private_key).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["sandbox"]  # no staging folder left


def test_sandbox_credentials_made_by_concurrent_processes_agree(tmp_path):
    """Several processes starting at once on a fresh machine end up with the same keys."""
    code = (
        "import sys; from pathlib import Path; from example_project import environment; "
        "print(environment.sandbox_credentials(Path(sys.argv[1])).sign_key)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(4)
    ]
    keys = {process.communicate(timeout=120)[0].strip() for process in processes}
    stored = json.loads((tmp_path / "sandbox" / "credentials.json").read_text())["sign_key"]
    assert keys == {stored}


def test_secret_key_is_generated_once_unless_given(tmp_path):
    generated = environment.secret_key(tmp_path, environ={})
    assert len(generated) >= 50
    assert environment.secret_key(tmp_path, environ={}) == generated
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    given = environment.secret_key(tmp_path, environ={"DJANGO_SECRET_KEY": "from-env"})
    assert given == "from-env"


def test_var_dir_follows_the_environment(tmp_path):
    assert environment.var_dir({"EXAMPLE_VAR_DIR": str(tmp_path / "v")}) == tmp_path / "v"
    assert (tmp_path / "v").is_dir()


@pytest.mark.parametrize(("text", "expected"), [("", 8765), ("9001", 9001)])
def test_sandbox_port(text, expected):
    assert environment.sandbox_port({"HSQ_SANDBOX_PORT": text}) == expected


@pytest.mark.parametrize("text", ["http", "0", "70000"])
def test_bad_sandbox_port_is_named(text):
    with pytest.raises(ValueError, match="HSQ_SANDBOX_PORT"):
        environment.sandbox_port({"HSQ_SANDBOX_PORT": text})


@pytest.mark.parametrize(("text", "expected"), [("", 8000), ("9002", 9002)])
def test_example_port(text, expected):
    assert environment.example_port({"EXAMPLE_PORT": text}) == expected


@pytest.mark.parametrize("text", ["http", "0", "70000"])
def test_bad_example_port_is_named(text):
    with pytest.raises(ValueError, match="EXAMPLE_PORT"):
        environment.example_port({"EXAMPLE_PORT": text})


def test_notify_url_is_the_notification_views_path_on_loopback():
    assert environment.notify_url(8123) == "http://127.0.0.1:8123/hsq/refund-notify/"
    assert environment.notify_url(8123).endswith(environment.NOTIFY_PATH)


def test_only_a_merchant_number_leaves_the_sandbox():
    assert environment.uses_sandbox({})
    assert environment.uses_sandbox({"HSQ_SIGN_KEY": "x", "HSQ_MERCHANT_NO": " "})
    assert not environment.uses_sandbox({"HSQ_MERCHANT_NO": "814000473149"})


# --------------------------------------------------------------------------- tables


def test_display_width_counts_chinese_as_two_columns():
    assert display_width("交易处理中,请稍后查询") == 21  # an ASCII comma among ten
    assert display_width("¥1,288.00") == 9
    assert display_width("ＡＢ") == 4  # full-width Latin
    assert display_width("e\u0301") == 1  # a combining accent takes no column


def test_pad_aligns_by_display_width():
    assert pad("查询", 6) == "查询  "
    assert pad("¥1.00", 7, right=True) == "  ¥1.00"
    assert pad("too long", 3) == "too long"


def test_render_table_aligns_columns_after_chinese_text():
    table = render_table(
        ["code", "message", "next"],
        [["200007", "查询成功", "a"], ["100201", "交易处理中,请稍后查询", "b"], ["x", "ok", "c"]],
    )
    lines = table.splitlines()
    columns = {display_width(line[: line.rindex(" ") + 1]) for line in lines if line[-1] != "-"}
    assert len(lines) == 5
    assert columns == {display_width("100201  交易处理中,请稍后查询  ")}


def test_render_table_keeps_colour_out_of_widths():
    coloured = ("SUCCESS", "\x1b[32mSUCCESS\x1b[0m")
    table = render_table(["status", "n"], [[coloured, "1"], ["FAIL", "2"]], right=[1])
    lines = table.splitlines()
    assert lines[2] == "\x1b[32mSUCCESS\x1b[0m  1"
    assert lines[3] == "FAIL     2"


@pytest.mark.parametrize(
    ("fen", "text"),
    [(1234, "¥12.34"), (128800, "¥1,288.00"), (5, "¥0.05"), (0, "¥0.00"), (None, "-")],
)
def test_yuan(fen, text):
    assert yuan(fen) == text


# --------------------------------------------------------------------------- the scenario

NOW = datetime(2024, 5, 1, 4, 0, tzinfo=UTC)


def test_the_partial_refunds_share_an_order_and_the_last_exceeds_it():
    refunds = make_refunds(NOW, QUICK, not_found_grace=1800)
    partial = [refund for refund in refunds if refund.orig_amount == 30000]
    assert len({refund.orig_trans_no for refund in partial}) == 1
    accepted = partial[:-1]
    assert [refund.expect_refused for refund in partial] == [False, False, True]
    assert sum(refund.amount for refund in accepted) <= 30000
    assert sum(refund.amount for refund in partial) > 30000
    # Every other application has its own order, each paid at least what is refunded.
    others = [refund for refund in refunds if refund.applied_here and refund not in partial]
    assert len({refund.orig_trans_no for refund in others}) == len(others)
    assert all(refund.amount <= refund.orig_amount for refund in others)


def test_transnos_are_unique_and_shaped_like_a_shops():
    refunds = make_refunds(NOW, QUICK, not_found_grace=1800)
    numbers = [refund.trans_no for refund in refunds]
    assert len(set(numbers)) == len(numbers) == 13
    assert all(re.fullmatch(r"RF\d{18}", number) for number in numbers)
    assert numbers[0] == "RF202405011200000001"  # Beijing time


def test_only_tracked_refunds_are_placed_at_the_sandbox_beforehand():
    refunds = make_refunds(NOW, QUICK, not_found_grace=1800)
    for refund in refunds:
        assert (refund.order_spec() is not None) == refund.applied_here
        if refund.applied_here:
            assert refund.spec() is None  # HSQ learns of it from the application
    assert {refund.order_spec()["kind"] for refund in refunds if refund.applied_here} == {
        "balance",
        "card",
        "refuse",
    }


def test_quick_bank_cards_outlast_the_demo_and_slow_ones_finish():
    assert QUICK.apply_settings()["card_seconds"] >= 86400
    assert SLOW.timeline("card") == (
        {"status": "PROCESSING", "seconds": 3 * 86400},
        {"status": "SUCCESS"},
    )
    assert SLOW.timeline("refuse")[-1] == {"status": "FAIL"}
    quick = {refund.case: refund for refund in make_refunds(NOW, QUICK, not_found_grace=1800)}
    slow = {refund.case: refund for refund in make_refunds(NOW, SLOW, not_found_grace=1800)}
    assert quick["bank card"].expect_status == "PROCESSING"
    assert slow["bank card"].expect_status == "SUCCESS"


def test_sandbox_book_keeps_refunds_applied_for_and_orders(tmp_path):
    refunds = make_refunds(NOW, SLOW, not_found_grace=1800)
    book = SandboxBook(tmp_path / "book.json")
    assert book.load() == [] and book.load_orders() == []
    applied_for = next(refund for refund in refunds if refund.kind == "card")
    row = SimpleNamespace(
        trans_no=applied_for.trans_no,
        amount=applied_for.amount,
        orig_trans_no=applied_for.orig_trans_no,
        applied_at=NOW,
        trade_no="T1",
    )
    specs = SandboxBook.stamped(refunds, NOW) + SandboxBook.applied(
        [Applied(applied_for, row=row), Applied(refunds[7], refused=ValueError("no"))], SLOW
    )
    orders = [applied_for.order_spec()]
    book.save(specs, orders)
    assert book.load() == specs
    assert book.load_orders() == orders
    assert specs[-1] == {
        "transNo": applied_for.trans_no,
        "amount": applied_for.amount,
        "origTransNo": applied_for.orig_trans_no,
        "createdAt": "2024-05-01T04:00:00+00:00",
        "timeline": [{"status": "PROCESSING", "seconds": 3 * 86400}, {"status": "SUCCESS"}],
        "tradeNo": "T1",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["book.json"]  # no staging file left


def test_sandbox_book_specs_are_what_the_sandbox_takes(tmp_path):
    from hsq_refunds.sandbox import SandboxServer

    refunds = make_refunds(datetime.now(UTC), SLOW, not_found_grace=1800)
    specs = SandboxBook.stamped(refunds, datetime.now(UTC))
    gateway = SandboxServer(environment.sandbox_credentials(tmp_path))
    assert gateway.add_refunds(specs) == len(specs) == 3
    assert gateway.add_orders(order_specs(refunds)) == 6  # the three partial refunds share one
