"""``python -m tests.reliability.debug_manage COMMAND [ARGS...]``: a management command with every
log record, down to DEBUG and from every logger, written to stderr.

The test settings configure no logging, so a plain ``manage.py`` child would show only
warnings. The secrets tests run children through this module to see everything they log.
Exit status: the command's own (``CommandError.returncode``), else 0.
"""

from __future__ import annotations

import logging
import sys

import django
from django.core.management import call_command
from django.core.management.base import CommandError


def main(argv: list[str]) -> int:
    django.setup()  # configures Django's logging first, so that ours is not replaced
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        call_command(*argv)
    except CommandError as exc:
        sys.stderr.write(f"CommandError: {exc}\n")
        return exc.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
