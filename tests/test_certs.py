"""stirshaken.certs: TNAuthList (RFC 8226 §9), chain validation (ATIS-1000080), signing keys."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from stirshaken import pki
from stirshaken.certs import (
    TNAuthList,
    TrustStore,
    check_key_matches_certificate,
    decode_tn_auth_list,
    load_certificate_file,
    load_pem_chain,
    load_private_key,
    parse_tn_auth_list,
)
from stirshaken.errors import ConfigurationError, UnsupportedCredential


@pytest.fixture(scope="module")
def root() -> pki.Issuer:
    return pki.make_root()


@pytest.fixture(scope="module")
def intermediate(root: pki.Issuer) -> pki.Issuer:
    return pki.make_intermediate(root)


@pytest.fixture(scope="module")
def store(root: pki.Issuer) -> TrustStore:
    return TrustStore.from_certificates([root.certificate])


def now() -> int:
    return int(time.time())


# -- TNAuthList ------------------------------------------------------------------


def test_tn_auth_list_explicit_spc_as_deployed() -> None:
    # The Google Voice / NetNumber encoding quoted in standards.md §4.1.
    der = bytes.fromhex("3008A006160439363948")
    assert decode_tn_auth_list(der) == TNAuthList(spcs=("969H",), ranges=(), ones=())
    assert pki.encode_tn_auth_list_spc("969H") == der


def test_tn_auth_list_implicit_spc() -> None:
    der = bytes.fromhex("3006800439363948")
    assert pki.encode_tn_auth_list_spc("969H", explicit=False) == der
    assert decode_tn_auth_list(der).spcs == ("969H",)


def test_tn_auth_list_ranges_and_ones_both_taggings() -> None:
    start = b"\x16\x0b12155550100"
    count = b"\x02\x01\x64"  # 100
    one = b"\x16\x0b12155550999"
    explicit_range = pki._tlv(0xA1, pki._tlv(0x30, start + count))
    implicit_range = pki._tlv(0xA1, start + count)
    explicit_one = pki._tlv(0xA2, one)
    implicit_one = pki._tlv(0x82, one[2:])
    der = pki._tlv(0x30, explicit_range + implicit_range + explicit_one + implicit_one)
    parsed = decode_tn_auth_list(der)
    assert parsed.spcs == ()
    assert parsed.ranges == (("12155550100", 100), ("12155550100", 100))
    assert parsed.ones == ("12155550999", "12155550999")
    assert parsed.covers("12155550100")
    assert parsed.covers("12155550199")
    assert not parsed.covers("12155550200")
    assert parsed.covers("12155550999")
    assert not parsed.covers("2155550150")  # same digits, different length
    assert not parsed.covers("+12155550150")


def test_spc_only_list_covers_no_number() -> None:
    assert not TNAuthList(spcs=("1001",), ranges=(), ones=()).covers("1001")


def test_empty_tn_auth_list_value_is_refused() -> None:
    with pytest.raises(ValueError):
        TNAuthList(spcs=(), ranges=(), ones=())


@pytest.mark.parametrize(
    "hex_der",
    [
        "",  # nothing
        "3000",  # SEQUENCE SIZE (1..MAX): empty list
        "3008A006160439363948FF",  # trailing garbage after the SEQUENCE
        "3009A006160439363948",  # length runs past the end
        "3006A304160231 32".replace(" ", ""),  # unknown CHOICE tag [3]
        "3006A0040C023132",  # spc as UTF8String, not IA5String
        "3004A0021600",  # empty SPC
        "3005820339393A",  # TelephoneNumber with ':'
        "3012821031323334353637383930313233343536",  # TelephoneNumber of 16 digits
        "3012A110160B3132313535353530313030020101",  # range count 1 < 2
        "30808000",  # indefinite length
        "3081048004393639",  # non-minimal long-form length
        "1F0100",  # high tag number
    ],
)
def test_malformed_tn_auth_list_is_437(hex_der: str) -> None:
    with pytest.raises(UnsupportedCredential) as info:
        decode_tn_auth_list(bytes.fromhex(hex_der))
    assert info.value.sip_status == 437


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_decoder_never_crashes_on_garbage(data: bytes) -> None:
    try:
        decode_tn_auth_list(data)
    except UnsupportedCredential:
        pass


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=200),
       st.booleans())
def test_spc_round_trip(spc: str, explicit: bool) -> None:
    assert decode_tn_auth_list(pki.encode_tn_auth_list_spc(spc, explicit=explicit)).spcs == (spc,)


def test_parse_tn_auth_list_from_certificate(intermediate: pki.Issuer) -> None:
    _key, leaf = pki.make_leaf(intermediate, spc="969H")
    assert parse_tn_auth_list(leaf) == TNAuthList(spcs=("969H",), ranges=(), ones=())
    _key, bare = pki.make_leaf(intermediate, spc=None)
    assert parse_tn_auth_list(bare) is None
    _key, broken = pki.make_leaf(intermediate, tn_auth_list_der=b"\x30\x00")
    with pytest.raises(UnsupportedCredential, match="malformed TNAuthList"):
        parse_tn_auth_list(broken)


# -- load_pem_chain ---------------------------------------------------------------


def test_load_pem_chain_keeps_order(intermediate: pki.Issuer) -> None:
    _key, leaf = pki.make_leaf(intermediate)
    chain = load_pem_chain(pki.pem_of(leaf, intermediate.certificate))
    assert chain == [leaf, intermediate.certificate]


def test_load_pem_chain_accepts_single_der(intermediate: pki.Issuer) -> None:
    _key, leaf = pki.make_leaf(intermediate)
    assert load_pem_chain(leaf.public_bytes(serialization.Encoding.DER)) == [leaf]


@pytest.mark.parametrize(
    "data",
    [b"", b"   \n", b"<html>not found</html>", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
)
def test_load_pem_chain_garbage_is_437(data: bytes) -> None:
    with pytest.raises(UnsupportedCredential):
        load_pem_chain(data)


# -- TrustStore.validate ----------------------------------------------------------


def test_valid_chain(store: TrustStore, root: pki.Issuer, intermediate: pki.Issuer) -> None:
    key, leaf = pki.make_leaf(intermediate, spc="1001")
    sti = store.validate([leaf, intermediate.certificate], now=now())
    assert sti.certificate == leaf
    assert sti.chain == (leaf, intermediate.certificate, root.certificate)
    assert sti.tn_auth_list.spcs == ("1001",)
    assert sti.not_before == int(leaf.not_valid_before_utc.timestamp())
    assert sti.not_after == int(leaf.not_valid_after_utc.timestamp())
    assert sti.crl_urls == (pki.TEST_CRL_URL,)
    assert sti.chain_not_after == sti.not_after  # the leaf expires first
    assert sti.public_key.public_numbers() == key.public_key().public_numbers()


def test_validation_happens_at_now_not_wall_clock(store: TrustStore, intermediate: pki.Issuer) -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    _key, leaf = pki.make_leaf(
        intermediate, not_before=start, not_after=start + dt.timedelta(days=30)
    )
    # Valid at an iat inside its window, expired now.
    store.validate([leaf, intermediate.certificate], now=int((start + dt.timedelta(days=1)).timestamp()))
    with pytest.raises(UnsupportedCredential, match="expired"):
        store.validate([leaf, intermediate.certificate], now=now())


def test_not_yet_valid(store: TrustStore, intermediate: pki.Issuer) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    _key, leaf = pki.make_leaf(intermediate, not_before=future, not_after=future + dt.timedelta(days=2))
    with pytest.raises(UnsupportedCredential, match="not valid before"):
        store.validate([leaf, intermediate.certificate], now=now())


def test_untrusted_root_is_437(store: TrustStore) -> None:
    stranger = pki.make_intermediate(pki.make_root(common_name="SHAKEN ROOT OTHER"))
    _key, leaf = pki.make_leaf(stranger)
    with pytest.raises(UnsupportedCredential, match="trusted root") as info:
        store.validate([leaf, stranger.certificate], now=now())
    assert info.value.sip_status == 437


def test_missing_intermediate_is_437(store: TrustStore, intermediate: pki.Issuer) -> None:
    _key, leaf = pki.make_leaf(intermediate)
    with pytest.raises(UnsupportedCredential, match="trusted root"):
        store.validate([leaf], now=now())


def test_no_tn_auth_list_is_437(store: TrustStore, intermediate: pki.Issuer) -> None:
    _key, leaf = pki.make_leaf(intermediate, spc=None)
    with pytest.raises(UnsupportedCredential, match="no TNAuthList"):
        store.validate([leaf, intermediate.certificate], now=now())


def test_wrong_curve_is_437(store: TrustStore, intermediate: pki.Issuer) -> None:
    _key, leaf = pki.make_leaf(intermediate, curve=ec.SECP384R1())
    with pytest.raises(UnsupportedCredential, match="not P-256"):
        store.validate([leaf, intermediate.certificate], now=now())


def test_missing_digital_signature_is_437(store: TrustStore, intermediate: pki.Issuer) -> None:
    _key, leaf = pki.make_leaf(intermediate, digital_signature=False)
    with pytest.raises(UnsupportedCredential, match="digitalSignature"):
        store.validate([leaf, intermediate.certificate], now=now())


def _rebuild_leaf(intermediate: pki.Issuer, leaf: x509.Certificate, *, critical_policies: bool,
                  extra: x509.ExtensionType | None = None) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(leaf.public_key())
        .serial_number(leaf.serial_number)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
    )
    for extension in leaf.extensions:
        critical = extension.critical or (
            critical_policies and isinstance(extension.value, x509.CertificatePolicies)
        )
        builder = builder.add_extension(extension.value, critical=critical)
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    return builder.sign(intermediate.key, hashes.SHA256())


def test_critical_certificate_policies_are_accepted(store: TrustStore, intermediate: pki.Issuer) -> None:
    # Deployed STI-CAs mark certificatePolicies critical (see the NetNumber chain below).
    _key, leaf = pki.make_leaf(intermediate)
    leaf = _rebuild_leaf(intermediate, leaf, critical_policies=True)
    store.validate([leaf, intermediate.certificate], now=now())


def test_unknown_critical_extension_is_437(store: TrustStore, intermediate: pki.Issuer) -> None:
    # RFC 5280 §4.2: a certificate with an unrecognised critical extension must be rejected.
    _key, leaf = pki.make_leaf(intermediate)
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf = _rebuild_leaf(intermediate, leaf, critical_policies=False, extra=unknown)
    with pytest.raises(UnsupportedCredential, match="critical"):
        store.validate([leaf, intermediate.certificate], now=now())


def test_ca_certificate_as_leaf_is_437(store: TrustStore, intermediate: pki.Issuer) -> None:
    with pytest.raises(UnsupportedCredential):
        store.validate([intermediate.certificate], now=now())


def test_empty_chain_is_437(store: TrustStore) -> None:
    with pytest.raises(UnsupportedCredential, match="empty"):
        store.validate([], now=now())


def test_crl_revokes_leaf(store: TrustStore, intermediate: pki.Issuer) -> None:
    _key, leaf = pki.make_leaf(intermediate)
    chain = [leaf, intermediate.certificate]
    unrelated = pki.make_crl(intermediate, [leaf.serial_number + 1])
    store.validate(chain, now=now(), crls=[unrelated])
    direct = pki.make_crl(intermediate, [leaf.serial_number])
    with pytest.raises(UnsupportedCredential, match="revoked"):
        store.validate(chain, now=now(), crls=[direct])
    # An STI-PA style CRL, named by the distribution point's cRLIssuer.
    indirect = pki.make_crl(intermediate, [leaf.serial_number], issuer_name=pki.TEST_CRL_ISSUER)
    with pytest.raises(UnsupportedCredential, match="revoked"):
        store.validate(chain, now=now(), crls=[indirect])


def test_crl_revokes_intermediate(root: pki.Issuer, store: TrustStore) -> None:
    intermediate = pki.make_intermediate(root)
    _key, leaf = pki.make_leaf(intermediate)
    crl = pki.make_crl(root, [intermediate.certificate.serial_number])
    with pytest.raises(UnsupportedCredential, match="revoked"):
        store.validate([leaf, intermediate.certificate], now=now(), crls=[crl])


# -- TrustStore construction ------------------------------------------------------


def test_trust_store_from_directory(tmp_path: Path) -> None:
    paths = pki.make_test_pki(tmp_path / "pki")
    (paths.trust_dir / "README").write_text("ignored")
    other = pki.make_root(common_name="SHAKEN ROOT SECOND")
    pki.write_certificates(paths.trust_dir / "second.crt", other.certificate)
    store = TrustStore.from_directory(paths.trust_dir)
    assert len(store.roots) == 2
    store.validate(load_pem_chain(paths.chain.read_bytes()), now=now())


def test_trust_store_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        TrustStore.from_directory(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="holds no"):
        TrustStore.from_directory(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.pem").write_text("garbage")
    with pytest.raises(ConfigurationError, match="x.pem"):
        TrustStore.from_directory(tmp_path / "bad")
    with pytest.raises(ConfigurationError):
        TrustStore.from_certificates([])


# -- signing credentials ------------------------------------------------------------


def test_load_private_key_and_match(tmp_path: Path) -> None:
    paths = pki.make_test_pki(tmp_path)
    key = load_private_key(paths.key)
    (leaf,) = load_certificate_file(paths.cert)
    check_key_matches_certificate(key, leaf)
    other = load_private_key(paths.tls_key)
    with pytest.raises(ConfigurationError, match="does not match"):
        check_key_matches_certificate(other, leaf)
    store = TrustStore.from_directory(paths.trust_dir)
    sti = store.validate(load_pem_chain(paths.chain.read_bytes()), now=now())
    check_key_matches_certificate(key, sti)


def test_load_private_key_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_private_key(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(ConfigurationError, match="unusable"):
        load_private_key(garbage)
    p384 = pki.write_private_key(tmp_path / "p384.pem", ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ConfigurationError, match="P-256"):
        load_private_key(p384)
    with pytest.raises(ConfigurationError):
        load_certificate_file(garbage)
    with pytest.raises(ConfigurationError):
        load_certificate_file(tmp_path / "missing.pem")


# -- a deployed chain ------------------------------------------------------------------------

#: Google Voice "969H" leaf, NetNumber intermediate and root, as published in
#: martinisecurity/shaken-pki-reports. Deployed quirks: certificatePolicies is
#: critical on the leaf and the intermediate, the CAs are P-384/P-521 and sign
#: with SHA-384/SHA-512. Valid 2024-02-06 .. 2024-03-07.
NETNUMBER_CHAIN_PEM = b"""\
-----BEGIN CERTIFICATE-----
MIIC0DCCAlagAwIBAgIJAJWh7sa4ke+oMAoGCCqGSM49BAMCMIGOMTAwLgYDVQQD
DCdOZXROdW1iZXIgU0hBS0VOIFJvb3QgSW50ZXJtZWRpYXRlIENBIDExCzAJBgNV
BAYTAlVTMRYwFAYDVQQKDA1OZXROdW1iZXIgSW5jMQswCQYDVQQLDAJVUzEXMBUG
A1UECAwOTWFzc2FjaHVzZXR0ZXMxDzANBgNVBAcMBkxvd2VsbDAeFw0yNDAyMDYx
MjA1MjBaFw0yNDAzMDcxMjA1MjBaMEsxIDAeBgNVBAMMF0dvb2dsZSBTSEFLRU4g
Y2VydCA5NjlIMQswCQYDVQQGEwJVUzEaMBgGA1UECgwRR29vZ2xlIFZvaWNlIElu
Yy4wWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAT56IQBY6QmPwIvlQtmfood9U2a
OaUXbCu/ENBBh4o0RRZwmc7hPzrVfwWEu1NwNhBXcQ5CD9BeTAAWFZz2ftN+o4He
MIHbMBYGCCsGAQUFBwEaBAowCKAGFgQ5NjlIMAwGA1UdEwEB/wQCMAAwDgYDVR0P
AQH/BAQDAgeAMB8GA1UdIwQYMBaAFHEvyILcqOAi49+gaPn4XlyE3uW9MB0GA1Ud
DgQWBBT0OTcvDFSLG7ksvTJe8cNejcIkCjBHBgNVHR8EQDA+MDygOqA4hjZodHRw
czovL2F1dGhlbnRpY2F0ZS1hcGkuaWNvbmVjdGl2LmNvbS9kb3dubG9hZC92MS9j
cmwwGgYDVR0gAQH/BBAwDjAMBgpghkgBhv8JAQEBMAoGCCqGSM49BAMCA2gAMGUC
MQCO0Mj7ynGlwmcH8W8dy+1uYUcvAgbNI6xDoqWooFzehna6WPgU9IiL6y5qESuY
VNQCMGHXD69zyzQHxp0k2Zi4LWOxQ9AZeaEJ3okPJh44VAz4NcgH1Eb/E4NTWWbM
wbEc0w==
-----END CERTIFICATE-----
-----BEGIN CERTIFICATE-----
MIIDNzCCApigAwIBAgIJALHQvycN/mz1MAoGCCqGSM49BAMDMIGBMSMwIQYDVQQD
DBpOZXROdW1iZXIgU0hBS0VOIFJvb3QgQ0EgMTELMAkGA1UEBhMCVVMxFjAUBgNV
BAoMDU5ldE51bWJlciBJbmMxCzAJBgNVBAsMAlVTMRcwFQYDVQQIDA5NYXNzYWNo
dXNldHRlczEPMA0GA1UEBwwGTG93ZWxsMB4XDTIxMDkyOTEzMjI1N1oXDTMzMDky
NjEzMjI1N1owgY4xMDAuBgNVBAMMJ05ldE51bWJlciBTSEFLRU4gUm9vdCBJbnRl
cm1lZGlhdGUgQ0EgMTELMAkGA1UEBhMCVVMxFjAUBgNVBAoMDU5ldE51bWJlciBJ
bmMxCzAJBgNVBAsMAlVTMRcwFQYDVQQIDA5NYXNzYWNodXNldHRlczEPMA0GA1UE
BwwGTG93ZWxsMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE8tCNFPuiCKvElj73ghrB
go/44JzXhjDtL2L8hptKs/a+bxF5mYquRHsD0ckmgpD4Mz28XrZ9ZFu0DRdBxE9+
QcKvtJ7CzXD3LCvqWLqROg1Icp3HzmnzXJA/t6iRpVARo4HMMIHJMBIGA1UdEwEB
/wQIMAYBAf8CAQEwDgYDVR0PAQH/BAQDAgIEMB8GA1UdIwQYMBaAFH/Sxmcvsw47
rbQTPz8vahAgvo8UMB0GA1UdDgQWBBRxL8iC3KjgIuPfoGj5+F5chN7lvTBHBgNV
HR8EQDA+MDygOqA4hjZodHRwczovL2F1dGhlbnRpY2F0ZS1hcGkuaWNvbmVjdGl2
LmNvbS9kb3dubG9hZC92MS9jcmwwGgYDVR0gAQH/BBAwDjAMBgpghkgBhv8JAQEB
MAoGCCqGSM49BAMDA4GMADCBiAJCAZArUIt30QwopGwY9J9tJe22P7Q45Hk76w7t
vw0S9o2vxrKZK34w91hOj5ebS6zhHEp7cSLC4QQ5MuP4h9nUKbxOAkIBNqSI0Nk3
GxM/ARBaQXHwOZqysCF1L9/t/sM/8eqT1AchVXg6RQvn3zJ0zH8mKwt8mN57vX3D
WLcMZAlSsqkMLEI=
-----END CERTIFICATE-----
-----BEGIN CERTIFICATE-----
MIIDTzCCArCgAwIBAgIISf7Z/TlgXrcwCgYIKoZIzj0EAwQwgYExIzAhBgNVBAMM
Gk5ldE51bWJlciBTSEFLRU4gUm9vdCBDQSAxMQswCQYDVQQGEwJVUzEWMBQGA1UE
CgwNTmV0TnVtYmVyIEluYzELMAkGA1UECwwCVVMxFzAVBgNVBAgMDk1hc3NhY2h1
c2V0dGVzMQ8wDQYDVQQHDAZMb3dlbGwwHhcNMjEwOTI3MTk0NTU1WhcNNDYwOTIx
MTk0NTU1WjCBgTEjMCEGA1UEAwwaTmV0TnVtYmVyIFNIQUtFTiBSb290IENBIDEx
CzAJBgNVBAYTAlVTMRYwFAYDVQQKDA1OZXROdW1iZXIgSW5jMQswCQYDVQQLDAJV
UzEXMBUGA1UECAwOTWFzc2FjaHVzZXR0ZXMxDzANBgNVBAcMBkxvd2VsbDCBmzAQ
BgcqhkjOPQIBBgUrgQQAIwOBhgAEAdTfxsBujQ9g7Wq3w65HUq4rfsSIB1ZvmFdq
37XYx6EhbhJHZqYv9JXuzgdpSb7LA4TkpvoDxRteduiSmFUfLXC8AWPudzD4upqX
x1nLqI6w6QG2slldNJZhyxO+6PULGC8TX40zKvCFG3jE2XuxSYXVTlLi2WdsIej7
T915JjwGThuso4HMMIHJMBIGA1UdEwEB/wQIMAYBAf8CAQMwDgYDVR0PAQH/BAQD
AgIEMB8GA1UdIwQYMBaAFH/Sxmcvsw47rbQTPz8vahAgvo8UMB0GA1UdDgQWBBR/
0sZnL7MOO620Ez8/L2oQIL6PFDBHBgNVHR8EQDA+MDygOqA4hjZodHRwczovL2F1
dGhlbnRpY2F0ZS1hcGkuaWNvbmVjdGl2LmNvbS9kb3dubG9hZC92MS9jcmwwGgYD
VR0gAQH/BBAwDjAMBgpghkgBhv8JAQEBMAoGCCqGSM49BAMEA4GMADCBiAJCAUaY
ZrJYA0P/Ceus/lAFSp3h4zszZ8LGgVscwecmmmxYfT0eP1UH8dJLk67oNvMtQRJB
beYpNlu306rC8rF/+9NOAkIBNqlzppquQhm/xpT7ghMCnsqzDZ5tGM5OUsgsIIzf
m489+r3B4bLZg9XyQkaRL4fYdjxaZbVmZyqurCINCDzQKDQ=
-----END CERTIFICATE-----
"""


def test_deployed_google_voice_chain_validates() -> None:
    leaf, intermediate, root = load_pem_chain(NETNUMBER_CHAIN_PEM)
    store = TrustStore.from_certificates([root])
    at = int(dt.datetime(2024, 2, 20, tzinfo=dt.UTC).timestamp())
    sti = store.validate([leaf, intermediate], now=at)
    assert sti.tn_auth_list == TNAuthList(spcs=("969H",), ranges=(), ones=())
    assert sti.crl_urls == ("https://authenticate-api.iconectiv.com/download/v1/crl",)
    assert sti.chain == (leaf, intermediate, root)
    with pytest.raises(UnsupportedCredential, match="expired"):
        store.validate([leaf, intermediate], now=now())


#: "SHAKEN 857J" (IEvolve) under TransNexus Issuing CA3 and Root CA1, also from
#: martinisecurity/shaken-pki-reports. Deployed quirks: keyUsage BIT STRINGs with
#: non-minimal unused-bits encoding, a CRL distribution point with the STI-PA
#: cRLIssuer. Valid 2022-06-20 .. 2023-06-20.
TRANSNEXUS_CHAIN_PEM = b"""\
-----BEGIN CERTIFICATE-----
MIIC6TCCAo+gAwIBAgIQdzrboydYX5iXoWuUdl2cgzAKBggqhkjOPQQDAjBnMQsw
CQYDVQQGEwJVUzEZMBcGA1UEChMQVHJhbnNOZXh1cywgSW5jLjEPMA0GA1UECxMG
U0hBS0VOMSwwKgYDVQQDEyNUcmFuc05leHVzLCBJbmMuIFNIQUtFTiBJc3N1aW5n
IENBMzAeFw0yMjA2MjAyMDI1MTBaFw0yMzA2MjAyMDI1MDlaMEYxCzAJBgNVBAYT
AlVTMRAwDgYDVQQKEwdJRXZvbHZlMQ8wDQYDVQQLEwZTSEFLRU4xFDASBgNVBAMT
C1NIQUtFTiA4NTdKMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9FM9t/XuNyxH
qfNfn1IaSH/127YdNSVe78mXSFi5gaAWwE6E3c6rZcbIM67tmZvt3vxNGFFB4k3Z
wnPyGX8x8KOCATwwggE4MAwGA1UdEwEB/wQCMAAwDgYDVR0PAQH/BAQDAgCAMB0G
A1UdDgQWBBQto7l0Be2eJ6prBW7uPQdi5Zv/RzAfBgNVHSMEGDAWgBS7lt4xEs3T
lpmEpDYwYDzXUoF9JzAXBgNVHSAEEDAOMAwGCmCGSAGG/wkBAQMwgaYGA1UdHwSB
njCBmzCBmKA6oDiGNmh0dHBzOi8vYXV0aGVudGljYXRlLWFwaS5pY29uZWN0aXYu
Y29tL2Rvd25sb2FkL3YxL2NybKJapFgwVjEUMBIGA1UEBwwLQnJpZGdld2F0ZXIx
CzAJBgNVBAgMAk5KMRMwEQYDVQQDDApTVEktUEEgQ1JMMQswCQYDVQQGEwJVUzEP
MA0GA1UECgwGU1RJLVBBMBYGCCsGAQUFBwEaBAowCKAGFgQ4NTdKMAoGCCqGSM49
BAMCA0gAMEUCIQDFb/OYDPhLwp3sbts9QFlIdUJYB/6W+oKeHtnsxDAPowIgF2SF
Heauc9H66vNFuQMkZklJBqKMjCfj+BKozDHtVxU=
-----END CERTIFICATE-----
-----BEGIN CERTIFICATE-----
MIIC8TCCApigAwIBAgIQaeMkSbXPfDSfEkC20T6VZTAKBggqhkjOPQQDAjBkMQsw
CQYDVQQGEwJVUzEZMBcGA1UEChMQVHJhbnNOZXh1cywgSW5jLjEPMA0GA1UECxMG
U0hBS0VOMSkwJwYDVQQDEyBUcmFuc05leHVzLCBJbmMuIFNIQUtFTiBSb290IENB
MTAeFw0yMTA4MjAwMDAwMDBaFw0zMTA4MTkyMzU5NTlaMGcxCzAJBgNVBAYTAlVT
MRkwFwYDVQQKExBUcmFuc05leHVzLCBJbmMuMQ8wDQYDVQQLEwZTSEFLRU4xLDAq
BgNVBAMTI1RyYW5zTmV4dXMsIEluYy4gU0hBS0VOIElzc3VpbmcgQ0EzMFkwEwYH
KoZIzj0CAQYIKoZIzj0DAQcDQgAEedxAVLKoKQD8g8QPsb9EqRyITRIDArijIRVn
1QSXV3Oh7H5HsWihLlTqgbnVM7zF/nXicWvV/kkgvIKOfmCpW6OCAScwggEjMA8G
A1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgAGMB0GA1UdDgQWBBS7lt4xEs3T
lpmEpDYwYDzXUoF9JzAfBgNVHSMEGDAWgBSajEoZn2TEXjO2KYwWyqe4EEsuWzAX
BgNVHSAEEDAOMAwGCmCGSAGG/wkBAQMwgaYGA1UdHwSBnjCBmzCBmKA6oDiGNmh0
dHBzOi8vYXV0aGVudGljYXRlLWFwaS5pY29uZWN0aXYuY29tL2Rvd25sb2FkL3Yx
L2NybKJapFgwVjEUMBIGA1UEBwwLQnJpZGdld2F0ZXIxCzAJBgNVBAgMAk5KMRMw
EQYDVQQDDApTVEktUEEgQ1JMMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGU1RJLVBB
MAoGCCqGSM49BAMCA0cAMEQCIGgZROhV4BF/KGMwnKGbSUJ0VMdMavpq1jSifXht
c7B3AiA6ODY5dkKtrUbywLLH+ZJX1UnDad6FZwwQVQpUD0oZHA==
-----END CERTIFICATE-----
-----BEGIN CERTIFICATE-----
MIICBzCCAa6gAwIBAgIQSJU/1evcbb3BlGgsmoxKtjAKBggqhkjOPQQDAjBkMQsw
CQYDVQQGEwJVUzEZMBcGA1UEChMQVHJhbnNOZXh1cywgSW5jLjEPMA0GA1UECxMG
U0hBS0VOMSkwJwYDVQQDEyBUcmFuc05leHVzLCBJbmMuIFNIQUtFTiBSb290IENB
MTAeFw0yMTA4MjAwMDAwMDBaFw00MTA4MTkyMzU5NTlaMGQxCzAJBgNVBAYTAlVT
MRkwFwYDVQQKExBUcmFuc05leHVzLCBJbmMuMQ8wDQYDVQQLEwZTSEFLRU4xKTAn
BgNVBAMTIFRyYW5zTmV4dXMsIEluYy4gU0hBS0VOIFJvb3QgQ0ExMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEJWqZunl3+TOvG5v1B7qA8/t/LLhATxSqZzt8EOVX
67trV/U9UocZc8U6MVm3yRg0MSEo8D/3Br4o7nJTHzkcLaNCMEAwDwYDVR0TAQH/
BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAAYwHQYDVR0OBBYEFJqMShmfZMReM7YpjBbK
p7gQSy5bMAoGCCqGSM49BAMCA0cAMEQCICr3+hNmSquUHkNspgT5tCi/fvlMgHMx
V0Btv7TDXuuvAiAq6bUMx7jsydNYJEjd6IWBfP36w0n9cRwjxUGSh+QewA==
-----END CERTIFICATE-----
"""


def test_deployed_transnexus_chain_validates() -> None:
    leaf, intermediate, root = load_pem_chain(TRANSNEXUS_CHAIN_PEM)
    store = TrustStore.from_certificates([root])
    at = int(dt.datetime(2022, 10, 1, tzinfo=dt.UTC).timestamp())
    sti = store.validate([leaf, intermediate], now=at)
    assert sti.tn_auth_list.spcs == ("857J",)
    # An STI-PA CRL (indirect: issued under the distribution point's cRLIssuer) revokes it.
    (point,) = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert point.crl_issuer is not None
    (sti_pa,) = point.crl_issuer
    assert isinstance(sti_pa, x509.DirectoryName)
    assert sti_pa.value.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == "STI-PA CRL"
    crl = pki.make_crl(pki.make_root(), [leaf.serial_number], issuer_name=sti_pa.value)
    with pytest.raises(UnsupportedCredential, match="revoked"):
        store.validate([leaf, intermediate], now=at, crls=[crl])
