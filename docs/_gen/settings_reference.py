"""The settings reference: Markdown tables of every key of ``HSQ_REFUNDS``, of a ``MERCHANTS``
entry and of ``HEALTH``, and of every check id, made from the table of keys in
``hsq_refunds/conf.py`` and from ``hsq_refunds.check_ids.CHECK_IDS``.

The README's "Settings" section holds exactly this text (a test keeps it so), and the docs build
makes the site's tables from it (``docs/hooks.py``). Print it with
``python docs/_gen/settings_reference.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _markdown_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return (
            "{"
            + ", ".join(f"{_markdown_value(k)}: {_markdown_value(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, tuple) and value and all(isinstance(item, tuple) for item in value):
        return (
            "["
            + ", ".join("(" + ", ".join(map(_markdown_value, item)) + ")" for item in value)
            + "]"
        )
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(_markdown_value, value)) + "]"
    return repr(value)


def settings_reference_markdown() -> str:
    """The settings reference, as the README's "Settings" section holds it."""
    from hsq_refunds.check_ids import CHECK_IDS
    from hsq_refunds.conf import health_settings_table, merchant_settings_table, settings_table

    def key_rows(table: Mapping[str, Any]) -> list[str]:
        return [
            f"| `{key}` | {setting.shown_default or f'`{_markdown_value(setting.default)}`'} "
            f"| {setting.doc} |"
            for key, setting in table.items()
        ]

    lines = [
        "Every key of `HSQ_REFUNDS` (durations in seconds, or a `timedelta`):",
        "",
        "| key | default | |",
        "|---|---|---|",
        *key_rows(settings_table()),
        "",
        "Every key of one `MERCHANTS` entry:",
        "",
        "| key | | |",
        "|---|---|---|",
    ]
    for key, setting in merchant_settings_table().items():
        given = (
            "required" if setting.required else "the global one" if setting.inherits else "`None`"
        )
        lines.append(f"| `{key}` | {given} | {setting.doc} |")
    lines += [
        "",
        "Every key of `HEALTH`, the thresholds of the health checks (`None` switches one off):",
        "",
        "| key | default | |",
        "|---|---|---|",
        *key_rows(health_settings_table()),
        "",
        "The ids of `manage.py check`:",
        "",
        "| id | |",
        "|---|---|",
    ]
    lines += [f"| `{check_id}` | {meaning} |" for check_id, meaning in CHECK_IDS.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    print(settings_reference_markdown(), end="")
