"""STI certificates: TNAuthList, chain validation against a trust store, signing keys.

Theory of operation. A verifier gets the certificate chain from the x5u URL
(leaf first, then intermediates: ATIS-1000080, ``application/pem-certificate-
chain``) and asks :meth:`TrustStore.validate` for an :class:`StiCertificate`.
Validation applies, in order:

1. the leaf key is ECDSA on P-256 (ATIS-1000080 §6.4.1: ``id-ecPublicKey`` on
   prime256v1, because PASSporTs are ES256);
2. the leaf is valid at ``now`` (RFC 5280 §4.1.2.5);
3. a path exists from the leaf through the presented intermediates to a trust
   anchor of the store (RFC 5280 §6, via ``cryptography.x509.verification``
   with Web PKI CA rules and no EE extension rules, as STI leaves carry no
   SAN or EKU);
4. the leaf is not a CA and its keyUsage asserts ``digitalSignature``
   (ATIS-1000080 §6.4.1: "Key Usage ... digitalSignature");
5. the leaf carries a TNAuthList with at least one entry (RFC 8226 §9;
   ATIS-1000080 §6.4.1: the SHAKEN EE certificate has a TNAuthList with an SPC);
6. optionally, no certificate of the path is on a supplied CRL.

Any failure is :class:`~stirshaken.errors.UnsupportedCredential` (RFC 8224
§6.2.2: 437 for an untrusted, expired or otherwise unacceptable credential).

The signer side uses :func:`load_private_key` and
:func:`check_key_matches_certificate`; their failures are configuration errors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification

from stirshaken.errors import ConfigurationError, UnsupportedCredential

#: id-pe-TNAuthList (RFC 8226 §9).
TN_AUTH_LIST_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.26")

_TN_CHARACTERS = frozenset("0123456789#*")


# -- TNAuthList ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TNAuthList:
    """The telephone numbers a certificate speaks for (RFC 8226 §9).

    ``ranges`` holds ``(start, count)`` pairs; ``count`` is at least 2.
    """

    spcs: tuple[str, ...] = ()
    ranges: tuple[tuple[str, int], ...] = ()
    ones: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # RFC 8226 §9: "TNAuthorizationList ::= SEQUENCE SIZE (1..MAX) OF TNEntry"
        if not (self.spcs or self.ranges or self.ones):
            raise ValueError("a TNAuthList holds at least one entry")

    def covers(self, tn: str) -> bool:
        """True when ``tn`` (canonical digits, RFC 8224 §8.3) is listed or inside a range.

        An SPC entry does not cover any number by itself: mapping an SPC to
        numbers needs a number-portability lookup, which US SHAKEN does not
        require of a verifier (ATIS-1000080).
        """
        if tn in self.ones:
            return True
        if not tn.isdigit():
            return False
        number = int(tn)
        for start, count in self.ranges:
            # A range is "count" consecutive numbers of the same length as start.
            if len(start) == len(tn) and start.isdigit():
                first = int(start)
                if first <= number < first + count:
                    return True
        return False


class _DerError(ValueError):
    """Malformed DER inside an extension we parse by hand."""


def _read_tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """One DER element at ``offset``: (tag byte, content, offset after it)."""
    if offset + 2 > len(data):
        raise _DerError("truncated element")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise _DerError("high tag numbers are not used by TNAuthList")
    first = data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    else:
        size = first & 0x7F
        # DER: no indefinite length (0x80), and the long form only when needed.
        if size == 0 or size > 4 or offset + size > len(data):
            raise _DerError("bad length")
        length = int.from_bytes(data[offset : offset + size], "big")
        if length < 0x80 or data[offset] == 0:
            raise _DerError("non-minimal length")
        offset += size
    end = offset + length
    if end > len(data):
        raise _DerError("truncated content")
    return tag, data[offset:end], end


def _elements(data: bytes) -> list[tuple[int, bytes]]:
    """All DER elements laid end to end in ``data``."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        tag, content, offset = _read_tlv(data, offset)
        out.append((tag, content))
    return out


def _single(data: bytes, expected_tag: int, what: str) -> bytes:
    elements = _elements(data)
    if len(elements) != 1 or elements[0][0] != expected_tag:
        raise _DerError(f"{what}: expected exactly one element with tag {expected_tag:#04x}")
    return elements[0][1]


def _ia5(content: bytes, what: str) -> str:
    if not content or any(b > 0x7F for b in content):
        raise _DerError(f"{what}: not a non-empty IA5String")
    return content.decode("ascii")


