"""Money at the edges: amounts are integer fen everywhere, yuan only where people read them."""

from __future__ import annotations

import re
from decimal import Decimal, DecimalException

from .exceptions import AmountError
from .gateway.validation import MAX_AMOUNT_FEN

__all__ = ["MAX_FEN", "MAX_YUAN", "fen_to_yuan", "format_fen", "yuan_to_fen"]

#: The largest amount, in fen, either way, that :func:`yuan_to_fen` gives: the gateway's own
#: bound (:func:`~hsq_refunds.gateway.validation.check_amount`), so that what converts can be
#: sent, and far below what the BigIntegerField columns hold.
MAX_FEN = MAX_AMOUNT_FEN
#: The same bound in yuan, with two decimals: ``Decimal("100000000000000.00")``.
MAX_YUAN = Decimal(f"{MAX_FEN}e-2")

# An amount as text, once the whitespace around it is dropped: ASCII digits, an optional sign,
# decimal point and exponent (what ``str(Decimal)`` writes), or the names of the non-finite
# values (refused, but named as such). No digit separators, no other scripts' digits.
_YUAN_TEXT = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|s?nan[0-9]*)",
    re.ASCII | re.IGNORECASE,
)
#: How much of a refused amount its error message repeats.
_SHOWN_LENGTH = 40


def fen_to_yuan(fen: int | None) -> Decimal | None:
    """``1234`` -> ``Decimal("12.34")``, exactly."""
    return None if fen is None else Decimal(fen).scaleb(-2).quantize(Decimal("0.01"))


def format_fen(fen: int | None) -> str:
    """``128800`` -> ``"¥1,288.00"``: computed on integers, never through float."""
    if fen is None:
        return "-"
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"


def yuan_to_fen(amount: Decimal | str) -> int:
    """``Decimal("12.34")`` (or the text ``"12.34"``) -> ``1234``, exactly.

    Refused with an :class:`AmountError` (a ``ValueError``) naming what is wrong: more than two
    decimals (``12.340`` is fine: the zeros are no fraction of a fen), more than
    :data:`MAX_FEN` fen either way, NaN or an infinity, text that is not a number in ASCII
    digits (whitespace around it is dropped), anything but a ``Decimal`` or text.
    Computed on the number's digits, never in a decimal context: no ``decimal`` signal
    (``Overflow``, ``InvalidOperation``...) can escape, whatever the current context. Whether
    zero or a negative amount is acceptable is the caller's rule.
    """
    if isinstance(amount, str):
        return _fen(_parse(amount), _shown(amount))
    if isinstance(amount, Decimal):
        return _fen(amount, _shown(amount))
    raise AmountError(
        f"an amount in yuan is a Decimal or text, not {type(amount).__name__}", "not_a_number"
    )


def _shown(amount: object) -> str:
    """``amount`` for an error message: quoted when text, cut short when long."""
    text = repr(amount) if isinstance(amount, str) else str(amount)
    if len(text) <= _SHOWN_LENGTH:
        return text
    return f"{text[: _SHOWN_LENGTH - 1]}… ({len(text)} characters)"


def _parse(text: str) -> Decimal:
    """The number that ``text`` (an amount typed by a person) reads as."""
    stripped = text.strip()
    if any(char.isdigit() and not char.isascii() for char in stripped):
        raise AmountError(f"{_shown(text)} has digits other than 0-9", "digits")
    if not _YUAN_TEXT.fullmatch(stripped):
        raise AmountError(f"{_shown(text)} is not an amount in yuan", "not_a_number")
    try:
        return Decimal(stripped)
    except (DecimalException, ValueError):
        # The grammar matched, so only the exponent can be beyond what decimal represents.
        mantissa, _, exponent = stripped.lower().partition("e")
        if not mantissa.strip("+-.0"):  # zero, however large its exponent
            return Decimal(0)
        if exponent.startswith("-"):
            raise AmountError(f"{_shown(text)} has more than two decimals", "decimals") from None
        raise AmountError(
            f"{_shown(text)} is out of range: at most {MAX_YUAN} yuan either way", "too_large"
        ) from None


def _fen(amount: Decimal, shown: str) -> int:
    """``amount`` in fen, from its sign, digits and exponent (no decimal context involved)."""
    if not amount.is_finite():
        raise AmountError(f"{shown} is not a finite amount", "not_finite")
    if amount.is_zero():
        return 0
    if amount.adjusted() > MAX_YUAN.adjusted():  # its leading digit is beyond the bound's
        raise AmountError(
            f"{shown} is out of range: at most {MAX_YUAN} yuan either way", "too_large"
        )
    sign, digits, exponent = amount.as_tuple()
    if not isinstance(exponent, int):  # cannot be: it is finite
        raise AmountError(f"{shown} is not a finite amount", "not_finite")
    coefficient = "".join(map(str, digits))
    significant = coefficient.rstrip("0")
    exponent += len(coefficient) - len(significant)  # 12.3400 is 12.34
    if exponent < -2:
        raise AmountError(f"{shown} has more than two decimals", "decimals")
    # At most MAX_YUAN's digits in front of the point and two after it: a short int.
    fen = int(significant) * 10 ** (exponent + 2)
    if fen > MAX_FEN:
        raise AmountError(
            f"{shown} is out of range: at most {MAX_YUAN} yuan either way", "too_large"
        )
    return -fen if sign else fen
