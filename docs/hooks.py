"""mkdocs hooks of the documentation site.

- Django is set up with ``tests.settings`` before anything is rendered, so that mkdocstrings (and
  this hook) can import the app's modules, models included, from this checkout.
- The settings reference is generated, never copied: a page holds a marker such as
  ``<!-- generated: settings zh -->`` and the build replaces it with a table made from the one
  table of keys in ``hsq_refunds/conf.py`` (``settings_table()``, ``merchant_settings_table()``,
  ``health_settings_table()``) and ``hsq_refunds.check_ids.CHECK_IDS``.
- A page of the Chinese site that has no ``.zh.md`` of its own shows the English page under its
  Chinese title; a note at its top says, in Chinese, that the page is in English only.

The English tables are exactly the README's (``docs/_gen/settings_reference.py``). The Chinese
tables take the keys and defaults from the same source and the Chinese text of each row from
``docs/_gen/settings_zh.toml``, where every entry also holds the English text it translates. A
key added, removed or documented anew in ``conf.py`` without its Chinese entry fails the build,
naming the key, so neither language can drift from the code.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "docs" / "_gen" / "settings_zh.toml"
MARKER = re.compile(r"<!-- generated: (?P<what>[a-z-]+) (?P<lang>en|zh) -->")
TABLES = ("settings", "merchant-settings", "health", "check-ids")
ENGLISH_ONLY = '!!! note "本页只有英文版"\n    {}\n\n'
ENGLISH_ONLY_TEXT = "这一页没有中文翻译，下面是英文原文。"
ENGLISH_ONLY_REFERENCE = "API 参考由源代码中的文档字符串生成，只有英文版。"


def on_config(config: Any) -> Any:
    """Import the app from this checkout, with Django configured."""
    if sys.path[:1] != [str(ROOT)]:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    import hsq_refunds

    where = Path(hsq_refunds.__file__).resolve().parent
    if where != ROOT / "hsq_refunds":
        raise PluginError(f"hsq_refunds was imported from {where}, not from {ROOT}")
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each ``<!-- generated: TABLE LANG -->`` marker with that table; on the Chinese
    site, put the English-only note on a page that is not translated."""
    if config.theme["language"] == "zh" and not page.file.src_uri.endswith(".zh.md"):
        reference = page.file.src_uri.startswith("reference/")
        text = ENGLISH_ONLY_REFERENCE if reference else ENGLISH_ONLY_TEXT
        markdown = ENGLISH_ONLY.format(text) + markdown

    def table(match: re.Match[str]) -> str:
        what, lang = match["what"], match["lang"]
        if what not in TABLES:
            raise PluginError(f"{page.file.src_uri}: no generated table {what!r} (one of {TABLES})")
        return generated_tables(lang)[what]

    return MARKER.sub(table, markdown)


# --------------------------------------------------------------------------- the tables


def _rows(table: str) -> dict[str, list[str]]:
    """The rows of a Markdown table by the text of their first cell (without backticks)."""
    rows: dict[str, list[str]] = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        rows[cells[0].strip("`")] = cells
    return rows


def _markdown_tables(text: str) -> list[str]:
    """The tables of a Markdown text, in order."""
    tables: list[list[str]] = []
    previous = False
    for line in text.splitlines():
        is_row = line.startswith("|")
        if is_row and not previous:
            tables.append([])
        if is_row:
            tables[-1].append(line)
        previous = is_row
    return ["\n".join(lines) for lines in tables]


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _same_keys(what: str, expected: Any, translated: Mapping[str, Any]) -> None:
    missing = [key for key in expected if key not in translated]
    extra = [key for key in translated if key not in expected]
    if missing or extra:
        raise PluginError(
            f"{TRANSLATIONS.relative_to(ROOT)} [{what}] is out of date: "
            + "; ".join(
                part
                for part in (
                    f"add {', '.join(missing)}" if missing else "",
                    f"remove {', '.join(extra)}" if extra else "",
                )
                if part
            )
        )


def _translated(what: str, key: str, entry: Mapping[str, str], english: str) -> str:
    """The Chinese text of ``key``, which must translate today's English text."""
    if entry.get("en") != english:
        raise PluginError(
            f"{TRANSLATIONS.relative_to(ROOT)} [{what}] {key}: the English text changed; "
            f"translate it again and copy it as `en`:\n  now:  {english}\n  was:  {entry.get('en')}"
        )
    return entry["zh"]


@cache
def generated_tables(lang: str) -> dict[str, str]:
    """Every generated table in ``lang`` (``en`` or ``zh``), by its name."""
    from docs._gen.settings_reference import settings_reference_markdown
    from hsq_refunds import check_ids, conf

    reference = _markdown_tables(settings_reference_markdown())
    if len(reference) != len(TABLES):
        raise PluginError(f"settings_reference_markdown() no longer gives {len(TABLES)} tables")
    english = dict(zip(TABLES, reference, strict=True))
    sources: dict[str, Mapping[str, Any]] = {
        "settings": conf.settings_table(),
        "merchant-settings": conf.merchant_settings_table(),
        "health": conf.health_settings_table(),
        "check-ids": check_ids.CHECK_IDS,
    }
    for what, source in sources.items():
        if list(_rows(english[what])) != list(source):
            raise PluginError(f"settings_reference_markdown(): its {what} table has other keys")
    if lang == "en":
        return english

    zh = tomllib.loads(TRANSLATIONS.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for what in ("settings", "health"):
        table, translated = sources[what], zh[what]
        _same_keys(what, table, translated)
        lines = ["| 键 | 默认值 | 说明 |", "|---|---|---|"]
        for key, cells in _rows(english[what]).items():
            setting, entry = table[key], translated[key]
            default = cells[1]
            if setting.shown_default is not None:
                default = _translated(what, f"{key} default", entry.get("default", {}), default)
            lines.append(_row(cells[0], default, _translated(what, key, entry, setting.doc)))
        out[what] = "\n".join(lines)

    merchant_zh = zh["merchant-settings"]
    _same_keys("merchant-settings", conf.merchant_settings_table(), merchant_zh)
    given = {"required": "必填", "the global one": "沿用全局设置", "`None`": "`None`"}
    lines = ["| 键 | | 说明 |", "|---|---|---|"]
    for key, cells in _rows(english["merchant-settings"]).items():
        setting = conf.merchant_settings_table()[key]
        if cells[1] not in given:
            raise PluginError(f"docs/hooks.py: no Chinese for {cells[1]!r} (merchant key {key})")
        text = _translated("merchant-settings", key, merchant_zh[key], setting.doc)
        lines.append(_row(cells[0], given[cells[1]], text))
    out["merchant-settings"] = "\n".join(lines)

    checks_zh = zh["check-ids"]
    _same_keys("check-ids", check_ids.CHECK_IDS, checks_zh)
    lines = ["| 检查 ID | 含义 |", "|---|---|"]
    for check_id, meaning in check_ids.CHECK_IDS.items():
        text = _translated("check-ids", check_id, checks_zh[check_id], meaning)
        lines.append(_row(f"`{check_id}`", text))
    out["check-ids"] = "\n".join(lines)
    return out
