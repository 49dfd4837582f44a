"""``yuan_to_fen`` on whatever people type: an exact int within the gateway's bound, or a
``ValueError`` naming what is wrong; never ``decimal.Overflow``, ``InvalidOperation`` or any
other exception, whatever the decimal context."""

from __future__ import annotations

import decimal
from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsq_refunds.exceptions import AmountError
from hsq_refunds.gateway.validation import MAX_AMOUNT_FEN, check_amount
from hsq_refunds.money import MAX_FEN, MAX_YUAN, yuan_to_fen

FOUR_HUNDRED_DIGITS = "9" * 400

#: What people may type, and why it is refused (``AmountError.code``, the message's words).
REFUSED = [
    ("1e999999999", "too_large", "out of range"),
    ("-1e999999999", "too_large", "out of range"),
    (FOUR_HUNDRED_DIGITS, "too_large", "out of range"),
    ("-" + FOUR_HUNDRED_DIGITS, "too_large", "out of range"),
    ("100000000000000.01", "too_large", "out of range"),
    ("1e15", "too_large", "out of range"),
    ("1e99999999999999999999999", "too_large", "out of range"),  # beyond decimal's exponents
    ("Infinity", "not_finite", "not a finite amount"),
    ("-Infinity", "not_finite", "not a finite amount"),
    ("inf", "not_finite", "not a finite amount"),
    ("NaN", "not_finite", "not a finite amount"),
    ("-NaN123", "not_finite", "not a finite amount"),
    ("sNaN", "not_finite", "not a finite amount"),
    ("1e-999999999", "decimals", "more than two decimals"),
    ("1e-99999999999999999999", "decimals", "more than two decimals"),
    ("0.001", "decimals", "more than two decimals"),
    ("1.005", "decimals", "more than two decimals"),
    ("1." + "0" * 398 + "1", "decimals", "more than two decimals"),
    ("１２", "digits", "digits other than 0-9"),
    ("1２.5", "digits", "digits other than 0-9"),
    ("١٢", "digits", "digits other than 0-9"),
    ("²", "digits", "digits other than 0-9"),
    ("", "not_a_number", "not an amount in yuan"),
    ("   ", "not_a_number", "not an amount in yuan"),
    ("twelve", "not_a_number", "not an amount in yuan"),
    ("1_000", "not_a_number", "not an amount in yuan"),
    ("1,288.00", "not_a_number", "not an amount in yuan"),
    ("¥12", "not_a_number", "not an amount in yuan"),
    ("12元", "not_a_number", "not an amount in yuan"),
    ("12.5.1", "not_a_number", "not an amount in yuan"),
    ("0x10", "not_a_number", "not an amount in yuan"),
    ("12\x00", "not_a_number", "not an amount in yuan"),
    ("--1", "not_a_number", "not an amount in yuan"),
]
ACCEPTED = [
    ("19.99", 1999),
    ("0.1", 10),
    ("12", 1200),
    ("  12.5  ", 1250),
    ("\u300012.5\n", 1250),  # an ideographic space around it
    ("12.3400", 1234),  # trailing zeros are no fraction of a fen
    (".5", 50),
    ("5.", 500),
    ("+1.23", 123),
    ("-1.00", -100),  # whether a negative amount is acceptable is the caller's rule
    ("0", 0),
    ("-0", 0),
    ("0e99999999999999999999999", 0),
    ("1E+2", 10000),  # what str(Decimal("1e2")) writes
    ("1.5e1", 1500),
    ("100000000000000.00", MAX_FEN),
    ("-100000000000000", -MAX_FEN),
    ("1e14", MAX_FEN),
]


@pytest.mark.parametrize(("text", "code", "words"), REFUSED)
def test_text_is_refused_with_a_value_error_naming_the_problem(text, code, words):
    with pytest.raises(ValueError, match=words) as raised:
        yuan_to_fen(text)

    assert type(raised.value) is AmountError
    assert raised.value.code == code
    assert len(str(raised.value)) < 120  # an absurd input is not repeated whole


