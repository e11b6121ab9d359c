"""SIP-redirect (302) Authentication and Verification Services, sans-IO.

Many operators have no STI certificate of their own: a partner's
Authentication Service (AS) signs for them. It is reached with a SIP INVITE
and answers ``302 Moved Temporarily`` carrying the signature (the
TransNexus, Sansay, 46 Labs and 1CallConnect/Sippy pattern). The same shape
serves external Verification Services (VS), whose 302 carries the verdict
as ``verstat`` on P-Asserted-Identity (ClearIP style). This module holds
every decision of that exchange; sending the INVITE and waiting for the
answer is the caller's job (the KEMI script relays it through Kamailio's
transaction layer).

Client rules:

1. Hosts are tried in order within one total budget, each with its own
   timeout; a host that keeps failing is skipped for a while
   (``CircuitBreaker``) and tried again afterwards.
2. The answer (``interpret_as_reply``): 302 with ``Identity`` (or
   ``X-Identity``) and ``Date`` (or ``X-Date``) is a signature, used
   unchanged, but only after it is checked: it decodes as a SHAKEN
   PASSporT, its orig/dest are the call's, its ``iat`` is fresh. A bad
   one counts as no signature. 404 is "no signature for this call", 603
   is a refusal, 408, 5xx, other 6xx, other 4xx and timeouts mean "try
   the next host".
3. An external VS's 302 (``interpret_vs_reply``) carries ``verstat`` on
   P-Asserted-Identity (or From); its Reason header, when present, gives
   the failure's cause.

Server rules (``AsServer``, this service acting as a 302 STI-AS):

4. Only allowed sources are served (403 otherwise). The calling number is
   P-Asserted-Identity's, else From's; the called number is To's, else the
   Request-URI's. The attestation comes from our own rules; a client's hint
   may lower it, never raise it.
5. The answer is 302 with Contact = the requested destination, ``Identity``
   and ``Date`` (and ``X-Identity``/``X-Date`` for Sippy-style clients when
   configured); 404 when we will not sign; 503 when signing failed here, so
   that a client moves on to its next AS.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import ConfigurationError, SigningError, VerificationError
from .identity import parse_identity
from .passport import decode_passport
from .signer import Signer
from .sipdate import format_sip_date, parse_sip_date
from .tn import canonical_or_raw, tn_from_uri
from .verifier import NO_TN_VALIDATION, TN_VALIDATION_FAILED, TN_VALIDATION_PASSED, Verdict

DEFAULT_SIP_PORT = 5060
_HOST_PORT = re.compile(r"\s*(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?\s*")
_VERSTAT = re.compile(r"verstat=([A-Za-z-]+)", re.IGNORECASE)
_REASON_CAUSE = re.compile(r"cause\s*=\s*(\d{3})", re.IGNORECASE)
_REASON_TEXT = re.compile(r'text\s*=\s*"([^"]*)"', re.IGNORECASE)
_VERSTATS = {v.lower(): v for v in (TN_VALIDATION_PASSED, TN_VALIDATION_FAILED, NO_TN_VALIDATION)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceHost:
    """One AS or VS host; ``uri`` is what the request is relayed to."""

    host: str
    port: int = DEFAULT_SIP_PORT

    @property
    def key(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"


def parse_hosts(text: str) -> tuple[ServiceHost, ...]:
    """``"10.0.0.5, as2.example.net:5070, [2001:db8::1]:5060"``; raises ConfigurationError."""
    hosts = []
    for item in re.split(r"[,;\s]+", text.strip()):
        if not item:
            continue
        match = _HOST_PORT.fullmatch(item)
        port = int(match.group(2)) if match and match.group(2) else DEFAULT_SIP_PORT
        if match is None or not 0 < port < 65536:
            raise ConfigurationError(f"not a host[:port]: {item!r}")
        hosts.append(ServiceHost(host=match.group(1), port=port))
    return tuple(hosts)


# -- circuit breaker ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BreakerState:
    """Consecutive failures of one host, and until when it is skipped."""

    failures: int = 0
    open_until: float = 0.0

    def encode(self) -> str:
        return f"{self.failures}:{self.open_until:.3f}"

    @classmethod
    def decode(cls, text: str | None) -> BreakerState:
        """Stored form back to a state; anything unreadable is a closed breaker."""
        if not text:
            return cls()
        failures, _, until = text.partition(":")
        try:
            return cls(int(failures), float(until))
        except ValueError:
            return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreaker:
    """After ``threshold`` consecutive failures a host is skipped for ``open_seconds``.

    When that time is over the host gets one more try (half-open): a
    success closes the breaker, a failure opens it again at once.
    """

    threshold: int = 3
    open_seconds: float = 30.0

    def allows(self, state: BreakerState, now: float) -> bool:
        return state.open_until <= now

    def after_failure(self, state: BreakerState, now: float) -> BreakerState:
        half_open = state.open_until and state.open_until <= now
        failures = state.failures + 1
        if half_open or failures >= self.threshold:
            return BreakerState(0, now + self.open_seconds)
        return BreakerState(failures, state.open_until)

    def after_success(self) -> BreakerState:
        return BreakerState()


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """The next host to ask, and how long to wait for it (milliseconds)."""

    index: int
    host: ServiceHost
    timeout_ms: int


def next_attempt(
    hosts: Sequence[ServiceHost],
    *,
    after: int,
    states: Callable[[ServiceHost], BreakerState],
    breaker: CircuitBreaker,
    now: float,
    deadline: float,
    per_host_timeout_ms: int,
    min_timeout_ms: int = 100,
) -> Attempt | None:
    """The first host after index ``after`` whose breaker allows it, within the budget.

    None when the budget is spent (less than ``min_timeout_ms`` left) or
    every remaining host is being skipped.
    """
    remaining_ms = int((deadline - now) * 1000)
    if remaining_ms < min_timeout_ms:
        return None
    for index in range(after + 1, len(hosts)):
        host = hosts[index]
        if breaker.allows(states(host), now):
            return Attempt(index=index, host=host, timeout_ms=min(per_host_timeout_ms, remaining_ms))
    return None


# -- the client's view of an AS answer ----------------------------------------


class Outcome(enum.Enum):
    SIGNED = "signed"
    NO_SIGNATURE = "no-signature"
    TRY_NEXT = "try-next"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True, kw_only=True)
class AsResult:
    outcome: Outcome
    detail: str
    identity: str | None = None
    date: str | None = None
    iat: int | None = None
    attest: str | None = None

    @property
    def host_failed(self) -> bool:
        """Whether this answer counts against the host's circuit breaker."""
        return self.outcome is Outcome.TRY_NEXT


