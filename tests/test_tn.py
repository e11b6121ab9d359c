"""RFC 8224 §8.3 canonicalisation of telephone numbers."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stirshaken.tn import InvalidNumber, canonical_tn, tn_from_uri


@pytest.mark.parametrize(
    ("value", "country_code", "expected"),
    [
        ("+12155550121", "", "12155550121"),
        ("+1 (215) 555-0121", "", "12155550121"),
        ("+1.215.555.0121", "", "12155550121"),
        ("2155550121", "1", "12155550121"),  # NANP national number
        ("12155550121", "1", "12155550121"),
        ("01144201234567", "1", "44201234567"),  # NANP international prefix
        ("00442012345678", "44", "442012345678"),
        ("02012345678", "44", "442012345678"),  # trunk prefix 0
        ("2155550121", "", "2155550121"),  # no policy: left as is
        ("*67", "", "*67"),
        ("#31#", "", "#31#"),
    ],
)
def test_canonical_tn(value: str, country_code: str, expected: str) -> None:
    assert canonical_tn(value, country_code) == expected


@pytest.mark.parametrize("value", ["", "+", "alice", "1234567890123456", "+1-215-CALL-NOW", "12 34 ab"])
def test_canonical_tn_refuses_non_numbers(value: str) -> None:
    with pytest.raises(InvalidNumber):
        canonical_tn(value, "1")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:+12155550121@example.com", "12155550121"),
        ("<sip:+12155550121@example.com;user=phone>", "12155550121"),
        ('"Alice" <sip:+1-215-555-0121@example.com;user=phone>;tag=abc', "12155550121"),
        ("sip:2155550121@10.0.0.1:5060", "12155550121"),
        ("sips:2155550121@example.com", "12155550121"),
        ("tel:+1-215-555-0121;phone-context=example.com", "12155550121"),
        ("<tel:+12155550121>", "12155550121"),
        ("sip:+12155550121;verstat=TN-Validation-Passed@example.net;user=phone", "12155550121"),
        ("sip:%2B12155550121@example.com", "12155550121"),
        ("sip:alice@example.com", None),
        ("sip:anonymous@anonymous.invalid", None),
        ("sip:example.com", None),
        ("mailto:a@b", None),
        ("<sip:+12155550121@example.com", None),
        ("", None),
        ("garbage", None),
    ],
)
def test_tn_from_uri(uri: str, expected: str | None) -> None:
    assert tn_from_uri(uri, "1") == expected


@given(st.text(max_size=40), st.sampled_from(["", "1", "44"]))
def test_canonical_tn_is_digits_or_refuses(value: str, country_code: str) -> None:
    try:
        result = canonical_tn(value, country_code)
    except InvalidNumber:
        return
    assert 1 <= len(result) <= 15
    assert set(result) <= set("0123456789*#")


@given(st.from_regex(r"\+?[0-9]{1,3}([ .-]?[0-9]{2,4}){1,3}", fullmatch=True), st.sampled_from(["", "1", "44"]))
def test_canonical_tn_is_idempotent(value: str, country_code: str) -> None:
    try:
        once = canonical_tn(value, country_code)
    except InvalidNumber:
        return
    assert canonical_tn("+" + once, country_code) == once


@given(st.text(max_size=80))
def test_tn_from_uri_never_raises(uri: str) -> None:
    result = tn_from_uri(uri, "1")
    assert result is None or set(result) <= set("0123456789*#")


@given(st.from_regex(r"[2-9][0-9]{2}[2-9][0-9]{6}", fullmatch=True))  # NANP: NXX-NXX-XXXX
def test_sip_and_tel_forms_agree(national: str) -> None:
    sip = tn_from_uri(f"<sip:{national}@example.com;user=phone>", "1")
    tel = tn_from_uri(f"tel:+1{national}", "1")
    assert sip == tel == "1" + national
