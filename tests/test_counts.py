"""Counts on the command line: 200k, 3M, 1.5B, 1e9, and their compact display."""

import pytest

from datawall.counts import format_count, parse_count
from datawall.errors import DatawallError


@pytest.mark.parametrize("text, value", [("200k", 200_000), ("3M", 3_000_000), ("1.5B", 1_500_000_000),
                                         ("1e9", 10**9), ("12_000", 12_000), (7, 7)])
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["lots", "-3M", "0", "nan", "inf", ""])
def test_bad_counts_name_the_flag(text):
    with pytest.raises(DatawallError, match="--tokens"):
        parse_count(text, "--tokens")


def test_format_count_rounds_into_the_next_unit():
    assert [format_count(x) for x in (999_936, 1_234_567, 999, 2.5e12)] == ["1M", "1.23M", "999", "2.5T"]