def classify_status(status: int) -> Outcome:
    """Rule 2 by status alone (a timeout is reported by tm as 408)."""
    if 300 <= status < 400:
        return Outcome.SIGNED
    if status == 404:
        return Outcome.NO_SIGNATURE
    if status == 603:
        return Outcome.REFUSED
    return Outcome.TRY_NEXT


def interpret_as_reply(
    status: int,
    *,
    identity: str | None,
    x_identity: str | None = None,
    date: str | None = None,
    x_date: str | None = None,
    orig: str,
    dest: Sequence[str],
    now: int,
    max_age: int = 60,
    country_code: str = "",
) -> AsResult:
    """What an AS answer means for this call (rule 2), never raising."""
    outcome = classify_status(status)
    if outcome is not Outcome.SIGNED:
        return AsResult(outcome=outcome, detail=f"AS answered {status}")
    value = (identity or "").strip() or (x_identity or "").strip()
    if not value:
        return AsResult(outcome=Outcome.NO_SIGNATURE, detail=f"AS answered {status} without Identity")
    try:
        header = parse_identity(value)
        passport = decode_passport(header.token)
    except VerificationError as exc:
        return AsResult(outcome=Outcome.NO_SIGNATURE, detail=f"AS Identity unusable: {exc.detail}")
    if passport.x5u != header.info:
        return AsResult(outcome=Outcome.NO_SIGNATURE, detail="AS Identity: x5u differs from info")
    if canonical_or_raw(passport.orig, country_code) != orig:
        return AsResult(outcome=Outcome.NO_SIGNATURE, detail="AS Identity signs another calling number")
    claimed = {canonical_or_raw(tn, country_code) for tn in passport.dest}
    if not any(tn in claimed for tn in dest):
        return AsResult(outcome=Outcome.NO_SIGNATURE, detail="AS Identity signs another called number")
    if abs(now - passport.iat) > max_age:
        return AsResult(outcome=Outcome.NO_SIGNATURE, detail="AS Identity is stale")
    date_value = (date or "").strip() or (x_date or "").strip()
    if date_value:
        signed_at = parse_sip_date(date_value)
        if signed_at is None or abs(signed_at - passport.iat) > max_age:
            return AsResult(outcome=Outcome.NO_SIGNATURE, detail="AS Date does not match the PASSporT iat")
    else:
        # RFC 8225 §5.1.1: iat is the Date; a verifier downstream needs one.
        date_value = format_sip_date(passport.iat)
    return AsResult(
        outcome=Outcome.SIGNED,
        detail="signed",
        identity=value,
        date=date_value,
        iat=passport.iat,
        attest=passport.attest,
    )


# -- the client's view of a VS answer -----------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class VsResult:
    outcome: Outcome
    verdict: Verdict | None
    detail: str

    @property
    def host_failed(self) -> bool:
        return self.outcome is Outcome.TRY_NEXT


