"""Exceptions of the app's own (the gateway's are in :mod:`hsq_refunds.gateway.errors`)."""

from __future__ import annotations

from .gateway import TransportError

__all__ = ["AmountError", "RateLimitTimeout", "RefundRefused"]


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


class AmountError(ValueError):
    """An amount in yuan that :func:`~hsq_refunds.money.yuan_to_fen` refuses. ``code`` says
    what is wrong:

    * ``"not_a_number"``: neither a ``Decimal`` nor text that reads as a number;
    * ``"digits"``: text with digits other than ASCII 0-9 (full-width ``１２``, for instance);
    * ``"not_finite"``: NaN, sNaN, or an infinity;
    * ``"decimals"``: a fraction of a fen (more than two decimals that are not zeros);
    * ``"too_large"``: more than :data:`~hsq_refunds.money.MAX_FEN` fen, either way.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class RateLimitTimeout(TransportError):
    """No slot of the shared pace (:class:`~hsq_refunds.ratelimit.SharedRateLimiter`) is free
    within the wait allowed; nothing was sent."""
