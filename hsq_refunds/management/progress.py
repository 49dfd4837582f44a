"""What long commands show: progress (a tqdm bar on a terminal, plain lines in a log), and
nothing at all at ``-v 0``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from django.utils.translation import gettext

__all__ = ["Progress", "quiet_unless_logged", "synced", "verified"]


@contextlib.contextmanager
def quiet_unless_logged(verbosity: int) -> Iterator[None]:
    """At ``-v 0``, keep the app's log lines off the terminal when the project configures no
    handler for them: Python would otherwise print warnings through its last-resort handler.
    A project that configures logging gets its lines as configured."""
    logger = logging.getLogger("hsq_refunds")
    if verbosity >= 1 or logger.hasHandlers():
        yield
        return
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def synced(done: int, total: int | None) -> str:
    if total is None:
        return gettext("%(done)d refunds synced") % {"done": done}
    return gettext("%(done)d of %(total)d refunds synced") % {"done": done, "total": total}


def verified(done: int, total: int | None) -> str:
    if total is None:
        return gettext("%(done)d refunds checked") % {"done": done}
    return gettext("%(done)d of %(total)d refunds checked") % {"done": done, "total": total}


class Progress:
    """A tqdm bar on a terminal; otherwise a plain line now and then, and one at the end."""

    def __init__(
        self,
        stream: TextIO,
        *,
        bar: bool,
        counted: Callable[[int, int | None], str] = synced,
    ) -> None:
        self.stream = stream
        self.counted = counted
        self.bar: Any = None
        self.use_bar = bar
        self.step: int | None = None
        self.next_line = 0

    def __call__(self, done: int, total: int | None) -> None:
        if self.use_bar:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, file=self.stream, unit=gettext("refund"), leave=False)
            self.bar.update(done - self.bar.n)
            return
        if self.step is None:
            # About every tenth of the way, and never more often than every 25 refunds.
            self.step = max(25, total // 10) if total else 100
            self.next_line = self.step
        if done >= self.next_line or (done and done == total):
            self.stream.write(self.counted(done, total) + "\n")
            self.stream.flush()
            self.next_line = done + self.step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
