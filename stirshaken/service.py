"""The proxy's STIR/SHAKEN decisions, without Kamailio.

The KEMI script (``kemi/kamailio_stirshaken.py``) reads a message through
``KSR``, asks a :class:`Service` what to do, and applies the answer.  This
module holds everything between: building the signer, verifier and caches
from the settings, verifying an incoming INVITE, obtaining an Identity for a
call, and the per-attempt policy.

Rules:

1. **Objects are built once per process and keyed by the settings they were
   built from.**  A live ``cfg.set_now_*`` change gives a new key and so a
   new object on the next message; an unchanged setting costs one tuple
   compare, and nothing at all while the same settings view is in use (the
   KEMI script keeps one for a second).  A build that fails (missing key file, unreadable trust
   directory) is logged once and retried after ``RETRY_BROKEN`` seconds, not
   per call.
2. **No exception leaves** :meth:`Service.verify` or :meth:`Service.obtain`:
   a verification that cannot run is a "No-TN-Validation" verdict; an
   Identity that cannot be obtained is ``None`` (the policy table then skips
   a ``required`` entry).  Every such failure is logged with the Call-ID.
3. **"Obtain" is one method with a provider switch** (``local`` signs here,
   ``disabled`` never does); a further provider (the SIP-302 Authentication
   Service) is one more branch returning an :class:`Obtained` or ``None``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .attestation import AttestationPolicy
from .identity_cache import CachedIdentity, IdentityCache, RespClient
from .settings import Settings
from .tn import tn_from_uri as _tn_from_uri

log = logging.getLogger("stirshaken.service")

RETRY_BROKEN = 10.0

# Callers and callees repeat: remember the canonical number of recent URIs.
tn_from_uri = functools.lru_cache(maxsize=4096)(_tn_from_uri)
NO_TN_VALIDATION = "No-TN-Validation"


@dataclass(frozen=True, slots=True)
class Obtained:
    """An Identity for this call and the Date header that goes with it."""

    identity: str
    date: str
    source: str  # "signed" or "cache"


@dataclass(frozen=True, slots=True)
class InternalFailure:
    """Stands in for a Verdict when verification could not run at all."""

    detail: str
    verstat: str = NO_TN_VALIDATION
    sip_status: int = 500
    reason: str = "Verification Unavailable"
    reason_header: str = ""
    passed: bool = False
    identity: str | None = None


class _Slot:
    """One lazily built object, rebuilt when its key changes, failures remembered."""

    __slots__ = ("key", "value", "failed_at", "view")

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.value: Any = None
        self.failed_at = 0.0
        self.view: Settings | None = None  # the settings view the value was last checked against

    def known(self, s: Settings) -> Any:
        """The value when it was built or checked with this very settings view, else None."""
        return self.value if s is self.view else None

    def get(self, key: tuple[Any, ...], build: Callable[[], Any], what: str, s: Settings | None = None) -> Any:
        self.view = s
        if key == self.key and (self.value is not None or time.monotonic() - self.failed_at < RETRY_BROKEN):
            return self.value
        self.key = key
        try:
            self.value = build()
        except Exception as exc:  # noqa: BLE001 - logged, and retried later
            self.value = None
            self.failed_at = time.monotonic()
            log.error("cannot set up %s: %s", what, exc)
        return self.value


class Service:
    """Per-process STIR/SHAKEN state; see the module docstring."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._signer = _Slot()
        self._attestation = _Slot()
        self._verifier = _Slot()
        self._redis = _Slot()
        self._identity_cache = _Slot()
        self._as_server = _Slot()

    # -- building blocks ---------------------------------------------------
    def resp_client(self, s: Settings) -> RespClient | None:
        known = self._redis.known(s)
        if known is not None:
            return known  # type: ignore[no-any-return]
        url, timeout = s.str("redis_url"), s.int("redis_timeout_ms")
        if not url:
            return None
        client: RespClient | None = self._redis.get(
            (url, timeout), lambda: RespClient(url, timeout=max(timeout, 1) / 1000), "Redis client", s
        )
        return client

    def identity_cache(self, s: Settings) -> IdentityCache:
        known = self._identity_cache.known(s)
        if known is not None:
            return known  # type: ignore[no-any-return]
        client = self.resp_client(s)
        prefix, freshness = s.str("identity_cache_prefix"), s.int("freshness")
        flush_ms = s.int("identity_cache_flush_ms")
        cache: IdentityCache = self._identity_cache.get(
            (id(client), prefix, freshness, flush_ms),
            lambda: IdentityCache(
                client, prefix=prefix, freshness=freshness, flush_interval=flush_ms / 1000, clock=self.clock
            ),
            "identity cache",
            s,
        )
        return cache

    def signer(self, s: Settings) -> Any:
        known = self._signer.known(s)
        if known is not None:
            return known
        key_path, cert_path, x5u = s.path("as_key_path"), s.path("as_cert_path"), s.str("as_x5u")

        def build() -> Any:
            from .signer import Signer

            return Signer.from_files(key_path=key_path, x5u=x5u, cert_path=cert_path or None, clock=self.clock)

        return self._signer.get((key_path, cert_path, x5u), build, f"signer (key {key_path})", s)

    def attestation(self, s: Settings) -> AttestationPolicy | None:
        known = self._attestation.known(s)
        if known is not None:
            return known  # type: ignore[no-any-return]
        sources, other = s.str("as_trusted_sources"), s.str("as_other_attest")
        policy: AttestationPolicy | None = self._attestation.get(
            (sources, other), lambda: AttestationPolicy.from_config(sources, other), "attestation policy", s
        )
        return policy

    def verifier(self, s: Settings) -> Any:
        known = self._verifier.known(s)
        if known is not None:
            return known
        key = (
            s.path("vs_trust_dir"),
            s.str("vs_x5u_allow_hosts"),
            s.str("vs_x5u_ports"),
            s.path("vs_tls_ca_file"),
            s.int("vs_fetch_timeout_ms"),
            s.int("vs_negative_ttl"),
            s.str("vs_cert_cache_prefix"),
            s.str("redis_url"),
            s.int("redis_timeout_ms"),
            s.int("freshness"),
            s.str("country_code"),
        )

        def build() -> Any:
            from .cache import CertificateCache, connect_redis
            from .certs import TrustStore
            from .fetcher import HttpsFetcher
            from .verifier import Verifier

            trust_dir, allow, ports, ca_file, fetch_ms, negative_ttl, prefix, url, redis_ms, freshness, cc = key
            fetcher = HttpsFetcher(
                timeout=max(fetch_ms, 1) / 1000,
                allow_hosts=frozenset(h.strip() for h in allow.split(",") if h.strip()),
                tls_ca_file=ca_file or None,
                allowed_ports=frozenset(int(p) for p in ports.replace(" ", "").split(",") if p.isdigit()),
            )
            redis = connect_redis(url, timeout=max(redis_ms, 1) / 1000) if url else None
            certificates = CertificateCache(
                fetcher=fetcher,
                trust_store=TrustStore.from_directory(trust_dir),
                redis=redis,
                prefix=prefix,
                negative_ttl=negative_ttl,
                lock_timeout=max(fetch_ms, 1) / 1000 + 0.5,
                clock=self.clock,
                logger=logging.getLogger("stirshaken.cache"),
            )
            return Verifier(certificates=certificates, max_age=freshness, country_code=cc, clock=self.clock)

        return self._verifier.get(key, build, f"verifier (trust dir {key[0]})", s)

    def flush_if_due(self) -> None:
        """Send batched identity-cache writes that are due; call on every new INVITE. Never raises."""
        cache = self._identity_cache.value
        if cache is not None:
            try:
                cache.flush_if_due()
            except Exception:  # noqa: BLE001
                log.exception("identity cache flush failed")

    # -- verification --------------------------------------------------------
    def verify(
        self,
        s: Settings,
        *,
        call_id: str,
        identities: Sequence[str],
        date: str | None,
        orig_uri: str,
        dest_uri: str,
    ) -> Any:
        """A Verdict (or :class:`InternalFailure`); never raises."""
        try:
            verifier = self.verifier(s)
            if verifier is None:
                return InternalFailure("verifier not configured")
            cc = s.str("country_code")
            orig = tn_from_uri(orig_uri, cc) if orig_uri else None
            dest = tn_from_uri(dest_uri, cc) if dest_uri else None
            return verifier.verify(
                identities,
                date=date or None,
                orig=orig or "",
                dest=[dest] if dest else [],
            )
        except Exception as exc:  # noqa: BLE001 - rule 2
            log.exception("verification failed internally (Call-ID %s)", call_id)
            return InternalFailure(f"internal error: {exc!r}")

    # -- obtaining an Identity -----------------------------------------------
    def obtain(
        self,
        s: Settings,
        *,
        call_id: str,
        source_ip: str,
        orig_uri: str,
        dest_uri: str,
    ) -> Obtained | None:
        """An Identity for this call, or None when the provider gives none; never raises."""
        try:
            provider = s.str("provider")
            if provider == "local":
                return self._obtain_local(s, call_id=call_id, source_ip=source_ip, orig_uri=orig_uri, dest_uri=dest_uri)
            return None  # "disabled"
        except Exception:  # noqa: BLE001 - rule 2
            log.exception("obtaining an Identity failed (Call-ID %s)", call_id)
            return None

    def _obtain_local(
        self, s: Settings, *, call_id: str, source_ip: str, orig_uri: str, dest_uri: str
    ) -> Obtained | None:
        cc = s.str("country_code")
        orig = tn_from_uri(orig_uri, cc) if orig_uri else None
        dest = tn_from_uri(dest_uri, cc) if dest_uri else None
        if not orig or not dest:
            log.info("not signing (Call-ID %s): calling or called party is not a telephone number", call_id)
            return None
        policy = self.attestation(s)
        if policy is None:
            return None
        attest = policy.attest(source_ip, orig)
        if attest is None:
            log.info("not signing (Call-ID %s): source %s is not trusted", call_id, source_ip)
            return None
        cache = self.identity_cache(s)
        lookup = s.int("identity_cache_lookup")
        if lookup:
            cache.lookup_start(call_id)  # answered while we sign
        try:
            signer = self.signer(s)
            signed = signer.sign(orig=orig, dest=[dest], attest=attest) if signer is not None else None
        finally:
            hit = cache.lookup_finish(orig=orig, dest=(dest,)) if lookup else None
        if hit is not None:
            return Obtained(hit.identity, hit.date, "cache")
        if signed is None:
            return None
        cache.put(
            call_id,
            CachedIdentity(
                identity=signed.identity, date=signed.date, iat=signed.iat, orig=orig, dest=(dest,), attest=attest
            ),
        )
        return Obtained(signed.identity, signed.date, "signed")

    # -- the external 302 services (provider as302, vs_provider vs302) ---------
    def parties(self, s: Settings, *, orig_uri: str, dest_uri: str) -> tuple[str | None, str | None]:
        """The canonical calling and called numbers of a call (None when not numbers)."""
        cc = s.str("country_code")
        return (tn_from_uri(orig_uri, cc) if orig_uri else None, tn_from_uri(dest_uri, cc) if dest_uri else None)

    def cached_identity(self, s: Settings, *, call_id: str, orig: str, dest: str) -> Obtained | None:
        """The Identity another attempt or node already got for this call; never raises."""
        if not s.int("identity_cache_lookup"):
            return None
        try:
            hit = self.identity_cache(s).get(call_id, orig=orig, dest=(dest,))
        except Exception:  # noqa: BLE001 - rule 2: a cache that fails is a miss
            log.exception("identity cache lookup failed (Call-ID %s)", call_id)
            return None
        return None if hit is None else Obtained(hit.identity, hit.date, "cache")

    def remember_identity(
        self, s: Settings, *, call_id: str, identity: str, date: str, iat: int, orig: str, dest: str, attest: str
    ) -> None:
        """Cache an Identity obtained from an Authentication Service like a signed one; never raises."""
        try:
            self.identity_cache(s).put(
                call_id,
                CachedIdentity(identity=identity, date=date, iat=iat, orig=orig, dest=(dest,), attest=attest),
            )
        except Exception:  # noqa: BLE001 - rule 2
            log.exception("identity cache write failed (Call-ID %s)", call_id)

    def as_server(self, s: Settings) -> Any:
        """This service as a 302 STI-AS (None when the signer or settings are unusable)."""
        signer, policy = self.signer(s), self.attestation(s)
        if signer is None or policy is None:
            return None
        allowed, x_headers, cc = s.str("as_server_allowed"), s.int("as_server_x_headers"), s.str("country_code")

        def build() -> Any:
            from .as302 import AsServer

            return AsServer(
                signer=signer, attest_for=policy.attest, allowed_sources=allowed, x_headers=bool(x_headers), country_code=cc
            )

        return self._as_server.get((id(signer), id(policy), allowed, x_headers, cc), build, "302 STI-AS")
