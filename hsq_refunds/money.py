"""Money at the edges: amounts are integer fen everywhere, yuan only where people read them."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["fen_to_yuan", "format_fen", "yuan_to_fen"]


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


def yuan_to_fen(amount: Decimal) -> int:
    """``Decimal("12.34")`` -> ``1234``, exactly; more than two decimals is a ``ValueError``."""
    fen = amount.scaleb(2)
    if fen != fen.to_integral_value():
        raise ValueError(f"{amount} has more than two decimals")
    return int(fen)