@pytest.mark.parametrize(("text", "code", "words"), REFUSED)
def test_the_same_as_a_decimal(text, code, words):
    """What ``Decimal()`` reads of the text (if anything) is refused the same way, unless the
    text's only fault was its way of writing a number (Decimal("１２") is just 12)."""
    try:
        amount = Decimal(text)
    except decimal.InvalidOperation:
        return
    if code in ("digits", "not_a_number"):
        assert yuan_to_fen(amount) == int(amount * 100)
        return
    with pytest.raises(AmountError, match=words) as raised:
        yuan_to_fen(amount)
    assert raised.value.code == code


@pytest.mark.parametrize(("text", "fen"), ACCEPTED)
def test_text_and_decimals_are_converted_exactly(text, fen):
    assert yuan_to_fen(text) == fen
    if "e999999999999" not in text:  # beyond what Decimal() reads
        assert yuan_to_fen(Decimal(text)) == fen


def test_the_bound_is_the_gateways():
    assert MAX_FEN == MAX_AMOUNT_FEN
    assert MAX_YUAN == Decimal("100000000000000.00") and str(MAX_YUAN) == "100000000000000.00"
    assert check_amount(yuan_to_fen(MAX_YUAN), "amount") == MAX_AMOUNT_FEN
    with pytest.raises(AmountError, match="out of range"):
        yuan_to_fen(MAX_YUAN + Decimal("0.01"))


@pytest.mark.parametrize("value", [12, 12.5, None, True, b"12", [Decimal(1)]])
def test_anything_but_a_decimal_or_text_is_not_a_number(value):
    with pytest.raises(ValueError, match="Decimal or text") as raised:
        yuan_to_fen(value)

    assert raised.value.code == "not_a_number"


def test_a_hostile_decimal_context_changes_nothing():
    """Three digits of precision and every signal trapped: still exact, still ValueError."""
    with localcontext() as context:
        context.prec = 3
        context.Emax, context.Emin = 5, -5
        context.traps = dict.fromkeys(context.traps, True)
        assert yuan_to_fen("123456.78") == 12345678
        assert yuan_to_fen(Decimal("99999999999999.99")) == 9999999999999999
        for text, code, _words in REFUSED:
            with pytest.raises(AmountError) as raised:
                yuan_to_fen(text)
            assert raised.value.code == code, text


def test_a_megabyte_of_digits_is_refused_quickly():
    with pytest.raises(AmountError, match="out of range"):
        yuan_to_fen("1" * 1_000_000)
    with pytest.raises(AmountError, match="more than two decimals"):
        yuan_to_fen("0." + "0" * 1_000_000 + "1")


# --------------------------------------------------------------------------- properties

NUMBERISH = st.from_regex(
    r"\A\s*[+-]?[0-9]{0,20}(\.[0-9]{0,6})?([eE][+-]?[0-9]{1,25})?\s*\Z", fullmatch=True
)
TEXTS = st.one_of(
    st.text(),
    NUMBERISH,
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from([text for text, _code, _words in REFUSED]),
)


def check(amount: Decimal | str) -> int | None:
    """``yuan_to_fen(amount)`` when it converts, ``None`` when it refuses with a ValueError;
    any other exception fails the test."""
    try:
        fen = yuan_to_fen(amount)
    except AmountError as error:
        assert error.code in ("not_a_number", "digits", "not_finite", "decimals", "too_large")
        return None
    assert type(fen) is int
    assert -MAX_FEN <= fen <= MAX_FEN
    return fen


@given(TEXTS)
def test_any_text_is_an_int_within_bounds_or_a_value_error(text):
    fen = check(text)
    if fen is not None:  # exact: the number read is fen / 100
        try:
            assert Decimal(text.strip()) == Decimal(fen).scaleb(-2)
        except decimal.InvalidOperation:  # an exponent beyond Decimal(): only zero converts
            assert fen == 0
        assert not any(char.isdigit() and not char.isascii() for char in text)


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_any_decimal_is_an_int_within_bounds_or_a_value_error(amount):
    fen = check(amount)
    if fen is not None:
        assert amount == Decimal(fen).scaleb(-2)


@given(st.integers(min_value=-MAX_FEN, max_value=MAX_FEN))
def test_every_amount_within_bounds_converts_back(fen):
    assert yuan_to_fen(Decimal(fen).scaleb(-2)) == fen
    assert yuan_to_fen(str(Decimal(fen).scaleb(-2))) == fen
    if fen >= 1:
        assert check_amount(fen, "amount") == fen
