"""A throwaway SHAKEN PKI for tests and development.

Theory of operation: :func:`make_test_pki` writes a complete, self-consistent
set of files that a signer, a verifier and the development certificate server
(:mod:`stirshaken.certserver`) can use together::

    out_dir/
    ├── root.pem, root-key.pem            "SHAKEN ROOT TEST" (trust anchor)
    ├── trust/root.pem                    the verifier's trust directory
    ├── intermediate.pem, intermediate-key.pem
    ├── sp-key.pem, sp-cert.pem           the signer's key and EE certificate
    ├── www/sp.pem                        leaf + intermediate: what the x5u serves
    └── tls-cert.pem, tls-key.pem         HTTPS certificate of the certificate server

The certificates follow the SHAKEN profile (ATIS-1000080 §6.4.1) closely enough
that the verifier accepts them: P-256 keys, ``ecdsa-with-SHA256``, a critical
keyUsage of only ``digitalSignature`` on the EE certificate, critical
basicConstraints, SKI/AKI, one certificate policy, one CRL distribution point
with a cRLIssuer, and a TNAuthList holding one SPC with EXPLICIT tagging (the
encoding deployed STI-CAs use).

:func:`add_leaf` writes further EE credentials for negative tests: without a
TNAuthList, expired, on the wrong curve, without digitalSignature, or chained to
a root that is not in the trust directory. Nothing here is fit for production:
private keys are written unencrypted (mode 0600).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stirshaken.certs import TN_AUTH_LIST_OID

#: SHAKEN Certificate Policy OID (US SHAKEN CP; ATIS-1000080 §6.4.1).
SHAKEN_POLICY_OID = x509.ObjectIdentifier("2.16.840.1.114569.1.1.1")

#: CRL URL written into the CRL distribution point of test EE certificates.
TEST_CRL_URL = "https://127.0.0.1:8443/crl.pem"

#: cRLIssuer of the distribution point (ATIS-1000080 v004 wants one).
TEST_CRL_ISSUER = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "STI-PA TEST"),
        x509.NameAttribute(NameOID.COMMON_NAME, "STI-PA TEST CRL"),
    ]
)

_CA_DAYS = 3650


@dataclass(frozen=True, slots=True, kw_only=True)
class Issuer:
    """A CA certificate with the private key that signs below it."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True, kw_only=True)
class PkiPaths:
    """Every file :func:`make_test_pki` writes."""

    out_dir: Path
    root: Path
    root_key: Path
    trust_dir: Path
    intermediate: Path
    intermediate_key: Path
    key: Path
    cert: Path
    chain: Path
    www_dir: Path
    tls_cert: Path
    tls_key: Path

    @classmethod
    def under(cls, out_dir: Path) -> PkiPaths:
        """The paths :func:`make_test_pki` uses below ``out_dir`` (files may not exist yet)."""
        out_dir = Path(out_dir)
        return cls(
            out_dir=out_dir,
            root=out_dir / "root.pem",
            root_key=out_dir / "root-key.pem",
            trust_dir=out_dir / "trust",
            intermediate=out_dir / "intermediate.pem",
            intermediate_key=out_dir / "intermediate-key.pem",
            key=out_dir / "sp-key.pem",
            cert=out_dir / "sp-cert.pem",
            chain=out_dir / "www" / "sp.pem",
            www_dir=out_dir / "www",
            tls_cert=out_dir / "tls-cert.pem",
            tls_key=out_dir / "tls-key.pem",
        )

    def all_files(self) -> tuple[Path, ...]:
        """The files (not directories) of this PKI."""
        return (
            self.root,
            self.root_key,
            self.trust_dir / "root.pem",
            self.intermediate,
            self.intermediate_key,
            self.key,
            self.cert,
            self.chain,
            self.tls_cert,
            self.tls_key,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LeafPaths:
    """Files written by :func:`add_leaf`: a signing key, its certificate and the x5u chain."""

    key: Path
    cert: Path
    chain: Path


# -- in-memory builders ------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _name(common_name: str, organization: str = "STIR/SHAKEN TEST") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _ee_key_usage(*, digital_signature: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        # keyUsage must assert at least one bit; keyAgreement stands in when
        # a test wants digitalSignature missing.
        key_agreement=not digital_signature,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def encode_tn_auth_list_spc(spc: str, *, explicit: bool = True) -> bytes:
    """DER of a TNAuthList holding one SPC (RFC 8226 §9).

    ``explicit=True`` gives the deployed encoding ``30 L A0 L 16 L <spc>``;
    ``explicit=False`` the IMPLICIT one ``30 L 80 L <spc>``.
    """
    value = spc.encode("ascii")
    if explicit:
        entry = _tlv(0xA0, _tlv(0x16, value))
    else:
        entry = _tlv(0x80, value)
    return _tlv(0x30, entry)


def _tlv(tag: int, value: bytes) -> bytes:
    length = len(value)
    if length < 0x80:
        return bytes([tag, length]) + value
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + value


def make_root(
    *, common_name: str = "SHAKEN ROOT TEST", days: int = _CA_DAYS
) -> Issuer:
    """A self-signed P-256 root CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=365))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Issuer(certificate=certificate, key=key)


def make_intermediate(
    root: Issuer,
    *,
    common_name: str = "SHAKEN TEST Intermediate CA",
    days: int = _CA_DAYS,
) -> Issuer:
    """A P-256 STI-CA intermediate signed by ``root`` (pathLen 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=365))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
        .sign(root.key, hashes.SHA256())
    )
    return Issuer(certificate=certificate, key=key)


