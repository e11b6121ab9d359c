"""verstat placement on PAI / From values (stirshaken.verstat)."""

from __future__ import annotations

import pytest

from stirshaken.verstat import with_verstat

P = "TN-Validation-Passed"


@pytest.mark.parametrize(
    ("value", "placement", "expected"),
    [
        ("<sip:+12155550121@example.net;user=phone>", "user",
         "<sip:+12155550121;verstat=TN-Validation-Passed@example.net;user=phone>"),
        ('"Alice" <sip:+12155550121@example.net>;tag=1', "user",
         '"Alice" <sip:+12155550121;verstat=TN-Validation-Passed@example.net>;tag=1'),
        ("<tel:+12155550121>", "user", "<tel:+12155550121;verstat=TN-Validation-Passed>"),
        ("sip:+12155550121@example.net;tag=9", "user",
         "<sip:+12155550121;verstat=TN-Validation-Passed@example.net>;tag=9"),
        ("<sip:+12155550121@example.net>", "header", "<sip:+12155550121@example.net>;verstat=TN-Validation-Passed"),
        ("<sip:example.net>", "user", "<sip:example.net>;verstat=TN-Validation-Passed"),
        ("<sip:+1215:secret@example.net>", "user", "<sip:+1215;verstat=TN-Validation-Passed:secret@example.net>"),
        ("<sip:+1215@example.net>", "none", "<sip:+1215@example.net>"),
    ],
)
def test_placement(value: str, placement: str, expected: str) -> None:
    assert with_verstat(value, P, placement) == expected


def test_upstream_verstat_is_replaced_everywhere() -> None:
    value = "<sip:+1215;verstat=TN-Validation-Passed@example.net>;verstat=TN-Validation-Passed"
    assert with_verstat(value, "TN-Validation-Failed", "user") == (
        "<sip:+1215;verstat=TN-Validation-Failed@example.net>"
    )


def test_bad_values() -> None:
    with pytest.raises(ValueError):
        with_verstat("<sip:unterminated", P, "user")
    with pytest.raises(ValueError):
        with_verstat("<sip:a@b>", P, "elsewhere")
