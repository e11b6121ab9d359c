"""stirshaken.pki: the throwaway SHAKEN PKI other tests and the CLI build on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken import pki
from stirshaken.certs import (
    TNAuthList,
    TrustStore,
    check_key_matches_certificate,
    load_pem_chain,
    load_private_key,
    parse_tn_auth_list,
)
from stirshaken.errors import UnsupportedCredential


def now() -> int:
    return int(time.time())


# -- the test PKI itself ---------------------------------------------------------------


def test_make_test_pki_layout_and_profile(tmp_path: Path) -> None:
    paths = pki.make_test_pki(tmp_path, spc="123H")
    for file in paths.all_files():
        assert file.is_file(), file
    for key_file in (paths.key, paths.root_key, paths.intermediate_key, paths.tls_key):
        assert key_file.stat().st_mode & 0o777 == 0o600
    assert paths.chain == paths.www_dir / "sp.pem"
    leaf = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    assert leaf.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == "SHAKEN 123H"
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    policies = leaf.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier for p in policies] == [pki.SHAKEN_POLICY_OID]
    assert parse_tn_auth_list(leaf) == TNAuthList(spcs=("123H",), ranges=(), ones=())
    root = x509.load_pem_x509_certificate(paths.root.read_bytes())
    assert "ROOT" in root.subject.rfc4514_string()
    tls = x509.load_pem_x509_certificate(paths.tls_cert.read_bytes())
    san = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


def test_ensure_test_pki_keeps_existing(tmp_path: Path) -> None:
    first = pki.ensure_test_pki(tmp_path)
    before = first.cert.read_bytes()
    again = pki.ensure_test_pki(tmp_path)
    assert again == first and again.cert.read_bytes() == before
    first.tls_key.unlink()
    pki.ensure_test_pki(tmp_path)
    assert first.cert.read_bytes() != before


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"spc": None}, "no TNAuthList"),
        ({"trusted": False}, "trusted root"),
        ({"expired": True}, "expired"),
        ({"curve": ec.SECP384R1()}, "P-256"),
        ({"digital_signature": False}, "digitalSignature"),
    ],
)
def test_add_leaf_variants_fail_validation(tmp_path: Path, options: dict[str, object], match: str) -> None:
    paths = pki.make_test_pki(tmp_path)
    leaf = pki.add_leaf(paths, "bad", **options)  # type: ignore[arg-type]
    assert leaf.chain == paths.www_dir / "bad.pem"
    assert leaf.key.stat().st_mode & 0o777 == 0o600
    store = TrustStore.from_directory(paths.trust_dir)
    with pytest.raises(UnsupportedCredential, match=match):
        store.validate(load_pem_chain(leaf.chain.read_bytes()), now=now())


def test_add_leaf_good_variant_validates(tmp_path: Path) -> None:
    paths = pki.make_test_pki(tmp_path)
    leaf = pki.add_leaf(paths, "other", spc="2002")
    store = TrustStore.from_directory(paths.trust_dir)
    sti = store.validate(load_pem_chain(leaf.chain.read_bytes()), now=now())
    assert sti.tn_auth_list.spcs == ("2002",)
    check_key_matches_certificate(load_private_key(leaf.key), sti)


def test_make_test_pki_serves_tls_for_requested_hosts(tmp_path: Path) -> None:
    paths = pki.make_test_pki(tmp_path, tls_hosts=("192.0.2.7", "certs.example.test"))
    tls = x509.load_pem_x509_certificate(paths.tls_cert.read_bytes())
    san = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    assert san.get_values_for_type(x509.DNSName) == ["certs.example.test"]
    eku = tls.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    root = x509.load_pem_x509_certificate(paths.root.read_bytes())
    tls.verify_directly_issued_by(root)


def test_ensure_test_pki_remakes_a_nearly_expired_pki(tmp_path: Path) -> None:
    first = pki.make_test_pki(tmp_path, days=1)
    before = first.cert.read_bytes()
    pki.ensure_test_pki(tmp_path)
    assert first.cert.read_bytes() != before


def test_make_crl_lists_serials() -> None:
    root = pki.make_root()
    crl = pki.make_crl(root, [7, 9])
    assert crl.get_revoked_certificate_by_serial_number(9) is not None
    assert crl.get_revoked_certificate_by_serial_number(8) is None
    assert crl.is_signature_valid(root.key.public_key())
