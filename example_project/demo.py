"""``make demo``: the example project applying for refunds and syncing them with a local HSQ
sandbox gateway, HSQ's notifications included.

Non-interactive and self-contained: it starts the sandbox gateway in this process (on a free
port, so it never collides with ``make serve``) and the example project's own site on another
(the notification view, ``NOTIFY_URL``); applies for eight refunds through the app
(``Refund.objects.apply``: balance ones that finish in seconds, bank-card ones that stay
``PROCESSING``, one HSQ refuses, two partial refunds of one order and a third the app refuses
for exceeding what was paid); tracks five refunds applied for elsewhere
(``Refund.objects.track``), some of them wrong on purpose; runs ``manage.py sync_refunds`` as
cron would (in this process, so that it starts at once), waits for HSQ's notifications, syncs
again and prints where every refund ended up, and whether its final status came by notification
or by query.

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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from example_project import environment
from example_project.console import Style, pad, render_table, yuan
from example_project.scenario import (
    BY_NOTIFICATION,
    QUICK,
    Applied,
    ExampleRefund,
    apply,
    declare_orders,
    make_refunds,
    place_at_gateway,
    track,
)

__all__ = ["main"]

_MANAGE = Path("example_project") / "manage.py"
_FINAL = ("SUCCESS", "FAIL")
#: Seconds to wait past the slowest quick timeline, so that the second sync sees it finished.
_SETTLE_MARGIN = 1.0
#: Seconds past the quick timelines to wait for notifications (the sandbox retries after 1, 2
#: and 5 s when a delivery fails) before the demo syncs again all the same.
_NOTIFY_PATIENCE = 15.0


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

    from example_project.receiver import NotificationReceiver
    from hsq_refunds.sandbox import SandboxServer

    credentials = environment.sandbox_credentials(base)
    # Bound now, so that the settings (read when Django is set up) know both addresses.
    receiver = NotificationReceiver("127.0.0.1", 0)
    server = SandboxServer(credentials, "127.0.0.1", 0)
    try:
        server.start()
        os.environ["HSQ_SANDBOX_PORT"] = str(server.port)
        os.environ["HSQ_NOTIFY_URL"] = receiver.url
        return _run(server, receiver, credentials.merchant_no, base, ignored, style)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `make demo | head`: the reader has gone, and so has the output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        server.stop()  # first: its notifier delivers to the receiver
        receiver.stop()


def _run(
    server: Any, receiver: Any, merchant_no: str, base: Path, ignored: list[str], style: Style
) -> int:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from hsq_refunds.conf import get_settings

    _heading(
        style, "hsq_refunds demo: refunds applied for, notified and synced, at a local sandbox"
    )
    print(f"Sandbox gateway  {server.url}  (merchant {merchant_no})")
    print(f"Notifications    {receiver.url}  (NOTIFY_URL: this project, served for the demo)")
    print(f"Sandbox keys     {_shown_path(base / 'sandbox')}")
    print(f"Database         {_describe_database(connection.settings_dict)}")
    if ignored:
        names = ", ".join(ignored)
        print(style.yellow(f"Ignored          {names}: the demo only talks to the sandbox"))

    call_command("migrate", verbosity=0, interactive=False)
    _forget_earlier_runs(merchant_no)
    receiver.start()

    policy = get_settings()
    refunds = make_refunds(timezone.now(), QUICK, not_found_grace=policy.NOT_FOUND_GRACE)
    declare_orders(server, refunds, QUICK)
    to_apply = [refund for refund in refunds if refund.applied_here]
    _heading(style, f"1. {len(to_apply)} refunds applied for through the app, Refund.objects.apply")
    print(style.cyan(_example_call(to_apply[0])))
    applied_at = time.monotonic()
    applied = apply(refunds)
    print(_applied_table(applied, style))
    _print_refusals(applied, style)

    tracked = [refund for refund in refunds if not refund.applied_here]
    place_at_gateway(server, refunds)
    placed_at = time.monotonic()
    track(refunds)
    _heading(
        style,
        f"2. {len(tracked)} refunds applied for elsewhere, tracked with Refund.objects.track",
    )
    print(_tracked_table(tracked, style))

    _heading(style, "3. The sync that cron runs every minute: the refunds that are due")
    print(style.dim(_not_due_yet(applied)))
    if not _sync(style):
        return 1

    _heading(style, f"4. HSQ's notifications reaching {receiver.url}")
    _await_notifications(applied, applied_at, style)
    settle = placed_at + max(QUICK.balance, QUICK.failure) + _SETTLE_MARGIN - time.monotonic()
    if settle > 0:
        time.sleep(settle)

    _heading(style, "5. Syncing again, now (--all: every unfinished refund, due or not)")
    if not _sync(style, "--all"):
        return 1

    _heading(style, "6. Where each refund ended up")
    outcomes = _outcomes(refunds)
    print(_outcome_table(outcomes, style))
    _print_attention(outcomes, style)
    return _verdict(outcomes, applied, server, receiver.url, policy.FIRST_QUERY_DELAY, style)


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
    """Delete the sandbox merchant's refunds and paid orders from earlier runs, so each run
    starts fresh.

    Only the sandbox merchant's: its number exists nowhere but in the sandbox, so even a
    ``DATABASE_URL`` shared with real data loses nothing else.
    """
    from hsq_refunds.models import PaidOrder, Refund

    Refund.objects.filter(merchant_no=merchant_no).delete_with_history()
    PaidOrder.objects.filter(merchant_no=merchant_no).delete()


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


def _not_due_yet(applied: Sequence[Applied]) -> str:
    """When the refunds just applied for are first asked about: HSQ notifies them first."""
    from django.db.models import Min
    from django.utils import timezone

    from hsq_refunds.models import Refund

    nos = [item.refund.trans_no for item in applied if item.row is not None]
    first = Refund.objects.filter(trans_no__in=nos).aggregate(first=Min("next_query_at"))["first"]
    if first is None:
        return "The refunds applied for above are not due: none is asked about."
    seconds = max((first - timezone.now()).total_seconds(), 0)
    return (
        f"The refunds applied for above are not due yet (the first in {seconds:.0f} s): "
        "HSQ notifies the site (returnUrl) of each new status."
    )


def _await_notifications(applied: Sequence[Applied], since: float, style: Style) -> None:
    """Show each applied refund's final status as HSQ's notification writes it, until every
    refund meant to finish during the demo has (or the patience runs out)."""
    from hsq_refunds.models import Refund

    rows = {item.refund.trans_no: item.refund for item in applied if item.row is not None}
    awaited = {no for no, refund in rows.items() if refund.expect_status in _FINAL}
    deadline = since + max(QUICK.balance, QUICK.failure) + _NOTIFY_PATIENCE
    shown: set[str] = set()
    while True:
        found = Refund.objects.filter(trans_no__in=rows, status__in=_FINAL).values_list(
            "trans_no", "status", "final_source"
        )
        for trans_no, status, source in sorted(found):
            if trans_no in shown:
                continue
            shown.add(trans_no)
            plain, coloured = _status_cell(status, style)
            cell = coloured + pad("", 7 - len(plain))
            print(
                f"  {time.monotonic() - since:4.1f} s  {trans_no}  {cell}  by {source or '-'}"
                f"  ({rows[trans_no].case})"
            )
        if awaited <= shown or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    waiting = [rows[no] for no in rows if no not in shown]
    if waiting:
        cases = "; ".join(sorted({refund.case for refund in waiting}))
        print(
            f"  {len(waiting)} still PROCESSING ({cases}): notified of PROCESSING at once; "
            "bank-card refunds take 1-3 working days at HSQ."
        )


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


def _example_call(refund: ExampleRefund) -> str:
    return (
        f'>>> Refund.objects.apply(orig_trans_no="{refund.orig_trans_no}", '
        f'orig_amount={refund.orig_amount}, amount={refund.amount}, reason="{refund.reason}", '
        f'trans_no="{refund.trans_no}")'
    )


def _applied_table(applied: Sequence[Applied], style: Style) -> str:
    rows = []
    for item in applied:
        refund, row = item.refund, item.row
        if row is None:
            text = "refused by the app: nothing sent"
            answer = (text, style.yellow(text))
        else:
            text = f"{row.application}, {row.status}"
            answer = (text, text)
        rows.append(
            [
                refund.trans_no,
                yuan(refund.amount),
                refund.orig_trans_no,
                yuan(refund.orig_amount),
                f"{refund.case} ({refund.kind})",
                answer,
            ]
        )
    return render_table(
        ["transNo", "amount", "of order", "paid", "case (order kind)", "application"],
        rows,
        right=[1, 3],
        style=style,
    )


def _print_refusals(applied: Sequence[Applied], style: Style) -> None:
    width = max(min(shutil.get_terminal_size().columns, 110), 60)
    for item in applied:
        if item.refused is not None:
            print(f"  {item.refund.trans_no}: {style.yellow(type(item.refused).__name__)}")
            print(
                textwrap.fill(
                    str(item.refused), width, initial_indent="    ", subsequent_indent="    "
                )
            )


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


def _tracked_table(refunds: Sequence[ExampleRefund], style: Style) -> str:
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


@dataclass(frozen=True)
class _Outcome:
    """One recorded refund at the end, with what its audit rows say."""

    refund: ExampleRefund
    row: Any
    final_by: str
    """The ``RefundQuery.source`` of the answer that made it final (``""``: not final)."""
    queries: int
    """Its queries to HSQ (audit rows of source ``query``)."""
    queried_after: int
    """Of those, how many were sent after it was final."""


def _outcomes(refunds: Sequence[ExampleRefund]) -> list[_Outcome]:
    from hsq_refunds.choices import Source
    from hsq_refunds.models import Refund

    found = Refund.objects.filter(
        trans_no__in=[refund.trans_no for refund in refunds]
    ).prefetch_related("queries")
    rows = {row.trans_no: row for row in found}
    outcomes = []
    for refund in refunds:
        row = rows.get(refund.trans_no)
        if row is None:
            continue  # refused by the app: nothing was written
        answers = sorted(row.queries.all(), key=lambda answer: (answer.queried_at, answer.id))
        final_at = None
        final_by = ""
        if row.status in _FINAL:
            for answer in answers:
                if answer.outcome == "ok" and answer.status_seen == row.status:
                    final_at, final_by = answer.queried_at, answer.source
                    break
        queries = [answer for answer in answers if answer.source == Source.QUERY]
        after = [a for a in queries if final_at is not None and a.queried_at > final_at]
        outcomes.append(_Outcome(refund, row, final_by, len(queries), len(after)))
    return outcomes


def _status_cell(status: str, style: Style) -> tuple[str, str]:
    colour = {"SUCCESS": style.green, "FAIL": style.red}.get(status, style.yellow)
    return status, colour(status)


def _outcome_table(outcomes: Sequence[_Outcome], style: Style) -> str:
    table = []
    for outcome in outcomes:
        row = outcome.row
        attention = row.attention_reason if row.needs_attention else "-"
        error = f"{row.last_error_type} {row.last_error_code}".strip()
        final_by = outcome.final_by or "-"
        table.append(
            [
                row.trans_no,
                yuan(row.amount),
                outcome.refund.case,
                _status_cell(row.status, style),
                row.resp_code or "-",
                row.resp_msg or (f"error: {error}" if error else "-"),
                (attention, style.yellow(attention) if row.needs_attention else attention),
                (final_by, style.cyan(final_by) if final_by == BY_NOTIFICATION else final_by),
                str(outcome.queries),
            ]
        )
    return render_table(
        [
            "transNo",
            "amount",
            "case",
            "status",
            "respCode",
            "respMsg",
            "attention",
            "final by",
            "queries",
        ],
        table,
        right=[1],
        style=style,
    )


def _print_attention(outcomes: Sequence[_Outcome], style: Style) -> None:
    flagged = [outcome.row for outcome in outcomes if outcome.row.needs_attention]
    if not flagged:
        return
    _heading(style, f'{len(flagged)} refunds wait for a person (admin: "needs attention")')
    indent = " " * (len(flagged[0].trans_no) + 4)
    width = max(min(shutil.get_terminal_size().columns, 110), 60)
    for row in flagged:
        print(f"  {row.trans_no}  {style.yellow(row.get_attention_reason_display())}")
        if row.attention_detail:
            print(
                textwrap.fill(
                    row.attention_detail, width, initial_indent=indent, subsequent_indent=indent
                )
            )


def _problems(outcomes: Sequence[_Outcome], applied: Sequence[Applied], server: Any) -> list[str]:
    """Everything that did not end as the app's rules say."""
    from hsq_refunds.models import Refund

    problems = []
    counts = server.query_counts()
    applications = server.application_counts()
    for outcome in outcomes:
        refund, row = outcome.refund, outcome.row
        attention = row.attention_reason if row.needs_attention else ""
        if (row.status, attention) != (refund.expect_status, refund.expect_attention):
            problems.append(
                f"{row.trans_no}: {row.status}/{attention or '-'}, expected "
                f"{refund.expect_status}/{refund.expect_attention or '-'}"
            )
        if outcome.final_by != refund.expect_final_by:
            problems.append(
                f"{row.trans_no}: final by {outcome.final_by or '-'}, expected "
                f"{refund.expect_final_by or '-'}"
            )
        if outcome.final_by == BY_NOTIFICATION and counts.get(row.trans_no):
            problems.append(
                f"{row.trans_no}: final by notification, yet HSQ was queried "
                f"{counts[row.trans_no]} times"
            )
        if outcome.queried_after:
            problems.append(f"{row.trans_no}: queried {outcome.queried_after} times once final")
    for item in applied:
        trans_no = item.refund.trans_no
        received = applications.get(trans_no, {}).get("received", 0)
        if item.refund.expect_refused:
            if item.refused is None:
                problems.append(f"{trans_no}: applied for, expected RefundRefused")
            if received or Refund.objects.filter(trans_no=trans_no).exists():
                problems.append(f"{trans_no}: refused by the app, yet written or sent")
        elif item.refused is not None:
            problems.append(f"{trans_no}: refused by the app ({item.refused})")
        elif received != 1:
            problems.append(f"{trans_no}: HSQ received its application {received} times, not once")
    for trans_no, attempts in server.notification_log().items():
        for attempt in attempts:
            if attempt["result"] != "acknowledged":
                problems.append(
                    f"{trans_no}: notification of {attempt['order_status']} "
                    f"{attempt['result']} (HTTP {attempt['http_status']})"
                )
    return problems


