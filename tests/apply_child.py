"""``python -m tests.apply_child``: refund applications from a child process of a test.

Run with the environment of :func:`tests.processes.child_env`, so that the child uses the test's
database and ``HSQ_REFUNDS``. It applies for ``--count`` refunds of ``--amount`` fen against one
original order (transNos ``<prefix>000``, ``<prefix>001``...) with ``Refund.objects.apply`` and
prints one line of JSON: per application, its transNo and either how HSQ's answer was recorded
or that it was refused (``RefundRefused``).

``--wait``: once Django, the database connection and the merchant's client are ready, print
``ready`` and wait for ``go`` on stdin, so that a test can start several children at once.

``--dawdle SECONDS``: sleep this long between adding up the order's refunds and writing the new
row (inside the application's transaction), as a slow database would: two applications that
were not decided one after the other would then both see the same total.

``--kill committed|before|after``: the process SIGKILLs itself at the seam of
``hsq_refunds.apply`` of that name: ``committed`` right after the refund's row is committed
(``queued``) and before its send is counted, ``before`` once the send is counted (``sending``)
and before the request goes out, ``after`` once the request was sent (and answered) and before
the answer is written. ``--atomic``: apply inside ``transaction.atomic()``, so that the row is
committed by the caller's commit and sent from its ``on_commit`` hook.

``--random-kills N --seed S``: instead, apply for ``N`` refunds, each in a process of its own
(forked from this one) that SIGKILLs itself at a random point between the commit of its row
and the conditional ``UPDATE`` that counts its send: the ``k``-th line Python runs after the
commit, ``k`` drawn at random up to the line of that ``UPDATE``; half of them inside
``atomic()``. Prints the transNos, the points and the signals the processes died of.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import signal
import sys
import time
from types import FrameType
from typing import Any


def _die(*_args: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _claim_line(send_queued: Any) -> int:
    """The line of ``_send_queued`` where the conditional UPDATE that counts the send starts."""
    lines, first = inspect.getsourcelines(send_queued)
    for offset, line in enumerate(lines):
        if line.strip().startswith("counted = "):
            return first + offset
    raise AssertionError("no conditional UPDATE in _send_queued")


def _lines_to_claim(send_queued: Any, claim_line: int, before: int | None) -> int:
    """Trace from now on: count the lines run, and SIGKILL at the ``before``-th one or at the
    claim's line, whichever comes first; without ``before``, return the count at the claim."""
    count = 0

    def tracer(frame: FrameType, event: str, _arg: object) -> Any:
        nonlocal count
        if event != "line":
            return tracer
        at_claim = frame.f_code is send_queued.__code__ and frame.f_lineno == claim_line
        if at_claim and before is None:
            raise _AtClaim(count)
        if at_claim or (before is not None and count >= before):
            _die()
        count += 1
        return tracer

    sys.settrace(tracer)
    return count


class _AtClaim(Exception):
    def __init__(self, count: int) -> None:
        self.count = count


def _random_kills(args: argparse.Namespace) -> int:
    from django.db import connections, transaction

    from hsq_refunds import apply as apply_module
    from hsq_refunds.clients import get_client
    from hsq_refunds.conf import default_merchant_no
    from hsq_refunds.models import Refund

    get_client(default_merchant_no())  # keys and settings loaded once, before the forks
    claim_line = _claim_line(apply_module._send_queued)
    # How many lines run from the seam to the claim: _send_queued on a row that is not there.
    try:
        _lines_to_claim(apply_module._send_queued, claim_line, None)
        apply_module._send_queued(-1)
    except _AtClaim as reached:
        span = reached.count
    finally:
        sys.settrace(None)
    chooser = random.Random(args.seed)
    runs = []
    for number in range(args.random_kills):
        trans_no = f"{args.prefix}{number:03d}"
        point = chooser.randint(0, span)
        inside = number % 2 == 1
        connections.close_all()  # each process opens a connection of its own
        pid = os.fork()
        if pid == 0:  # the child: apply, and die at the chosen point
            apply_module._committed = lambda _pk, p=point: _lines_to_claim(
                apply_module._send_queued, claim_line, p
            )
            try:
                if inside:
                    with transaction.atomic():
                        _apply(Refund, args, trans_no)
                else:
                    _apply(Refund, args, trans_no)
            finally:
                os._exit(3)  # not killed: the test fails on the exit code
        _, status = os.waitpid(pid, 0)
        runs.append(
            {
                "transNo": trans_no,
                "point": point,
                "atomic": inside,
                "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            }
        )
    print(json.dumps({"span": span, "runs": runs}), flush=True)
    return 0


def _apply(refund_model: Any, args: argparse.Namespace, trans_no: str) -> Any:
    return refund_model.objects.apply(
        orig_trans_no=args.orig_trans_no,
        orig_amount=args.orig_amount,
        amount=args.amount,
        trans_no=trans_no,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.apply_child")
    parser.add_argument("--orig-trans-no", required=True)
    parser.add_argument("--orig-amount", type=int, required=True)
    parser.add_argument("--amount", type=int, required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--dawdle", type=float, default=0.0)
    parser.add_argument("--kill", choices=["committed", "before", "after"])
    parser.add_argument("--atomic", action="store_true")
    parser.add_argument("--random-kills", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import django

    django.setup()
    if args.random_kills:
        return _random_kills(args)
    from django.db import connection, transaction

    from hsq_refunds import apply as apply_module
    from hsq_refunds.clients import get_client
    from hsq_refunds.conf import default_merchant_no
    from hsq_refunds.exceptions import RefundRefused
    from hsq_refunds.models import Refund

    if args.dawdle:
        add_up = apply_module._taken

        def slow_taken(merchant_no: str, orig_trans_no: str) -> int:
            total = add_up(merchant_no, orig_trans_no)
            time.sleep(args.dawdle)
            return total

        apply_module._taken = slow_taken
    if args.kill:
        seam = {"committed": "_committed", "before": "_before_send", "after": "_after_send"}
        setattr(apply_module, seam[args.kill], _die)
    if args.wait:
        connection.ensure_connection()
        get_client(default_merchant_no())  # the keys are loaded before the start
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 2

    outcomes = []
    for number in range(args.count):
        trans_no = f"{args.prefix}{number:03d}"
        try:
            if args.atomic:
                with transaction.atomic():
                    refund = _apply(Refund, args, trans_no)
            else:
                refund = _apply(Refund, args, trans_no)
        except RefundRefused as exc:
            outcomes.append({"transNo": trans_no, "refused": True, "taken": exc.taken})
        else:
            outcomes.append(
                {"transNo": trans_no, "application": refund.application, "status": refund.status}
            )
    print(json.dumps(outcomes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
