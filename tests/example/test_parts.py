"""The example project's own parts, without Django: settings from the environment, tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from example_project import environment
from example_project.console import display_width, pad, render_table, yuan

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
