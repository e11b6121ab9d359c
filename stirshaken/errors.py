"""One exception tree for the whole library.

Every verification failure carries the SIP answer a verification service
gives for it (RFC 8224 §6.2.2, §13.2; ATIS-1000074 §5.3.1), so the caller
turns an exception into a reply or a verstat in exactly one place::

    StirShakenError
    ├── ConfigurationError            bad key, certificate, setting or CLI input
    ├── SigningError                  the local STI-AS cannot sign this call
    └── VerificationError             sip_status / reason below
        ├── StaleDate                 403 Stale Date
        ├── MissingIdentity           428 Use Identity Header
        │   └── UnsupportedPassportType   a ppt other than shaken: skipped
        ├── BadIdentityInfo           436 Bad Identity Info
        │   └── CertificateFetchError     the x5u could not be dereferenced
        ├── UnsupportedCredential     437 Unsupported Credential
        └── InvalidIdentity           438 Invalid Identity Header
            └── InvalidSignature          the ES256 signature does not verify

The reason phrases are RFC 8224's; peers differ in case ("Bad identity
Info"), so compare them case-insensitively and match on the code.
"""

from __future__ import annotations


class StirShakenError(Exception):
    """Root of every exception this library raises on purpose."""


class ConfigurationError(StirShakenError):
    """A key, certificate, trust store or setting is unusable."""


class SigningError(StirShakenError):
    """The local authentication service cannot sign this call."""


class VerificationError(StirShakenError):
    """A verification failure, with the SIP status a verifier answers it with."""

    sip_status: int = 438
    reason: str = "Invalid Identity Header"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StaleDate(VerificationError):
    """RFC 8224 §6.2 step 4: Date or iat outside the freshness window."""

    sip_status = 403
    reason = "Stale Date"


class MissingIdentity(VerificationError):
    """RFC 8224 §6.2.2: no Identity header with a supported ppt."""

    sip_status = 428
    reason = "Use Identity Header"


class UnsupportedPassportType(MissingIdentity):
    """RFC 8224 §6.2: an Identity whose ppt the verifier does not support is skipped.

    It is answered with 428 only when no supported Identity is left.
    """


class BadIdentityInfo(VerificationError):
    """RFC 8224 §6.2.2: the info URI cannot be dereferenced or is not allowed."""

    sip_status = 436
    reason = "Bad Identity Info"


class CertificateFetchError(BadIdentityInfo):
    """The x5u certificate could not be fetched (network, status, size, timeout)."""


class UnsupportedCredential(VerificationError):
    """RFC 8224 §6.2.2: the credential is untrusted, expired or not an STI certificate."""

    sip_status = 437
    reason = "Unsupported Credential"


class InvalidIdentity(VerificationError):
    """RFC 8224 §6.2.2: malformed Identity header or PASSporT, or claims that do not match."""

    sip_status = 438
    reason = "Invalid Identity Header"


class InvalidSignature(InvalidIdentity):
    """The ES256 signature does not verify over the received header.payload bytes."""