def make_leaf(
    issuer: Issuer,
    *,
    spc: str | None = "1001",
    tn_auth_list_der: bytes | None = None,
    curve: ec.EllipticCurve | None = None,
    digital_signature: bool = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: int = 365,
    crl_url: str | None = TEST_CRL_URL,
    serial_number: int | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A SHAKEN EE certificate "SHAKEN <spc>" and its private key.

    ``spc=None`` leaves the TNAuthList out (a verifier answers 437);
    ``tn_auth_list_der`` puts in raw extension bytes instead (for encoding
    tests). ``curve`` defaults to P-256; pass ``ec.SECP384R1()`` for a
    wrong-curve credential. ``not_before``/``not_after`` override the validity
    (``days`` from now otherwise), e.g. for an expired certificate.
    """
    key = ec.generate_private_key(curve if curve is not None else ec.SECP256R1())
    now = _now()
    start = not_before if not_before is not None else now - dt.timedelta(hours=1)
    end = not_after if not_after is not None else now + dt.timedelta(days=days)
    label = spc if spc is not None else "NO-TNAUTHLIST"
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(f"SHAKEN {label}", organization=f"Test SP {label}"))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(serial_number if serial_number is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_ee_key_usage(digital_signature=digital_signature), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(SHAKEN_POLICY_OID, policy_qualifiers=None)]
            ),
            critical=False,
        )
    )
    if crl_url is not None:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=[x509.DirectoryName(TEST_CRL_ISSUER)],
                    )
                ]
            ),
            critical=False,
        )
    der = tn_auth_list_der
    if der is None and spc is not None:
        der = encode_tn_auth_list_spc(spc)
    if der is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(TN_AUTH_LIST_OID, der), critical=False
        )
    return key, builder.sign(issuer.key, hashes.SHA256())


def make_tls_server_cert(
    root: Issuer, *, hosts: Sequence[str] = ("127.0.0.1", "localhost"), days: int = 365
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An HTTPS server certificate for ``hosts`` (IPs or DNS names), signed by ``root``."""
    if not hosts:
        raise ValueError("hosts must name at least one IP address or DNS name")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0], organization="STIR/SHAKEN TEST certificate server"))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
        .sign(root.key, hashes.SHA256())
    )
    return key, certificate


def make_crl(
    issuer: Issuer, revoked_serials: Sequence[int], *, issuer_name: x509.Name | None = None
) -> x509.CertificateRevocationList:
    """A CRL signed by ``issuer`` listing ``revoked_serials``.

    ``issuer_name`` overrides the CRL's issuer DN, e.g. :data:`TEST_CRL_ISSUER`
    for an STI-PA style indirect CRL.
    """
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_name if issuer_name is not None else issuer.certificate.subject)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(days=7))
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - dt.timedelta(minutes=5))
            .build()
        )
    return builder.sign(issuer.key, hashes.SHA256())


# -- files ---------------------------------------------------------------------


