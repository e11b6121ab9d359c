"""The local STI-AS (RFC 8224 §6.1, RFC 8588)."""

import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.errors import ConfigurationError, SigningError
from stirshaken.identity import parse_identity
from stirshaken.passport import decode_passport, verify_es256
from stirshaken.signer import Signer
from stirshaken.sipdate import parse_sip_date
from tests.keyring import DEST, NOW, ORIG, X5U, Clock, private_key, public_key, signer


def test_signed_identity_is_full_form_with_matching_date() -> None:
    signed = signer().sign(orig=ORIG, dest=[DEST], attest="A")
    header = parse_identity(signed.identity)
    assert (header.info, header.alg, header.ppt) == (X5U, "ES256", "shaken")
    passport = decode_passport(header.token)
    verify_es256(public_key(), passport)
    assert passport.iat == signed.iat == NOW == parse_sip_date(signed.date)
    assert passport.x5u == X5U
    assert (passport.orig, passport.dest, passport.attest) == (ORIG, (DEST,), "A")
    uuid.UUID(passport.origid)


def test_several_destinations_and_fixed_fields() -> None:
    origid = str(uuid.uuid4())
    signed = signer().sign(orig=ORIG, dest=[DEST, "12155550132"], attest="C", origid=origid, iat=NOW - 5)
    passport = decode_passport(signed.identity.partition(";")[0])
    assert passport.dest == (DEST, "12155550132")
    assert (passport.origid, passport.iat, passport.attest) == (origid, NOW - 5, "C")


def test_date_follows_the_clock() -> None:
    clock = Clock()
    sign = signer(clock)
    first = sign.sign(orig=ORIG, dest=[DEST], attest="A")
    clock.now += 1
    second = sign.sign(orig=ORIG, dest=[DEST], attest="A")
    assert parse_sip_date(second.date) == parse_sip_date(first.date) + 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attest": "D"},
        {"orig": "+12155550121"},
        {"orig": "alice"},
        {"dest": []},
        {"dest": ["12155550131", "x"]},
        {"origid": "not-a-uuid"},
    ],
)
def test_refuses_bad_claims(kwargs: dict) -> None:
    args = {"orig": ORIG, "dest": [DEST], "attest": "A"} | kwargs
    with pytest.raises(SigningError):
        signer().sign(**args)


def test_refuses_wrong_curve_and_http_x5u() -> None:
    with pytest.raises(ConfigurationError):
        Signer(ec.generate_private_key(ec.SECP384R1()), x5u=X5U)
    with pytest.raises(ConfigurationError):
        Signer(private_key(), x5u="http://cert.example.org/sp.pem")


def _self_signed(not_before: int, not_after: int) -> x509.Certificate:
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SHAKEN test")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(not_before, datetime.timezone.utc))
        .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.timezone.utc))
        .sign(private_key(), hashes.SHA256())
    )


def test_refuses_to_sign_outside_certificate_validity() -> None:
    """RFC 8224 §6.1: the AS MUST check that Date falls within its certificate's validity."""
    expired = Signer(private_key(), x5u=X5U, certificate=_self_signed(NOW - 1000, NOW - 10), clock=Clock())
    with pytest.raises(SigningError):
        expired.sign(orig=ORIG, dest=[DEST], attest="A")
    valid = Signer(private_key(), x5u=X5U, certificate=_self_signed(NOW - 1000, NOW + 1000), clock=Clock())
    valid.sign(orig=ORIG, dest=[DEST], attest="A")


def test_new_origid_is_a_version_4_uuid() -> None:
    import uuid

    from stirshaken.signer import new_origid

    seen = set()
    for _ in range(200):
        text = new_origid()
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
        seen.add(text)
    assert len(seen) == 200
