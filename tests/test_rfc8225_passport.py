"""RFC 8225 / RFC 8588 PASSporT: canonical bytes, strict decoding, ES256."""

import base64
import json

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stirshaken.errors import InvalidIdentity, InvalidSignature, UnsupportedPassportType
from stirshaken.passport import (
    b64url_encode,
    canonical_json,
    decode_passport,
    encode_header,
    encode_payload,
    sign_es256,
    verify_es256,
)
from tests.keyring import private_key, public_key

# RFC 8588 §6 (with errata 6656: iat is a number).
RFC8588_HEADER = b'{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"https://cert.example.org/passport.cer"}'
RFC8588_PAYLOAD = (
    b'{"attest":"A","dest":{"tn":["12155550131"]},"iat":1443208345,'
    b'"orig":{"tn":"12155550121"},"origid":"123e4567-e89b-12d3-a456-426655440000"}'
)
ORIGID = "123e4567-e89b-12d3-a456-426655440000"


def test_header_is_byte_exact_rfc8588() -> None:
    assert encode_header("https://cert.example.org/passport.cer") == RFC8588_HEADER


def test_payload_is_byte_exact_rfc8588() -> None:
    payload = encode_payload(
        attest="A", dest=("12155550131",), iat=1443208345, orig="12155550121", origid=ORIGID
    )
    assert payload == RFC8588_PAYLOAD


@given(
    st.sampled_from("ABC"),
    st.lists(st.from_regex(r"[0-9]{1,15}", fullmatch=True), min_size=1, max_size=4),
    st.integers(min_value=0, max_value=2**40),
    st.from_regex(r"[0-9*#]{1,15}", fullmatch=True),
    st.uuids().map(str),
)
def test_fast_payload_equals_canonical_json(attest, dest, iat, orig, origid) -> None:  # type: ignore[no-untyped-def]
    claims = {"attest": attest, "dest": {"tn": dest}, "iat": iat, "orig": {"tn": orig}, "origid": origid}
    assert encode_payload(attest=attest, dest=tuple(dest), iat=iat, orig=orig, origid=origid) == canonical_json(claims)


def _token(header: dict | bytes = RFC8588_HEADER, payload: dict | bytes = RFC8588_PAYLOAD) -> str:
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw_payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    unsigned = b64url_encode(raw_header) + "." + b64url_encode(raw_payload)
    return unsigned + "." + sign_es256(private_key(), unsigned.encode())


def test_signature_is_raw_r_s_and_verifies() -> None:
    token = _token()
    passport = decode_passport(token)
    assert len(passport.signature) == 64
    verify_es256(public_key(), passport)
    assert (passport.attest, passport.orig, passport.dest, passport.iat) == ("A", "12155550121", ("12155550131",), 1443208345)


def test_pyjwt_agrees_with_our_signature() -> None:
    # An independent ES256 implementation accepts our bytes.
    claims = jwt.decode(_token(), public_key(), algorithms=["ES256"], options={"verify_iat": False})
    assert claims["origid"] == ORIGID


def test_verifies_received_bytes_not_a_reserialisation() -> None:
    # A peer that is not canonical (spaces, other key order) still verifies.
    loose_payload = b'{ "origid": "%s", "orig": {"tn": "12155550121"}, "iat": 1443208345, "dest": {"tn": ["12155550131"]}, "attest": "A" }' % ORIGID.encode()
    passport = decode_passport(_token(payload=loose_payload))
    verify_es256(public_key(), passport)


def test_tampered_payload_fails_signature() -> None:
    header, payload, signature = _token().split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["orig"]["tn"] = "19995550000"
    token = f"{header}.{b64url_encode(canonical_json(forged))}.{signature}"
    with pytest.raises(InvalidSignature):
        verify_es256(public_key(), decode_passport(token))


def _changed(base: bytes, **changes: object) -> dict:
    """The JSON object *base* with members replaced, or removed where the value is None."""
    value: dict = json.loads(base)
    for name, new in changes.items():
        if new is None:
            value.pop(name)
        else:
            value[name] = new
    return value


def _claims(**changes: object) -> dict:
    return _changed(RFC8588_PAYLOAD, **changes)


def _header(**changes: object) -> dict:
    return _changed(RFC8588_HEADER, **changes)


@pytest.mark.parametrize(
    "token",
    [
        _token(header=_header(alg="RS256")),
        _token(header=_header(alg=None)),
        _token(header=_header(typ="JWT")),
        _token(header=_header(x5u=None)),
        _token(header=_header(x5u=7)),
        _token(payload=_claims(attest="D")),
        _token(payload=_claims(attest=None)),
        _token(payload=_claims(origid=None)),
        _token(payload=_claims(origid="")),
        _token(payload=_claims(iat="1443208345")),  # RFC 8588 errata 6656
        _token(payload=_claims(iat=1443208345.5)),
        _token(payload=_claims(iat=True)),
        _token(payload=_claims(iat=None)),
        _token(payload=_claims(orig={"tn": ["12155550121"]})),
        _token(payload=_claims(orig="12155550121")),
        _token(payload=_claims(orig=None)),
        _token(payload=_claims(dest={"tn": "12155550131"})),  # must be an array
        _token(payload=_claims(dest={"tn": []})),
        _token(payload=_claims(dest={"uri": ["sip:a@b"]})),
        _token(payload=_claims(dest=None)),
        _token(payload=b"[1,2]"),
        _token(payload=b"not json"),
        _token(header=b"[]"),
        "a.b",
        "a..c",
        "e30.e30.!!!",
        _token() + "A",  # 65-byte-ish signature
        _token()[:-4],
    ],
)
def test_malformed_passports_are_438(token: str) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        decode_passport(token)
    assert caught.value.sip_status == 438


def test_other_ppt_is_unsupported_not_438() -> None:
    with pytest.raises(UnsupportedPassportType) as caught:
        decode_passport(_token(header=_header(ppt="div")))
    assert caught.value.sip_status == 428


@given(st.text(max_size=200))
def test_decoder_raises_only_its_own_errors(token: str) -> None:
    try:
        decode_passport(token)
    except (InvalidIdentity, UnsupportedPassportType):
        pass


def test_signatures_are_deterministic_where_openssl_supports_it() -> None:
    """RFC 6979: the same key and signing input give the same signature."""
    from stirshaken import passport

    if passport._ECDSA_SIGN is passport._ECDSA_SHA256:
        pytest.skip("this OpenSSL has no deterministic ECDSA")
    assert sign_es256(private_key(), b"a.b") == sign_es256(private_key(), b"a.b")
