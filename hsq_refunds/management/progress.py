"""Progress of a long command: a tqdm bar on a terminal, plain lines in a log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from django.utils.translation import gettext

__all__ = ["Progress", "synced", "verified"]


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
