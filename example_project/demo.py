"""``make demo``: the example project syncing a mix of refunds with a local HSQ sandbox gateway.

Non-interactive and self-contained: it starts the sandbox gateway in this process (on a free
port, so it never collides with ``make serve``), records ten refunds the way a merchant's
checkout does, runs ``manage.py sync_refunds`` as cron would (in this process, so that it
starts at once), waits a few seconds for the quick refunds to settle, syncs again and prints
where every refund ended up.

The demo has its own SQLite database (``var/demo.sqlite3``) unless ``DATABASE_URL`` is set, and
starts each run from fresh refunds. It always talks to the sandbox, never to HSQ: the
``HSQ_*`` credentials of a real merchant account are ignored here.

Exit status: 0 when every refund ended as the app's rules say it should; 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from example_project import environment
from example_project.console import Style, render_table, yuan
from example_project.scenario import QUICK, ExampleRefund, make_refunds, place_at_gateway, track

__all__ = ["main"]

_MANAGE = Path("example_project") / "manage.py"
#: Seconds to wait past the slowest quick timeline, so that the second sync sees it finished.
_SETTLE_MARGIN = 1.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    argparse.ArgumentParser(
        prog="python -m example_project.demo",
        description=(__doc__ or "").split("\n\n")[0],
    ).parse_args(argv)
    style = Style()
    _make_output_safe()
    ignored = _use_sandbox_only()
    base = environment.var_dir()
    os.environ.setdefault("DATABASE_URL", "sqlite://" + quote((base / "demo.sqlite3").as_posix()))
    os.environ["DJANGO_SETTINGS_MODULE"] = "example_project.settings"

    from hsq_refunds.sandbox import SandboxServer

    credentials = environment.sandbox_credentials(base)
    server = SandboxServer(credentials, "127.0.0.1", 0).start()
    try:
        os.environ["HSQ_SANDBOX_PORT"] = str(server.port)
        return _run(server, credentials.merchant_no, base, ignored, style)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `make demo | head`: the reader has gone, and so has the output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        server.stop()


def _run(server: Any, merchant_no: str, base: Path, ignored: list[str], style: Style) -> int:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from hsq_refunds.conf import get_settings

    _heading(style, "hsq_refunds demo: syncing refunds with a local HSQ sandbox gateway")
    print(f"Sandbox gateway  {server.url}  (merchant {merchant_no})")
    print(f"Sandbox keys     {_shown_path(base / 'sandbox')}")
    print(f"Database         {_describe_database(connection.settings_dict)}")
    if ignored:
        names = ", ".join(ignored)
        print(style.yellow(f"Ignored          {names}: the demo only talks to the sandbox"))

    call_command("migrate", verbosity=0, interactive=False)
    _forget_earlier_runs(merchant_no)

    from django.utils import timezone

    refunds = make_refunds(timezone.now(), QUICK, not_found_grace=get_settings().NOT_FOUND_GRACE)
    track(refunds)
    # The quick timelines start now; the first sync follows at once, to find them unfinished.
    placed_at = time.monotonic()
    place_at_gateway(server, refunds)
    _heading(style, f"1. {len(refunds)} refunds applied for, and tracked with Refund.objects.track")
    print(_seeded_table(refunds, style))

    _heading(style, "2. The sync that cron runs every minute: the refunds that are due")
    if not _sync(style):
        return 1

    settle = max(QUICK.balance, QUICK.failure) + _SETTLE_MARGIN
    wait = placed_at + settle - time.monotonic()
    _heading(style, "3. Giving the balance refunds a few seconds to settle at HSQ")
    if wait > 0:
        time.sleep(wait)

    _heading(style, "4. Syncing again, now (--all: every unfinished refund, due or not)")
    if not _sync(style, "--all"):
        return 1

    _heading(style, "5. Where each refund ended up")
    rows = _outcomes(refunds)
    print(_outcome_table(rows, style))
    _print_attention(rows, style)
    return _verdict(rows, server.query_counts(), style)


# --------------------------------------------------------------------------- environment


def _make_output_safe() -> None:
    """Never die on a terminal that cannot show Chinese: escape what it cannot encode."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace", line_buffering=True)


def _use_sandbox_only() -> list[str]:
    """Drop a real merchant account's ``HSQ_*`` variables; return the names that were set."""
    ignored = [name for name in environment.HSQ_ENV_VARS if os.environ.get(name)]
    for name in environment.HSQ_ENV_VARS:
        os.environ.pop(name, None)
    return ignored


def _forget_earlier_runs(merchant_no: str) -> None:
    """Delete the sandbox merchant's refunds from earlier runs, so each run starts fresh.

    Only the sandbox merchant's: its number exists nowhere but in the sandbox, so even a
    ``DATABASE_URL`` shared with real data loses nothing else.
    """
    from hsq_refunds.models import Refund

    Refund.objects.filter(merchant_no=merchant_no).delete_with_history()


# --------------------------------------------------------------------------- syncing


