"""Exceptions of the app's own (the gateway's are in :mod:`hsq_refunds.gateway.errors`)."""

from __future__ import annotations

__all__ = ["RefundRefused"]


class RefundRefused(ValueError):
    """An application the app refused before anything was written or sent: the order's refunds
    would exceed what was paid, or the paid amount disagrees with the one given before.

    ``orig_trans_no`` names the order; ``paid``, ``taken`` (refunded or in flight) and ``asked``
    are in fen, where they apply.
    """

    def __init__(
        self,
        message: str,
        *,
        orig_trans_no: str,
        paid: int | None = None,
        taken: int | None = None,
        asked: int | None = None,
    ) -> None:
        super().__init__(message)
        self.orig_trans_no = orig_trans_no
        self.paid = paid
        self.taken = taken
        self.asked = asked
