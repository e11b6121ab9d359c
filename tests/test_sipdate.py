"""RFC 3261 §20.17 Date header: format and parse."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stirshaken.sipdate import format_sip_date, parse_sip_date


def test_rfc1123_example_used_by_rfc3261() -> None:
    assert format_sip_date(784887151) == "Tue, 15 Nov 1994 08:12:31 GMT"
    assert parse_sip_date("Tue, 15 Nov 1994 08:12:31 GMT") == 784887151


@given(st.integers(min_value=0, max_value=4_102_444_800))
def test_round_trip(seconds: int) -> None:
    assert parse_sip_date(format_sip_date(seconds)) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "Sat, 13 Nov 1994 08:12:31",  # no GMT
        "Sat, 13 Nov 1994 08:12:31 PST",
        "Sat, 31 Feb 2024 08:12:31 GMT",
        "Sat, 13 Foo 1994 08:12:31 GMT",
        "Sat, 13 Nov 1994 25:12:31 GMT",
        "Sat, 13 Nov 0000 08:12:31 GMT",
        "1994-11-13T08:12:31Z",
    ],
)
def test_refuses_what_is_not_a_sip_date(value: str) -> None:
    assert parse_sip_date(value) is None


def test_tolerates_missing_weekday_and_short_day() -> None:
    assert parse_sip_date("3 Nov 1994 08:12:31 GMT") == parse_sip_date("Thu, 03 Nov 1994 08:12:31 GMT")


@given(st.text(max_size=60))
def test_never_raises(value: str) -> None:
    parse_sip_date(value)