def _telephone_number(content: bytes) -> str:
    # RFC 8226 §9: TelephoneNumber ::= IA5String (SIZE (1..15)) (FROM ("0123456789#*"))
    tn = _ia5(content, "TelephoneNumber")
    if len(tn) > 15 or not set(tn) <= _TN_CHARACTERS:
        raise _DerError(f"TelephoneNumber {tn!r} is not 1-15 of 0-9#*")
    return tn


def _integer(content: bytes) -> int:
    if not content:
        raise _DerError("empty INTEGER")
    return int.from_bytes(content, "big", signed=True)


def _range(content: bytes) -> tuple[str, int]:
    # TelephoneNumberRange ::= SEQUENCE { start TelephoneNumber, count INTEGER (2..MAX) }
    parts = _elements(content)
    if len(parts) != 2 or parts[0][0] != 0x16 or parts[1][0] != 0x02:
        raise _DerError("TelephoneNumberRange is not SEQUENCE {IA5String, INTEGER}")
    start = _telephone_number(parts[0][1])
    count = _integer(parts[1][1])
    if count < 2:
        raise _DerError(f"TelephoneNumberRange count {count} is below 2")
    return start, count


def decode_tn_auth_list(der: bytes) -> TNAuthList:
    """Decode the DER of a TNAuthList extension value (RFC 8226 §9).

    Both tagging styles are accepted for each TNEntry CHOICE alternative::

        spc   [0]  EXPLICIT: A0 L 16 L <code>    IMPLICIT: 80 L <code>
        range [1]  EXPLICIT: A1 L 30 L <seq>     IMPLICIT: A1 L 16 .. 02 ..
        one   [2]  EXPLICIT: A2 L 16 L <tn>      IMPLICIT: 82 L <tn>

    Deployed STI-CAs use EXPLICIT tags (a Google Voice certificate encodes
    SPC "969H" as ``30 08 A0 06 16 04 39 36 39 48``).

    Raises :class:`UnsupportedCredential` when the bytes are not a TNAuthList.
    """
    try:
        body = _single(der, 0x30, "TNAuthorizationList")
        spcs: list[str] = []
        ranges: list[tuple[str, int]] = []
        ones: list[str] = []
        for tag, content in _elements(body):
            if tag == 0xA0:  # spc, EXPLICIT
                spcs.append(_ia5(_single(content, 0x16, "spc"), "ServiceProviderCode"))
            elif tag == 0x80:  # spc, IMPLICIT
                spcs.append(_ia5(content, "ServiceProviderCode"))
            elif tag == 0xA1:  # range: EXPLICIT wraps a SEQUENCE, IMPLICIT replaces its tag
                inner = _elements(content)
                if len(inner) == 1 and inner[0][0] == 0x30:
                    ranges.append(_range(inner[0][1]))
                else:
                    ranges.append(_range(content))
            elif tag == 0xA2:  # one, EXPLICIT
                ones.append(_telephone_number(_single(content, 0x16, "one")))
            elif tag == 0x82:  # one, IMPLICIT
                ones.append(_telephone_number(content))
            else:
                raise _DerError(f"unknown TNEntry tag {tag:#04x}")
        if not (spcs or ranges or ones):
            raise _DerError("empty TNAuthorizationList")
    except _DerError as exc:
        raise UnsupportedCredential(f"malformed TNAuthList: {exc}") from None
    return TNAuthList(spcs=tuple(spcs), ranges=tuple(ranges), ones=tuple(ones))


def parse_tn_auth_list(cert: x509.Certificate) -> TNAuthList | None:
    """The certificate's TNAuthList (OID 1.3.6.1.5.5.7.1.26), or None when absent.

    Raises :class:`UnsupportedCredential` when the extension is malformed.
    """
    try:
        extension = cert.extensions.get_extension_for_oid(TN_AUTH_LIST_OID)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # duplicate or undecodable extensions
        raise UnsupportedCredential(f"unreadable certificate extensions: {exc}") from None
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise UnsupportedCredential("TNAuthList extension has an unexpected type")
    return decode_tn_auth_list(value.value)


# -- validated certificates --------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StiCertificate:
    """A leaf certificate that passed :meth:`TrustStore.validate`.

    ``chain`` is the verified path, leaf first, ending with the trust anchor.
    ``not_before``/``not_after`` are the leaf's validity in epoch seconds.
    """

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    public_key: ec.EllipticCurvePublicKey
    tn_auth_list: TNAuthList
    not_before: int
    not_after: int
    crl_urls: tuple[str, ...]

    @property
    def chain_not_after(self) -> int:
        """The earliest notAfter on the path: the chain is unusable from then on."""
        return min(int(c.not_valid_after_utc.timestamp()) for c in self.chain)


