"""The verification service (STI-VS: RFC 8224 §6.2, ATIS-1000074 §5.3.1).

Theory of operation: ``Verifier.verify`` takes plain values from the SIP
request (every Identity value, the Date header, the canonical calling and
called numbers) and returns one immutable ``Verdict``. It never raises for
bad input: each failure becomes the verdict's SIP status and reason. For
every Identity value, in order, cheapest check first:

1. Parse the header (RFC 8224 §4): info present (436), alg ES256 (438),
   full form (438). A ppt other than shaken is skipped (RFC 8224 §6.2).
2. Decode the PASSporT (RFC 8225, RFC 8588): typ, alg, ppt, x5u and every
   SHAKEN claim (438).
3. x5u equals info (ATIS-1000074 §5.3.1; 436, as the French MAN tests do).
4. Freshness (RFC 8224 §6.2 step 4): ``iat`` and Date each within
   ``max_age`` seconds of now, in both directions (403 Stale Date). A
   missing or unreadable Date is stale when ``require_date`` is set.
5. orig equals the calling number and the called number is one of dest,
   both canonicalised the same way (RFC 8224 §8.3; 438).
6. The certificate from the certificate source: fetch (436), chain, key and
   TNAuthList (437); ``iat`` inside its validity (RFC 8224 §6.2: 403).
7. The ES256 signature over the received bytes (438).

RFC 8224 §6.2: the request is verified when one supported Identity
passes; otherwise the failure of the first supported one is reported. No
supported Identity at all gives No-TN-Validation with 428 for a policy that
requires one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from .errors import (
    BadIdentityInfo,
    InvalidIdentity,
    MissingIdentity,
    StaleDate,
    UnsupportedPassportType,
    VerificationError,
)
from .identity import MAX_IDENTITY_LENGTH, parse_identity, split_identity_values
from .passport import Passport, decode_passport, verify_es256
from .sipdate import parse_sip_date
from .tn import canonical_or_raw

TN_VALIDATION_PASSED = "TN-Validation-Passed"
TN_VALIDATION_FAILED = "TN-Validation-Failed"
NO_TN_VALIDATION = "No-TN-Validation"

#: At most this many Identity values are examined in one request; the rest
#: are ignored (a request stuffed with hundreds costs no more than this).
MAX_IDENTITIES = 8


class Credential(Protocol):
    """What the verifier needs of a certificate (``certs.StiCertificate`` is one)."""

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey: ...
    @property
    def not_before(self) -> int: ...
    @property
    def not_after(self) -> int: ...


class CertificateSource(Protocol):
    """Gives the validated credential behind an x5u, or raises 436 / 437 errors."""

    def certificate_for(self, x5u: str, *, now: int) -> Credential: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticKey:
    """A bare public key as a credential, for ``--pubkey`` checks and tests."""

    public_key: ec.EllipticCurvePublicKey
    not_before: int = 0
    not_after: int = 2**62


class StaticKeySource:
    """A certificate source that answers every x5u with one public key.

    For interoperability tests and ``stirshaken verify --pubkey``: no chain
    and no TNAuthList are checked, only the signature and the claims.
    """

    def __init__(self, public_key: ec.EllipticCurvePublicKey) -> None:
        self._credential = StaticKey(public_key=public_key)

    def certificate_for(self, x5u: str, *, now: int) -> Credential:
        return self._credential


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The outcome of verifying one request.

    ``sip_status``/``reason`` are what a verifier that rejects answers
    (RFC 8224 §6.2.2): 200 when the call passed, 428 when it had no
    supported Identity, else 403, 436, 437 or 438.
    """

    verstat: str
    sip_status: int
    reason: str
    detail: str
    attest: str | None = None
    origid: str | None = None
    orig: str | None = None
    dest: tuple[str, ...] = ()
    iat: int | None = None
    x5u: str | None = None
    identity: str | None = None

    @property
    def passed(self) -> bool:
        return self.verstat == TN_VALIDATION_PASSED

    @property
    def reason_header(self) -> str:
        """A ``Reason`` header value in the RFC 9410 form, empty when the call passed."""
        return self.reason_header_for("STIR")

    def reason_header_for(self, protocol: str) -> str:
        """RFC 9410 §5 ``STIR;cause=...;text="..."``, or the older ``SIP`` protocol form."""
        if self.passed:
            return ""
        return f'{protocol};cause={self.sip_status};text="{self.reason}"'


