"""The local authentication service (STI-AS, RFC 8224 §6.1, ATIS-1000074 §5.2).

Theory of operation: the key, the x5u and the canonical protected header
are fixed for the signer's life, so they are loaded and encoded once; a
call then costs one payload string, one ECDSA signature and one Date
string (cached per second). Rules enforced here:

1. RFC 8224 §6.1: the AS adds a Date and ``iat`` equals it (RFC 8225 §5.1.1).
2. RFC 8224 §6.1: the AS "MUST" check that Date falls within its
   certificate's validity; an expired or not-yet-valid certificate signs
   nothing (SigningError), rather than emitting PASSporTs every peer rejects.
3. RFC 8588: attest is A, B or C; origid a UUID; orig and dest canonical
   telephone numbers (RFC 8224 §8.3), dest a non-empty array.
4. RFC 8225 §4.3 / ATIS-1000074: x5u is an https URL; ``info`` repeats it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import ConfigurationError, SigningError
from .identity import format_identity
from .passport import ATTESTATION_LEVELS, b64url_encode, encode_header, encode_payload, is_tn, is_uuid, sign_es256
from .sipdate import format_sip_date


def new_origid() -> str:
    """A random (version 4) UUID in its canonical text form (RFC 8588 §5.2 origid).

    Equal to ``str(uuid.uuid4())`` without building a UUID object: this runs
    once per signed call.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedIdentity:
    """What goes on the outgoing INVITE: ``Identity: {identity}`` and ``Date: {date}``."""

    identity: str
    date: str
    iat: int
    origid: str
    attest: str


class Signer:
    """Signs SHAKEN PASSporTs with one STI key; build once, call ``sign`` per call."""

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        *,
        x5u: str,
        certificate: x509.Certificate | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            private_key.curve, ec.SECP256R1
        ):
            raise ConfigurationError("the signing key must be an EC P-256 key (RFC 8588: ES256)")
        if not x5u.startswith("https://"):
            raise ConfigurationError(f"x5u must be an https URL (ATIS-1000080), got {x5u!r}")
        self._key = private_key
        self._clock = clock
        self.x5u = x5u
        self._header_b64 = b64url_encode(encode_header(x5u)) + "."
        self._identity_suffix = format_identity("", x5u)
        self._valid_from: int | None = None
        self._valid_until: int | None = None
        if certificate is not None:
            self._valid_from = int(certificate.not_valid_before_utc.timestamp())
            self._valid_until = int(certificate.not_valid_after_utc.timestamp())
        self._date_cache: tuple[int, str] = (-1, "")

    @classmethod
    def from_files(
        cls,
        *,
        key_path: str | Path,
        x5u: str,
        cert_path: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Signer:
        """Load the key (and, when given, the certificate it must match) once."""
        from .certs import check_key_matches_certificate, load_pem_chain, load_private_key

        key = load_private_key(key_path)
        certificate = None
        if cert_path is not None:
            try:
                data = Path(cert_path).read_bytes()
            except OSError as exc:
                raise ConfigurationError(f"cannot read certificate {cert_path}: {exc}") from exc
            try:
                certificate = load_pem_chain(data)[0]
            except Exception as exc:
                raise ConfigurationError(f"{cert_path}: not a PEM certificate: {exc}") from exc
            check_key_matches_certificate(key, certificate)
        return cls(key, x5u=x5u, certificate=certificate, clock=clock)

    def sign(
        self,
        *,
        orig: str,
        dest: Sequence[str],
        attest: str,
        origid: str | None = None,
        iat: int | None = None,
    ) -> SignedIdentity:
        """Sign one call; orig and dest must already be canonical (see ``stirshaken.tn``)."""
        if attest not in ATTESTATION_LEVELS:
            raise SigningError(f"attest must be A, B or C, got {attest!r}")
        if not is_tn(orig):
            raise SigningError(f"orig is not a canonical telephone number: {orig!r}")
        dest_tns = (dest,) if isinstance(dest, str) else tuple(dest)
        if not dest_tns or not all(is_tn(tn) for tn in dest_tns):
            raise SigningError(f"dest is not a list of canonical telephone numbers: {dest!r}")
        if origid is None:
            origid = new_origid()
        elif not is_uuid(origid):
            raise SigningError(f"origid must be a UUID (RFC 8588 §5.2), got {origid!r}")
        if iat is None:
            iat = int(self._clock())
        if self._valid_until is not None and not (
            self._valid_from is not None and self._valid_from <= iat <= self._valid_until
        ):
            raise SigningError("the signing certificate is not valid at this Date (RFC 8224 §6.1)")

        payload = encode_payload(attest=attest, dest=dest_tns, iat=iat, orig=orig, origid=origid)
        unsigned = self._header_b64 + b64url_encode(payload)
        signature = sign_es256(self._key, unsigned.encode("ascii"))
        return SignedIdentity(
            identity=f"{unsigned}.{signature}{self._identity_suffix}",
            date=self._date_for(iat),
            iat=iat,
            origid=origid,
            attest=attest,
        )

    def _date_for(self, iat: int) -> str:
        # Calls in the same second share one Date string; one tuple, so
        # threads never see a second paired with another second's text.
        second, text = self._date_cache
        if second != iat:
            text = format_sip_date(iat)
            self._date_cache = (iat, text)
        return text