def load_pem_chain(data: bytes) -> list[x509.Certificate]:
    """The certificates of an x5u response, in order (leaf first).

    ATIS-1000080 serves ``application/pem-certificate-chain``; a single DER
    certificate is accepted too because some repositories serve that.
    Raises :class:`UnsupportedCredential` for empty or unparseable data.
    """
    if not data.strip():
        raise UnsupportedCredential("empty certificate chain")
    if b"-----BEGIN" in data:
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise UnsupportedCredential(f"unparseable PEM certificate chain: {exc}") from None
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise UnsupportedCredential("certificate chain is neither PEM nor DER") from None


def _epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def _crl_distribution_points(cert: x509.Certificate) -> x509.CRLDistributionPoints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None


def _revoked_by(
    cert: x509.Certificate, crls: Sequence[x509.CertificateRevocationList]
) -> x509.CertificateRevocationList | None:
    # A CRL speaks for a certificate when issued by its issuer, or by the
    # cRLIssuer its distribution point names (ATIS-1000080 v004: the STI-PA CRL).
    issuers = {cert.issuer}
    points = _crl_distribution_points(cert)
    if points is not None:
        for point in points:
            for name in point.crl_issuer or ():
                if isinstance(name, x509.DirectoryName):
                    issuers.add(name.value)
    for crl in crls:
        if crl.issuer in issuers and crl.get_revoked_certificate_by_serial_number(
            cert.serial_number
        ) is not None:
            return crl
    return None


def _sti_extension_policies() -> tuple[verification.ExtensionPolicy, verification.ExtensionPolicy]:
    """(CA policy, EE policy) for STI chains.

    Web PKI rules for CAs, none for the leaf (STI leaves have no SAN/EKU; our
    own rule 4 checks them). Deployed STI certificates mark certificatePolicies
    critical (e.g. Google Voice "969H" via NetNumber), which ATIS-1000080 lints
    flag but verifiers accept; RFC 5280 §4.2 would otherwise make an
    unrecognised critical extension fatal, so these are accounted for either way.
    """
    agnostic = verification.Criticality.AGNOSTIC
    ca = verification.ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.CertificatePolicies, agnostic, None
    )
    ee = verification.ExtensionPolicy.permit_all()
    for extension in (
        x509.CertificatePolicies,
        x509.BasicConstraints,
        x509.KeyUsage,
        x509.CRLDistributionPoints,
        x509.AuthorityKeyIdentifier,
        x509.SubjectKeyIdentifier,
    ):
        ee = ee.may_be_present(extension, agnostic, None)
    return ca, ee


_CA_POLICY, _EE_POLICY = _sti_extension_policies()


