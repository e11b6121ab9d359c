"""STIR/SHAKEN for Kamailio: PASSporT signing and verification, sans-IO at its core.

The public API; everything else is private. ``stirshaken`` never imports
Kamailio's ``KSR``: the KEMI script in ``kemi/`` adapts it.
"""

from .errors import (
    BadIdentityInfo,
    CertificateFetchError,
    ConfigurationError,
    InvalidIdentity,
    InvalidSignature,
    MissingIdentity,
    SigningError,
    StaleDate,
    StirShakenError,
    UnsupportedCredential,
    UnsupportedPassportType,
    VerificationError,
)
from .identity import IdentityHeader, format_identity, parse_identity, split_identity_values
from .passport import Passport, decode_passport
from .signer import SignedIdentity, Signer
from .sipdate import format_sip_date, parse_sip_date
from .tn import InvalidNumber, canonical_tn, tn_from_uri
from .verifier import (
    NO_TN_VALIDATION,
    TN_VALIDATION_FAILED,
    TN_VALIDATION_PASSED,
    StaticKeySource,
    Verdict,
    Verifier,
)

__all__ = [
    "BadIdentityInfo",
    "CertificateFetchError",
    "ConfigurationError",
    "IdentityHeader",
    "InvalidIdentity",
    "InvalidNumber",
    "InvalidSignature",
    "MissingIdentity",
    "NO_TN_VALIDATION",
    "Passport",
    "SignedIdentity",
    "Signer",
    "SigningError",
    "StaleDate",
    "StaticKeySource",
    "StirShakenError",
    "TN_VALIDATION_FAILED",
    "TN_VALIDATION_PASSED",
    "UnsupportedCredential",
    "UnsupportedPassportType",
    "Verdict",
    "VerificationError",
    "Verifier",
    "canonical_tn",
    "decode_passport",
    "format_identity",
    "format_sip_date",
    "parse_identity",
    "parse_sip_date",
    "split_identity_values",
    "tn_from_uri",
]
