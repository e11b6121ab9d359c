"""Attestation from trusted sources (stirshaken.attestation)."""

from __future__ import annotations

import pytest

from stirshaken.attestation import AttestationPolicy, parse_trusted_sources
from stirshaken.errors import ConfigurationError


def test_own_numbers_get_a_other_numbers_b() -> None:
    policy = AttestationPolicy.from_config("192.0.2.0/24=+1 215-555, 1267", "C")
    assert policy.attest("192.0.2.7", "12155550121") == "A"
    assert policy.attest("192.0.2.7", "12675550000") == "A"
    assert policy.attest("192.0.2.7", "14155550000") == "B"


def test_other_sources_get_c_or_nothing() -> None:
    assert AttestationPolicy.from_config("127.0.0.1=*", "C").attest("198.51.100.1", "12155550121") == "C"
    assert AttestationPolicy.from_config("127.0.0.1=*", "none").attest("198.51.100.1", "12155550121") is None


def test_star_and_empty_mean_every_number() -> None:
    policy = AttestationPolicy.from_config("127.0.0.1=*; 10.0.0.0/8", "none")
    assert policy.attest("127.0.0.1", "44123") == "A"
    assert policy.attest("10.1.2.3", "44123") == "A"


def test_a_wins_over_b_when_several_entries_match() -> None:
    policy = AttestationPolicy.from_config("10.0.0.0/8=1215;10.1.0.0/16=44", "none")
    assert policy.attest("10.1.2.3", "44123") == "A"
    assert policy.attest("10.2.2.3", "44123") == "B"


def test_ipv6_and_bad_source_address() -> None:
    policy = AttestationPolicy.from_config("2001:db8::/32=*", "C")
    assert policy.attest("[2001:db8::1]", "1") == "A"
    assert policy.attest("127.0.0.1", "1") == "C"
    assert policy.attest("not an address", "1") == "C"


@pytest.mark.parametrize("text", ["300.1.1.1=*", "127.0.0.1=abc", "x/33"])
def test_bad_config_raises(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_trusted_sources(text)


def test_bad_other_level() -> None:
    with pytest.raises(ConfigurationError):
        AttestationPolicy.from_config("", "A")
