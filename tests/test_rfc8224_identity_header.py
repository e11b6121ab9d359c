"""RFC 8224 §4 Identity header: what real peers send, and every malformed case."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stirshaken.errors import BadIdentityInfo, InvalidIdentity, VerificationError
from stirshaken.identity import (
    MAX_IDENTITY_LENGTH,
    format_identity,
    parse_identity,
    split_identity_values,
)

TOKEN = "eyJh.eyJh.c2ln"
X5U = "https://cert.example.org/sp.pem"


def test_format_is_the_form_every_peer_emits() -> None:
    assert format_identity(TOKEN, X5U) == f"{TOKEN};info=<{X5U}>;alg=ES256;ppt=shaken"


def test_round_trip() -> None:
    header = parse_identity(format_identity(TOKEN, X5U))
    assert (header.token, header.info, header.alg, header.ppt) == (TOKEN, X5U, "ES256", "shaken")
    assert header.supported


@pytest.mark.parametrize(
    "value",
    [
        f'{TOKEN};info=<{X5U}>;alg=ES256;ppt="shaken"',  # Sansay quotes ppt
        f"{TOKEN};info=<{X5U}>;ppt=shaken",  # Sippy leaves out alg
        f"{TOKEN};ppt=shaken;alg=ES256;info=<{X5U}>",  # any order
        f"  {TOKEN} ; info = <{X5U}> ;alg=ES256 ; ppt=shaken  ",  # whitespace
        f"{TOKEN};INFO=<{X5U}>;ALG=ES256;PPT=shaken",  # parameter names are case-insensitive
        f"{TOKEN};info=<{X5U}>;alg=ES256;ppt=shaken;x-vendor=1",  # extension parameter
    ],
)
def test_accepts_what_real_peers_send(value: str) -> None:
    header = parse_identity(value)
    assert header.token == TOKEN
    assert header.info == X5U
    assert header.ppt == "shaken"


def test_ppt_other_than_shaken_is_unsupported_not_an_error() -> None:
    header = parse_identity(f"{TOKEN};info=<{X5U}>;ppt=div")
    assert not header.supported


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (f"{TOKEN};alg=ES256;ppt=shaken", BadIdentityInfo),  # info is mandatory
        (f"{TOKEN};info=<>;ppt=shaken", BadIdentityInfo),
        (f"{TOKEN};info=<{X5U}>;alg=RS256", InvalidIdentity),
        (f"..c2ln;info=<{X5U}>", InvalidIdentity),  # compact form
        (f"eyJh.eyJh;info=<{X5U}>", InvalidIdentity),
        (f"eyJh.eyJh.c2ln.extra;info=<{X5U}>", InvalidIdentity),
        (f"ey$h.eyJh.c2ln;info=<{X5U}>", InvalidIdentity),
        (f"{TOKEN};info=<{X5U}", InvalidIdentity),
        (f"{TOKEN};info=<{X5U}>;ppt=\"shaken", InvalidIdentity),
        (f"{TOKEN};info=<{X5U}>;info=<{X5U}>", InvalidIdentity),
        (f"{TOKEN};info=<{X5U}>;alg", InvalidIdentity),
        (f"{TOKEN};info=<{X5U}>;alg=", InvalidIdentity),
        (f"{TOKEN};info=<{X5U}>junk", InvalidIdentity),
        ("", InvalidIdentity),
        ("foo;info=bar", InvalidIdentity),  # FreeSWITCH's garbage case
        (TOKEN + "A" * MAX_IDENTITY_LENGTH + f";info=<{X5U}>", InvalidIdentity),
    ],
)
def test_malformed_values_get_their_rfc8224_answer(value: str, error: type[VerificationError]) -> None:
    with pytest.raises(error) as caught:
        parse_identity(value)
    assert type(caught.value) is error


def test_split_comma_joined_values() -> None:
    a = format_identity(TOKEN, X5U)
    b = format_identity("eyJi.eyJi.c2lo", "https://x.example/a,b.pem")
    assert split_identity_values([f"{a}, {b}", " ", a]) == [a, b, a]


@given(st.text(max_size=300))
def test_parser_raises_only_verification_errors(value: str) -> None:
    try:
        parse_identity(value)
    except VerificationError:
        pass


@given(st.lists(st.text(max_size=60), max_size=5))
def test_split_never_raises(values: list[str]) -> None:
    for part in split_identity_values(values):
        assert part == part.strip() and part
