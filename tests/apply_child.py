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

``--kill before|after``: the process SIGKILLs itself at the seam of ``hsq_refunds.apply`` of that
name: ``before`` right after the refund row is committed and before the request is sent,
``after`` once the request was sent (and answered) and before the answer is written.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def _die(refund: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.apply_child")
    parser.add_argument("--orig-trans-no", required=True)
    parser.add_argument("--orig-amount", type=int, required=True)
    parser.add_argument("--amount", type=int, required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--dawdle", type=float, default=0.0)
    parser.add_argument("--kill", choices=["before", "after"])
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.db import connection

    from hsq_refunds import apply as apply_module
    from hsq_refunds.conf import default_merchant_no, get_client
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
        setattr(apply_module, f"_{args.kill}_send", _die)
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
            refund = Refund.objects.apply(
                orig_trans_no=args.orig_trans_no,
                orig_amount=args.orig_amount,
                amount=args.amount,
                trans_no=trans_no,
            )
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