def interpret_vs_reply(
    status: int,
    *,
    p_asserted_identity: str | None,
    from_: str | None,
    reason: str | None = None,
) -> VsResult:
    """An external VS's answer as a verdict (rule 3), never raising.

    302 with ``verstat`` gives that verdict; 404 gives No-TN-Validation;
    603 is a refusal (the VS blocks the call); anything else means "try
    the next VS", and when none is left the call has No-TN-Validation.
    """
    outcome = classify_status(status)
    if outcome is Outcome.TRY_NEXT:
        return VsResult(outcome=outcome, verdict=None, detail=f"VS answered {status}")
    cause, text = _reason(reason)
    if outcome is Outcome.REFUSED:
        verdict = _vs_verdict(TN_VALIDATION_FAILED, cause or 603, text or "Decline")
        return VsResult(outcome=outcome, verdict=verdict, detail="VS refused the call")
    if outcome is Outcome.NO_SIGNATURE:
        verdict = _vs_verdict(NO_TN_VALIDATION, 428, "Use Identity Header")
        return VsResult(outcome=outcome, verdict=verdict, detail="VS did not verify")
    verstat = None
    for value in (p_asserted_identity, from_):
        match = _VERSTAT.search(value or "")
        if match:
            verstat = _VERSTATS.get(match.group(1).lower())
            break
    if verstat is None:
        verdict = _vs_verdict(NO_TN_VALIDATION, 428, "Use Identity Header")
        return VsResult(outcome=Outcome.NO_SIGNATURE, verdict=verdict, detail="VS 302 without verstat")
    if verstat == TN_VALIDATION_PASSED:
        verdict = _vs_verdict(verstat, 200, "OK")
    elif verstat == TN_VALIDATION_FAILED:
        verdict = _vs_verdict(verstat, cause or 438, text or "Invalid Identity Header")
    else:
        verdict = _vs_verdict(verstat, 428, "Use Identity Header")
    return VsResult(outcome=Outcome.SIGNED, verdict=verdict, detail=f"VS verstat {verstat}")


def _reason(reason: str | None) -> tuple[int | None, str | None]:
    if not reason:
        return None, None
    cause = _REASON_CAUSE.search(reason)
    text = _REASON_TEXT.search(reason)
    return (int(cause.group(1)) if cause else None), (text.group(1)[:100] if text else None)


def _vs_verdict(verstat: str, status: int, reason: str) -> Verdict:
    return Verdict(verstat=verstat, sip_status=status, reason=reason, detail="external verification service")


# -- this service as a 302 STI-AS ---------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AsAnswer:
    """The reply to send: status, reason phrase and the headers to add to it."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


AttestFor = Callable[[str, str], "str | None"]


class AsServer:
    """Answers signing requests from other switches (rules 4 and 5)."""

    def __init__(
        self,
        *,
        signer: Signer,
        attest_for: AttestFor,
        allowed_sources: str,
        x_headers: bool = False,
        country_code: str = "",
    ) -> None:
        self._signer = signer
        self._attest_for = attest_for
        self._allowed = _parse_networks(allowed_sources)
        self._x_headers = x_headers
        self._country_code = country_code

    def allows(self, source_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(source_ip.strip("[]"))
        except ValueError:
            return False
        return any(address.version == net.version and address in net for net in self._allowed)

    def answer(
        self,
        *,
        source_ip: str,
        request_uri: str,
        from_uri: str,
        to_uri: str,
        p_asserted_identity: str | None = None,
        attest_hint: str | None = None,
    ) -> AsAnswer:
        if not self.allows(source_ip):
            return AsAnswer(status=403, reason="Forbidden")
        orig = tn_from_uri(p_asserted_identity or "", self._country_code) or tn_from_uri(
            from_uri, self._country_code
        )
        dest = tn_from_uri(to_uri, self._country_code) or tn_from_uri(request_uri, self._country_code)
        if orig is None or dest is None:
            return AsAnswer(status=404, reason="Not Found", headers=(("Reason", 'SIP;cause=404;text="no telephone number to sign"'),))
        attest = self._attest_for(source_ip, orig)
        hint = (attest_hint or "").strip().upper()
        if attest is not None and hint in ("A", "B", "C") and hint > attest:
            attest = hint  # a hint may lower the attestation (C > B > A), never raise it
        if attest is None:
            return AsAnswer(status=404, reason="Not Found", headers=(("Reason", 'SIP;cause=404;text="not signed by policy"'),))
        try:
            signed = self._signer.sign(orig=orig, dest=[dest], attest=attest)
        except SigningError as exc:
            return AsAnswer(status=503, reason="Service Unavailable", headers=(("Reason", f'SIP;cause=503;text="{_quoted(str(exc))}"'),))
        headers: list[tuple[str, str]] = [
            ("Contact", f"<{request_uri.strip().strip('<>')}>"),
            ("Identity", signed.identity),
            ("Date", signed.date),
        ]
        if self._x_headers:
            headers += [("X-Identity", signed.identity), ("X-Date", signed.date)]
        return AsAnswer(status=302, reason="Moved Temporarily", headers=tuple(headers))


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")[:120]


def _parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in re.split(r"[,;\s]+", text.strip()):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigurationError(f"allowed AS client {item!r}: {exc}") from None
    return tuple(networks)