def _verdict(
    outcomes: Sequence[_Outcome],
    applied: Sequence[Applied],
    server: Any,
    notify_url: str,
    first_query_delay: float,
    style: Style,
) -> int:
    problems = _problems(outcomes, applied, server)
    counts = server.query_counts()
    notifications = server.notification_log()
    delivered = sum(
        attempt["result"] == "acknowledged" for log in notifications.values() for attempt in log
    )
    recorded = [outcome for outcome in outcomes if outcome.refund.applied_here]
    notified = [outcome for outcome in recorded if outcome.final_by == BY_NOTIFICATION]
    unqueried = [outcome for outcome in notified if not counts.get(outcome.row.trans_no)]
    print()
    print(
        f"Applied through the app: {len(recorded)} refunds; {len(notified)} became final by "
        f"HSQ's notification, and {len(unqueried)} of those were never queried. Polling alone "
        f"asks about every refund at least once ({first_query_delay:g} s after applying, then "
        f"until it is final): the notifications saved at least {len(unqueried)} queries."
    )
    print(
        f"The sandbox gateway answered {sum(counts.values())} queries and "
        f"{sum(entry['received'] for entry in server.application_counts().values())} "
        f"applications, and delivered {delivered} notifications to {notify_url}.",
        end=" ",
    )
    if problems:
        print(style.red(f"{len(problems)} things did not end as the rules say:"))
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(style.green("Every refund ended as the rules say."))
    print(
        "Next: `make serve` runs the admin, the sandbox and a django-q2 cluster, with refunds "
        "that move over a few minutes and notifications that turn them green."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
