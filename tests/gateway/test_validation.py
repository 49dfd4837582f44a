"""The value rules of ``gateway.validation`` for what an application carries, and the
refund numbers the client makes up."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hsq_refunds.gateway import (
    EXTEND_MAX_LENGTH,
    MAX_AMOUNT_FEN,
    REFUND_TYPE_MAX,
    RETURN_URL_MAX_LENGTH,
    ConfigurationError,
    InvalidRequestError,
    check_amount,
    check_base_url,
    check_refund_type,
    check_return_url,
    check_text,
    new_trans_no,
)
from hsq_refunds.gateway.validation import check_aware_datetime


@pytest.mark.parametrize("value", [1, 1500, MAX_AMOUNT_FEN])
def test_amounts(value):
    assert check_amount(value, "amount") == value


@pytest.mark.parametrize("value", [0, -1, MAX_AMOUNT_FEN + 1, 2**64, True, 1.0, "100", None])
def test_bad_amounts_name_the_argument(value):
    with pytest.raises(InvalidRequestError, match=r"^orig_amount "):
        check_amount(value, "orig_amount")


@pytest.mark.parametrize("value", [0, 1, 2, REFUND_TYPE_MAX])
def test_refund_types(value):
    assert check_refund_type(value) == value


@pytest.mark.parametrize("value", [-1, REFUND_TYPE_MAX + 1, True, "2", 2.0, None])
def test_bad_refund_types(value):
    with pytest.raises(InvalidRequestError, match=r"^refund_type "):
        check_refund_type(value)


@pytest.mark.parametrize(
    "url",
    ["https://example.com/hsq/refund-notify", "http://127.0.0.1:8000/n?a=1&b=退款",
     "https://shop.example.cn:8443/" + "x" * (RETURN_URL_MAX_LENGTH - 30)],
)  # fmt: skip
def test_return_urls(url):
    assert check_return_url(url) == url


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/n", "example.com/n", "https://", "https://user:pw@example.com/n",
     "https://example.com/a b", "https://example.com/\n", "https://example.com:99999/",
     "https://example.com/" + "x" * RETURN_URL_MAX_LENGTH, b"https://example.com/", 1],
)  # fmt: skip
def test_bad_return_urls_name_the_argument(url):
    with pytest.raises(InvalidRequestError, match=r"^return_url "):
        check_return_url(url)


def test_base_url_rules_are_the_same_and_still_configuration_errors():
    with pytest.raises(ConfigurationError, match=r"^base_url: must hold no credentials"):
        check_base_url("https://user:pw@example.com/")
    with pytest.raises(ConfigurationError, match=r"^base_url: must hold no credentials"):
        check_base_url("https://api.huishouqian.com/api/acquiring ")
    with pytest.raises(ConfigurationError, match="is not an http"):
        check_base_url("ftp://example.com/")


def test_text_limits():
    assert check_text("", "extend", max_length=EXTEND_MAX_LENGTH) == ""
    assert check_text("退" * EXTEND_MAX_LENGTH, "extend", max_length=EXTEND_MAX_LENGTH)
    for bad in ("x" * (EXTEND_MAX_LENGTH + 1), "a\nb", "\ud800", None):
        with pytest.raises(InvalidRequestError, match=r"^extend "):
            check_text(bad, "extend", max_length=EXTEND_MAX_LENGTH)


def test_aware_datetimes():
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    assert check_aware_datetime(moment, "request_date") is moment
    with pytest.raises(InvalidRequestError, match=r"^request_date must be timezone-aware"):
        check_aware_datetime(datetime(2024, 1, 1), "request_date")
    with pytest.raises(InvalidRequestError, match=r"^request_date must be a datetime"):
        check_aware_datetime("20240101120000", "request_date")


# --------------------------------------------------------------------------- new_trans_no


def test_new_trans_no_is_prefix_beijing_time_and_digits():
    now = datetime(2024, 1, 1, 4, 0, 0, tzinfo=UTC)  # 12:00 in Beijing
    trans_no = new_trans_no(now=now)
    assert re.fullmatch(r"RF20240101120000[0-9]{8}", trans_no)
    assert new_trans_no("SHOP1", now=now.astimezone(timezone(timedelta(hours=-5)))).startswith(
        "SHOP120240101120000"
    )
    assert len(new_trans_no("P" * 16)) == 16 + 14 + 8 <= 64


def test_new_trans_no_differs_each_time():
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert new_trans_no(now=now) != new_trans_no(now=now)


@pytest.mark.parametrize("prefix", ["", "P" * 17, "R-F", "退款", "RF\n", 1])
def test_new_trans_no_refuses_bad_prefixes(prefix):
    with pytest.raises(InvalidRequestError, match="prefix"):
        new_trans_no(prefix)


def test_new_trans_no_refuses_naive_times():
    with pytest.raises(InvalidRequestError, match="timezone-aware"):
        new_trans_no(now=datetime(2024, 1, 1))