class Verifier:
    """Verifies the Identity headers of a request; build once, call per request."""

    def __init__(
        self,
        *,
        certificates: CertificateSource,
        max_age: int = 60,
        require_date: bool = True,
        country_code: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_age <= 0:
            raise ValueError("max_age must be positive")
        self._certificates = certificates
        self.max_age = max_age
        self.require_date = require_date
        self.country_code = country_code
        self._clock = clock
        # Most requests in a second carry the same few Date strings.
        self._date_cache: dict[str, int | None] = {}

    def verify(
        self,
        identities: Sequence[str],
        *,
        date: str | None,
        orig: str | None,
        dest: Sequence[str] | None,
    ) -> Verdict:
        """Verify a request; ``orig``/``dest`` None skips that comparison (CLI use)."""
        values = split_identity_values(identities)[:MAX_IDENTITIES]
        now = int(self._clock())
        first_failure: Verdict | None = None
        for value in values:
            try:
                passport = self._verify_one(value, date=date, orig=orig, dest=dest, now=now)
            except UnsupportedPassportType:
                continue
            except VerificationError as error:
                if first_failure is None:
                    first_failure = _failed(error, value)
                continue
            except Exception as exc:  # noqa: BLE001 - a verdict is owed for any input
                if first_failure is None:
                    first_failure = _failed(InvalidIdentity(f"unverifiable: {exc!r}"), value)
                continue
            return Verdict(
                verstat=TN_VALIDATION_PASSED,
                sip_status=200,
                reason="OK",
                detail="verified",
                attest=passport.attest,
                origid=passport.origid,
                orig=passport.orig,
                dest=passport.dest,
                iat=passport.iat,
                x5u=passport.x5u,
                identity=value,
            )
        if first_failure is not None:
            return first_failure
        missing = MissingIdentity(
            "no Identity header" if not values else "no Identity with a supported ppt"
        )
        return Verdict(
            verstat=NO_TN_VALIDATION,
            sip_status=missing.sip_status,
            reason=missing.reason,
            detail=missing.detail,
        )

    def _verify_one(
        self,
        value: str,
        *,
        date: str | None,
        orig: str | None,
        dest: Sequence[str] | None,
        now: int,
    ) -> Passport:
        header = parse_identity(value)
        if not header.supported:
            raise UnsupportedPassportType(f"ppt {header.ppt!r} is not supported")
        passport = decode_passport(header.token)
        if passport.x5u != header.info:
            raise BadIdentityInfo("x5u in the PASSporT differs from the Identity info URI")

        if abs(now - passport.iat) > self.max_age:
            raise StaleDate(f"iat is {now - passport.iat} s from now (window {self.max_age} s)")
        self._check_date(date, now)

        if orig is not None and canonical_or_raw(passport.orig, self.country_code) != orig:
            raise InvalidIdentity("orig in the PASSporT does not match the calling number")
        if dest is not None:
            claimed = {canonical_or_raw(tn, self.country_code) for tn in passport.dest}
            if not any(tn in claimed for tn in dest):
                raise InvalidIdentity("dest in the PASSporT does not match the called number")

        credential = self._certificates.certificate_for(passport.x5u, now=now)
        if not credential.not_before <= passport.iat <= credential.not_after:
            raise StaleDate("iat is outside the certificate's validity (RFC 8224 §6.2)")
        verify_es256(credential.public_key, passport)
        return passport

    def _check_date(self, date: str | None, now: int) -> None:
        if date is None or not date.strip():
            if self.require_date:
                raise StaleDate("the request has no Date header (RFC 8224 §6.1)")
            return
        if date in self._date_cache:
            seconds = self._date_cache[date]
        else:
            seconds = parse_sip_date(date) if len(date) < 64 else None
            if len(self._date_cache) > 64:
                self._date_cache.clear()
            self._date_cache[date] = seconds
        if seconds is None:
            raise StaleDate("the Date header is not an RFC 3261 date")
        if abs(now - seconds) > self.max_age:
            raise StaleDate(f"Date is {now - seconds} s from now (window {self.max_age} s)")



def _failed(error: VerificationError, value: str) -> Verdict:
    return Verdict(
        verstat=TN_VALIDATION_FAILED,
        sip_status=error.sip_status,
        reason=error.reason,
        detail=error.detail,
        identity=value[:MAX_IDENTITY_LENGTH],
    )