def pem_of(*certificates: x509.Certificate) -> bytes:
    """The PEM concatenation of ``certificates``, in order."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def write_certificates(path: Path, *certificates: x509.Certificate) -> Path:
    """Write ``certificates`` as one PEM file (mode 0644); return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, pem_of(*certificates), mode=0o644)
    return path


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    """Write an unencrypted PKCS#8 PEM key readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, mode=0o600)
    return path


def _write(path: Path, data: bytes, *, mode: int) -> None:
    # Write to a temporary name and rename, so that a concurrent reader (a
    # second test process calling ensure_test_pki) never sees half a file;
    # the key is created 0600 rather than chmod-ed after the fact.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def load_issuer(cert_path: Path, key_path: Path) -> Issuer:
    """Read back a CA written by :func:`make_test_pki`."""
    certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not an EC private key")
    return Issuer(certificate=certificate, key=key)


def make_test_pki(
    out_dir: Path,
    *,
    spc: str = "1001",
    tls_hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    days: int = 365,
) -> PkiPaths:
    """Create a fresh test PKI below ``out_dir`` (see the module docstring for the layout).

    Existing files are overwritten. ``days`` is the validity of the EE and TLS
    certificates; the CAs get ten years.
    """
    paths = PkiPaths.under(Path(out_dir))
    paths.out_dir.mkdir(parents=True, exist_ok=True)
    root = make_root()
    intermediate = make_intermediate(root)
    leaf_key, leaf = make_leaf(intermediate, spc=spc, days=days)
    tls_key, tls_cert = make_tls_server_cert(root, hosts=tls_hosts, days=days)

    write_certificates(paths.root, root.certificate)
    write_private_key(paths.root_key, root.key)
    write_certificates(paths.trust_dir / "root.pem", root.certificate)
    write_certificates(paths.intermediate, intermediate.certificate)
    write_private_key(paths.intermediate_key, intermediate.key)
    write_private_key(paths.key, leaf_key)
    write_certificates(paths.cert, leaf)
    write_certificates(paths.chain, leaf, intermediate.certificate)
    write_private_key(paths.tls_key, tls_key)
    write_certificates(paths.tls_cert, tls_cert)
    return paths


def ensure_test_pki(
    out_dir: Path,
    *,
    spc: str = "1001",
    tls_hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    days: int = 365,
) -> PkiPaths:
    """Like :func:`make_test_pki`, but keep an existing complete PKI in ``out_dir``.

    The PKI is made again when a file is missing or the EE certificate expires
    within a day, so a long-lived development directory does not rot.
    """
    paths = PkiPaths.under(Path(out_dir))
    paths.out_dir.mkdir(parents=True, exist_ok=True)
    # Several test processes may ask at once; the lock keeps them from
    # mixing a root of one generation with a leaf of another.
    with open(paths.out_dir / ".pki.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _usable(paths):
            return paths
        return make_test_pki(paths.out_dir, spc=spc, tls_hosts=tls_hosts, days=days)


def _usable(paths: PkiPaths) -> bool:
    if not all(p.is_file() for p in paths.all_files()):
        return False
    try:
        leaf = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    except ValueError:
        return False
    return leaf.not_valid_after_utc > _now() + dt.timedelta(days=1)


def add_leaf(
    paths: PkiPaths,
    name: str,
    *,
    spc: str | None = "1001",
    trusted: bool = True,
    expired: bool = False,
    curve: ec.EllipticCurve | None = None,
    digital_signature: bool = True,
) -> LeafPaths:
    """Write another EE credential next to the test PKI, for negative tests.

    Files: ``out_dir/<name>-key.pem``, ``out_dir/<name>-cert.pem`` and the
    x5u chain ``www/<name>.pem`` (served as ``https://HOST:PORT/<name>.pem``).

    - ``spc=None``: no TNAuthList (verifier: 437);
    - ``trusted=False``: signed by a fresh root and intermediate that are not
      in ``trust_dir`` (verifier: 437);
    - ``expired=True``: validity ended yesterday (verifier: 437);
    - ``curve=ec.SECP384R1()``: not P-256 (verifier: 437; a signer refuses the key);
    - ``digital_signature=False``: keyUsage without digitalSignature (verifier: 437).
    """
    if trusted:
        intermediate = load_issuer(paths.intermediate, paths.intermediate_key)
    else:
        intermediate = make_intermediate(make_root(common_name="SHAKEN ROOT UNTRUSTED"))
    not_before = not_after = None
    if expired:
        now = _now()
        not_before, not_after = now - dt.timedelta(days=30), now - dt.timedelta(days=1)
    key, leaf = make_leaf(
        intermediate,
        spc=spc,
        curve=curve,
        digital_signature=digital_signature,
        not_before=not_before,
        not_after=not_after,
    )
    leaf_paths = LeafPaths(
        key=paths.out_dir / f"{name}-key.pem",
        cert=paths.out_dir / f"{name}-cert.pem",
        chain=paths.www_dir / f"{name}.pem",
    )
    write_private_key(leaf_paths.key, key)
    write_certificates(leaf_paths.cert, leaf)
    write_certificates(leaf_paths.chain, leaf, intermediate.certificate)
    return leaf_paths