def _sync(style: Style, *args: str) -> bool:
    """Run ``manage.py sync_refunds`` (in this process, so it starts at once) and show its output.

    Exit status 1 (some refunds could not be synced) is part of the story; a configuration
    error (2) means the sync could not run at all, and ends the demo.
    """
    from django.core.management import CommandError, call_command

    print(style.cyan(f"$ python {_MANAGE} sync_refunds {' '.join(args)}".rstrip()))
    try:
        call_command("sync_refunds", *args)
    except CommandError as exc:
        print(style.yellow(str(exc)))
        return exc.returncode != 2
    return True


# --------------------------------------------------------------------------- reporting


def _heading(style: Style, text: str) -> None:
    print()
    print(style.bold(text))


def _shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _describe_database(settings_dict: dict[str, Any]) -> str:
    """The database without its password."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"SQLite {_shown_path(Path(settings_dict['NAME']))}"
    host = settings_dict.get("HOST") or "localhost"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"PostgreSQL {settings_dict['NAME']} on {host}{port}"


def _describe_timeline(refund: ExampleRefund) -> str:
    """What the sandbox will answer about a refund, in a few words."""
    if refund.timeline is None:
        return "200004 (never heard of it)"
    steps = []
    for step in refund.timeline:
        what = step.get("status") or step["respCode"]
        seconds = step.get("seconds")
        steps.append(what if seconds is None else f"{what} {seconds:g} s")
    text = " -> ".join(steps)
    if refund.gateway_amount is not None:
        text += f", amount {yuan(refund.gateway_amount)}"
    return text


def _ago(when: datetime) -> str:
    from django.utils import timezone

    minutes = round((timezone.now() - when).total_seconds() / 60)
    return f"{minutes} min ago"


def _seeded_table(refunds: Sequence[ExampleRefund], style: Style) -> str:
    rows = [
        [r.trans_no, yuan(r.amount), r.case, _ago(r.applied_at), _describe_timeline(r)]
        for r in refunds
    ]
    return render_table(
        ["transNo", "amount", "case", "applied", "HSQ (the sandbox) will answer"],
        rows,
        right=[1],
        style=style,
    )


def _outcomes(refunds: Sequence[ExampleRefund]) -> list[tuple[ExampleRefund, Any]]:
    from hsq_refunds.models import Refund

    found = Refund.objects.filter(trans_no__in=[refund.trans_no for refund in refunds])
    rows = {row.trans_no: row for row in found}
    return [(refund, rows[refund.trans_no]) for refund in refunds]


def _status_cell(status: str, style: Style) -> tuple[str, str]:
    colour = {"SUCCESS": style.green, "FAIL": style.red}.get(status, style.yellow)
    return status, colour(status)


def _outcome_table(rows: Sequence[tuple[ExampleRefund, Any]], style: Style) -> str:
    table = []
    for refund, row in rows:
        attention = row.attention_reason if row.needs_attention else "-"
        error = f"{row.last_error_type} {row.last_error_code}".strip()
        table.append(
            [
                row.trans_no,
                yuan(row.amount),
                refund.case,
                _status_cell(row.status, style),
                row.resp_code or "-",
                row.resp_msg or (f"error: {error}" if error else "-"),
                (attention, style.yellow(attention) if row.needs_attention else attention),
            ]
        )
    return render_table(
        ["transNo", "amount", "case", "status", "respCode", "respMsg", "attention"],
        table,
        right=[1],
        style=style,
    )


def _print_attention(rows: Sequence[tuple[ExampleRefund, Any]], style: Style) -> None:
    flagged = [(refund, row) for refund, row in rows if row.needs_attention]
    if not flagged:
        return
    _heading(style, f'{len(flagged)} refunds wait for a person (admin: "needs attention")')
    indent = " " * (len(flagged[0][1].trans_no) + 4)
    width = max(min(shutil.get_terminal_size().columns, 110), 60)
    for _refund, row in flagged:
        print(f"  {row.trans_no}  {style.yellow(row.get_attention_reason_display())}")
        if row.attention_detail:
            print(
                textwrap.fill(
                    row.attention_detail, width, initial_indent=indent, subsequent_indent=indent
                )
            )


def _verdict(
    rows: Sequence[tuple[ExampleRefund, Any]], counts: dict[str, int], style: Style
) -> int:
    wrong = [
        (refund, row)
        for refund, row in rows
        if row.status != refund.expect_status
        or (row.attention_reason if row.needs_attention else "") != refund.expect_attention
    ]
    print()
    print(f"The sandbox gateway answered {sum(counts.values())} queries.", end=" ")
    if wrong:
        print(style.red(f"{len(wrong)} refunds did not end as the rules say:"))
        for refund, row in wrong:
            print(
                f"  {row.trans_no}: {row.status}/{row.attention_reason or '-'}, expected "
                f"{refund.expect_status}/{refund.expect_attention or '-'}"
            )
        return 1
    print(style.green("Every refund ended as the rules say."))
    print(
        "Next: `make serve` runs the admin, the sandbox and a django-q2 cluster, with refunds "
        "that move over a few minutes."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