class TrustStore:
    """The trust anchors (STI-PA trusted CA list) a verifier accepts chains to."""

    __slots__ = ("_roots", "_store")

    def __init__(self, roots: Iterable[x509.Certificate]) -> None:
        self._roots = tuple(roots)
        if not self._roots:
            raise ConfigurationError("a trust store needs at least one root certificate")
        self._store = verification.Store(list(self._roots))

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The trust anchors."""
        return self._roots

    @classmethod
    def from_certificates(cls, certs: Iterable[x509.Certificate]) -> TrustStore:
        """A store of the given root certificates."""
        return cls(certs)

    @classmethod
    def from_directory(cls, path: str | Path) -> TrustStore:
        """A store of every certificate in the ``*.pem`` / ``*.crt`` files of ``path``.

        Each file may hold several PEM certificates (a CA list). A missing or
        empty directory, or an unreadable file, is a :class:`ConfigurationError`.
        """
        directory = Path(path)
        if not directory.is_dir():
            raise ConfigurationError(f"trust directory {directory} does not exist")
        files = sorted(
            p for p in directory.iterdir() if p.suffix in (".pem", ".crt") and p.is_file()
        )
        roots: list[x509.Certificate] = []
        for file in files:
            try:
                roots.extend(x509.load_pem_x509_certificates(file.read_bytes()))
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"trust anchor file {file}: {exc}") from None
        if not roots:
            raise ConfigurationError(f"trust directory {directory} holds no *.pem or *.crt certificate")
        return cls(roots)

    def validate(
        self,
        chain: Sequence[x509.Certificate],
        *,
        now: int,
        crls: Sequence[x509.CertificateRevocationList] = (),
    ) -> StiCertificate:
        """Check an x5u chain (leaf first) at ``now`` (epoch seconds); see the module rules.

        ``crls`` are trusted as given: the caller obtains them from a source it
        trusts (the STI-PA CRL) and keeps them current; only serials are matched.
        Raises :class:`UnsupportedCredential` on any failure.
        """
        if not chain:
            raise UnsupportedCredential("empty certificate chain")
        leaf = chain[0]
        subject = leaf.subject.rfc4514_string()

        # Rule 1. ATIS-1000080 §6.4.1: the key is id-ecPublicKey on P-256.
        try:
            public_key = leaf.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise UnsupportedCredential(f"certificate {subject!r} has an unsupported key") from None
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise UnsupportedCredential(f"certificate {subject!r} key is not ECDSA")
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise UnsupportedCredential(
                f"certificate {subject!r} key is on {public_key.curve.name}, not P-256"
            )

        # Rule 2. RFC 5280 §4.1.2.5; checked first for a clearer detail.
        not_before = _epoch(leaf.not_valid_before_utc)
        not_after = _epoch(leaf.not_valid_after_utc)
        if now < not_before:
            raise UnsupportedCredential(
                f"certificate {subject!r} is not valid before "
                f"{leaf.not_valid_before_utc.isoformat()}"
            )
        if now > not_after:
            raise UnsupportedCredential(
                f"certificate {subject!r} expired at {leaf.not_valid_after_utc.isoformat()}"
            )

        # Rule 3. RFC 5280 §6 path validation to one of our anchors.
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(dt.datetime.fromtimestamp(now, dt.UTC))
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, list(chain[1:]))
        except verification.VerificationError as exc:
            raise UnsupportedCredential(
                f"certificate {subject!r} does not chain to a trusted root: {exc}"
            ) from None
        path = tuple(verified.chain)

        # Rule 4. ATIS-1000080 §6.4.1: EE basicConstraints cA=false, keyUsage digitalSignature.
        try:
            basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            basic = None
        if basic is not None and basic.ca:
            raise UnsupportedCredential(f"certificate {subject!r} is a CA, not an STI end entity")
        try:
            key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            raise UnsupportedCredential(
                f"certificate {subject!r} has no keyUsage (ATIS-1000080 requires digitalSignature)"
            ) from None
        if not key_usage.digital_signature:
            raise UnsupportedCredential(
                f"certificate {subject!r} keyUsage lacks digitalSignature"
            )

        # Rule 5. RFC 8226 §9 / ATIS-1000080: the EE certificate carries a TNAuthList.
        tn_auth_list = parse_tn_auth_list(leaf)
        if tn_auth_list is None:
            raise UnsupportedCredential(f"certificate {subject!r} has no TNAuthList")

        # Rule 6. Revocation, when the caller supplies CRLs. The anchor is not checked.
        for cert in path[:-1]:
            if _revoked_by(cert, crls) is not None:
                raise UnsupportedCredential(
                    f"certificate {cert.subject.rfc4514_string()!r} serial "
                    f"{cert.serial_number:x} is revoked"
                )

        crl_urls = tuple(
            name.value
            for point in _crl_distribution_points(leaf) or ()
            for name in point.full_name or ()
            if isinstance(name, x509.UniformResourceIdentifier)
        )
        return StiCertificate(
            certificate=leaf,
            chain=path,
            public_key=public_key,
            tn_auth_list=tn_auth_list,
            not_before=not_before,
            not_after=not_after,
            crl_urls=crl_urls,
        )


# -- signing credentials -----------------------------------------------------


def load_private_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """The signer's unencrypted PEM (PKCS#8 or SEC1) P-256 private key.

    RFC 8588 / ATIS-1000074 sign with ES256 only, so any other key is a
    :class:`ConfigurationError`, as is a missing or unreadable file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read private key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"private key {path} is unusable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise ConfigurationError(f"private key {path} is not an ECDSA P-256 key (ES256)")
    return key


def load_certificate_file(path: str | Path) -> list[x509.Certificate]:
    """The PEM certificates of a local file (the signer's certificate or chain).

    A missing, empty or unparseable file is a :class:`ConfigurationError`.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read certificate {path}: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigurationError(f"certificate file {path} is unusable: {exc}") from None


def check_key_matches_certificate(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate | StiCertificate
) -> None:
    """Raise :class:`ConfigurationError` unless ``key`` is the certificate's private key.

    A mismatch means every PASSporT we sign fails verification (438) at the peer.
    """
    certificate = cert.certificate if isinstance(cert, StiCertificate) else cert
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != certificate.public_key().public_bytes(der, spki):
        raise ConfigurationError(
            f"private key does not match certificate {certificate.subject.rfc4514_string()!r}"
        )
