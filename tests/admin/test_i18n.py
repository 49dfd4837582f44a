"""The Simplified Chinese translation: complete, compiled, and used throughout the admin."""

from __future__ import annotations

import ast
import gettext
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import change_url, changelist_url, message_texts, refresh_url, run_action

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "hsq_refunds"
PO = APP / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")
CHINESE = {"headers": {"accept-language": "zh-CN,zh;q=0.9"}}


def po_entries(path: Path) -> list[dict[str, object]]:
    """Entries of a .po file: ``msgid``, ``msgstr`` (all forms joined) and ``fuzzy``."""
    entries = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        fuzzy = False
        for line in block.strip().splitlines():
            if line.startswith("#,") and "fuzzy" in line:
                fuzzy = True
            if line.startswith("#"):
                continue
            if line.startswith('"'):
                fields[key] += ast.literal_eval(line)
                continue
            key, _, rest = line.partition(" ")
            key = "msgstr" if key.startswith("msgstr") else key
            fields[key] = fields.get(key, "") + ast.literal_eval(rest)
        if fields.get("msgid"):
            entries.append({**fields, "fuzzy": fuzzy})
    return entries


def test_every_message_is_translated():
    entries = po_entries(PO)

    assert len(entries) > 100
    untranslated = [entry["msgid"] for entry in entries if not entry["msgstr"]]
    fuzzy = [entry["msgid"] for entry in entries if entry["fuzzy"]]
    assert untranslated == []
    assert fuzzy == []


def test_the_compiled_catalog_matches_the_po_file(tmp_path):
    if shutil.which("msgfmt") is None:
        pytest.skip("msgfmt (Debian package gettext) is not installed")
    fresh = tmp_path / "django.mo"
    subprocess.run(["msgfmt", "--check", "-o", str(fresh), str(PO)], check=True)

    with MO.open("rb") as committed, fresh.open("rb") as compiled:
        assert gettext.GNUTranslations(committed)._catalog == (
            gettext.GNUTranslations(compiled)._catalog
        )


def test_the_po_file_has_every_message_of_the_app(tmp_path):
    """``makemessages`` run on the app's current source finds nothing the .po file lacks."""
    if shutil.which("xgettext") is None:
        pytest.skip("xgettext (Debian package gettext) is not installed")
    copy = tmp_path / "hsq_refunds"
    shutil.copytree(APP, copy, ignore=shutil.ignore_patterns("locale", "__pycache__", "static"))
    (copy / "locale").mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "makemessages", "-l", "zh_Hans", "--no-location"],
        cwd=copy,
        env={
            "PYTHONPATH": str(REPO),
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PATH": "/usr/bin:/bin",
        },
        check=True,
        capture_output=True,
    )
    found = {entry["msgid"] for entry in po_entries(copy / "locale/zh_Hans/LC_MESSAGES/django.po")}
    shipped = {entry["msgid"] for entry in po_entries(PO)}

    assert sorted(found - shipped) == []


@pytest.mark.django_db
def test_the_admin_speaks_chinese(admin_client, make_refund):
    refund = make_refund("R-ZH", amount=1234, status="PROCESSING", needs_attention=True)

    changelist = admin_client.get(changelist_url(), **CHINESE).content.decode()
    page = admin_client.get(change_url(refund), **CHINESE).content.decode()

    assert '<html lang="zh-hans"' in changelist
    for text in ("退款单号", "原订单号", "退款金额", "需要人工处理", "商户号", "从慧收钱刷新状态"):
        assert text in changelist, text
    assert '<span class="hsq-status hsq-status-processing">处理中</span>' in changelist
    for text in ("刷新状态", "慧收钱交易号", "最近的查询记录（最新的在前）", "下次查询时间"):
        assert text in page, text


@pytest.mark.django_db
def test_messages_are_chinese(admin_client, make_refund, sandbox):
    ok = make_refund("R-ZH1")
    bad = make_refund("R-ZH2")
    sandbox.set_fault("bad_signature", trans_no="R-ZH2")

    button = admin_client.post(refresh_url(ok), follow=True, **CHINESE)
    action = run_action(admin_client, "refresh_status", [ok, bad], **CHINESE)

    assert message_texts(button) == [("success", "已从慧收钱刷新退款 R-ZH1：成功。")]
    (summary_level, summary), (error_level, errors) = message_texts(action)
    assert (summary_level, error_level) == ("warning", "error")
    assert summary.startswith("2 笔退款：慧收钱应答了 1 笔")
    assert "1 笔成功" in summary and "签名无效" in summary
    assert errors.startswith("1 笔退款刷新失败：R-ZH2：签名无效：")


@pytest.mark.django_db
def test_statuses_and_choices_are_chinese(admin_client, make_refund):
    for trans_no, status in [("Z1", "UNKNOWN"), ("Z2", "INIT"), ("Z3", "SUCCESS"), ("Z4", "FAIL")]:
        make_refund(trans_no, known=False, status=status)

    html = admin_client.get(changelist_url(), **CHINESE).content.decode()

    for label in ("未知", "初始化", "成功", "失败"):
        assert f">{label}</span>" in html, label


@pytest.mark.django_db
def test_language_code_zh_hans_makes_the_admin_chinese(admin_client, make_refund, settings):
    settings.LANGUAGE_CODE = "zh-hans"
    refund = make_refund("R-ZH", known=False)

    index = admin_client.get("/admin/").content.decode()
    page = admin_client.get(change_url(refund)).content.decode()

    assert "慧收钱退款" in index
    assert "刷新状态" in page
    assert "未知" in page
