"""The verifier's certificate source: an in-process LRU in front of Redis in front of x5u fetches.

Theory of operation. :meth:`CertificateCache.certificate_for` answers an x5u
URL with a validated :class:`~stirshaken.certs.StiCertificate`, or raises the
436/437 error the URL deserves. It looks in three places, cheapest first:

1. **In-process LRU** (per Kamailio worker). A hit is a dict lookup and one
   float compare: no re-validation, no parsing, no time formatting. Entries
   expire with their TTL, and never outlive the earliest notAfter on the
   certificate path.
2. **Redis** (shared by all workers and hosts). It holds the fetched PEM
   body, never a pickle, in a hash ``{body, expires}``; a worker that loads it
   validates the chain again against its own trust store before using it.
   Negative outcomes are stored as ``{error, status, detail, expires}``.
3. **The x5u fetch**, single-flighted across workers with a Redis lock
   (``SET key token NX PX``): one worker fetches, the others poll Redis for
   its result for up to ``lock_timeout`` seconds and then fetch themselves.

Caching rules:

- ATIS-1000074: "if the response has no recognized cache directive, or asks
  for caching shorter than [the floor], cache for [the floor]". The floor is
  ``min_ttl``; the result is clamped to ``[min_ttl, max_ttl]``.
- A fetch failure (436) or an invalid chain (437) is remembered for
  ``negative_ttl`` seconds, in the LRU and in Redis, so a dead or bad
  repository costs one fetch per ``negative_ttl``, not one per call.

Redis is optional. When it is ``None`` or unreachable the cache keeps working
with the LRU alone; :class:`RedisGuard` logs one warning per outage and one
line when Redis is back, and never lets a Redis exception escape.

Redis clients must be created with small socket timeouts and no retry loop,
or an outage stalls every cache miss for seconds (redis-py defaults to 5 s
timeouts and 10 retries). :func:`connect_redis` makes such a client; create
it per process (after Kamailio forks), not in ``mod_init``.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, TypeVar

import redis as redis_module
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from stirshaken.certs import StiCertificate, TrustStore, load_pem_chain
from stirshaken.errors import (
    BadIdentityInfo,
    CertificateFetchError,
    UnsupportedCredential,
    VerificationError,
)
from stirshaken.fetcher import ChainFetcher

T = TypeVar("T")
D = TypeVar("D")

#: The exceptions a Redis call may raise that mean "Redis is not usable now".
REDIS_ERRORS: Final = (RedisError, OSError)

#: Negative outcomes that may be cached, by the class name stored in Redis.
_NEGATIVE_KINDS: Final[dict[str, type[VerificationError]]] = {
    cls.__name__: cls for cls in (BadIdentityInfo, CertificateFetchError, UnsupportedCredential)
}

#: Seconds between polls while another worker holds the fetch lock.
_POLL_INTERVAL: Final = 0.02

_RELEASE_LOCK: Final = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


def connect_redis(url: str, *, timeout: float = 0.25) -> redis_module.Redis:
    """A Redis client suited to the call path: ``timeout`` seconds per socket operation, no retries.

    Create it lazily per process (each Kamailio worker), never before the fork.
    """
    return redis_module.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


class RedisGuard:
    """Run Redis calls so that an outage degrades service instead of failing it.

    ``guard.call(fn, *args, default=None)`` returns ``fn(*args)``, or
    ``default`` when the call raises a Redis or socket error. The first failure
    of an outage logs one warning; the first success after it logs "Redis
    back". For ``retry_interval`` seconds after a failure calls return
    ``default`` at once, so an unreachable server does not cost a connect
    timeout on every call. With ``redis=None`` every call returns ``default``
    and ``fn`` is never run.
    """

    __slots__ = ("_clock", "_down", "_failed_at", "_logger", "_redis", "_retry_interval", "_what")

    def __init__(
        self,
        redis: object | None,
        *,
        logger: logging.Logger | None = None,
        what: str = "Redis",
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._logger = logger if logger is not None else logging.getLogger("stirshaken.redis")
        self._what = what
        self._retry_interval = retry_interval
        self._clock = clock
        self._down = False
        self._failed_at = 0.0

    @property
    def redis(self) -> object | None:
        """The guarded client (None when Redis is not configured); any client type works."""
        return self._redis

    @property
    def available(self) -> bool:
        """False when Redis is not configured or the last call failed recently."""
        return self._redis is not None and not (
            self._down and self._clock() - self._failed_at < self._retry_interval
        )

    def call(self, fn: Callable[..., T], *args: Any, default: D = None, **kwargs: Any) -> T | D:  # type: ignore[assignment]
        """``fn(*args, **kwargs)``, or ``default`` when Redis is absent or failing."""
        if not self.available:
            return default
        try:
            result = fn(*args, **kwargs)
        except REDIS_ERRORS as exc:
            self._failed_at = self._clock()
            if not self._down:
                self._down = True
                self._logger.warning(
                    "%s unavailable (%s: %s); continuing without it", self._what,
                    type(exc).__name__, exc,
                )
            return default
        if self._down:
            self._down = False
            self._logger.warning("%s back; using it again", self._what)
        return result


class _Entry:
    """One LRU slot: a certificate or a remembered failure, until ``expires_at``."""

    __slots__ = ("certificate", "detail", "error", "expires_at")

    def __init__(
        self,
        *,
        expires_at: float,
        certificate: StiCertificate | None = None,
        error: type[VerificationError] | None = None,
        detail: str = "",
    ) -> None:
        self.expires_at = expires_at
        self.certificate = certificate
        self.error = error
        self.detail = detail

    def result(self) -> StiCertificate:
        if self.certificate is not None:
            return self.certificate
        assert self.error is not None
        raise self.error(self.detail)


_UNAVAILABLE: Final = object()


class CertificateCache:
    """x5u URL → validated STI certificate, cached in-process and in Redis (see module docstring).

    ``redis`` should come from :func:`connect_redis` (small timeouts, no
    retries). ``clock`` gives epoch seconds for TTLs and expiry; tests inject
    it. ``lock_timeout`` should exceed the fetcher's total timeout, so that a
    waiting worker sees the fetching worker's result.
    """

    def __init__(
        self,
        *,
        fetcher: ChainFetcher,
        trust_store: TrustStore,
        redis: redis_module.Redis | None = None,
        prefix: str = "stirshaken:cert:",
        min_ttl: int = 3600,
        max_ttl: int = 86400,
        negative_ttl: int = 30,
        lru_size: int = 1024,
        lock_timeout: float = 3.0,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        if not 0 < min_ttl <= max_ttl:
            raise ValueError("need 0 < min_ttl <= max_ttl")
        if negative_ttl < 0 or lru_size < 1 or lock_timeout < 0:
            raise ValueError("negative_ttl, lru_size and lock_timeout must be positive")
        self._fetcher = fetcher
        self._trust_store = trust_store
        self._redis = redis
        self._prefix = prefix
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._lru_size = lru_size
        self._lock_timeout = lock_timeout
        self._clock = clock
        self._logger = logger if logger is not None else logging.getLogger("stirshaken.cache")
        self._guard = RedisGuard(redis, logger=self._logger, clock=clock)
        self._lru: OrderedDict[str, _Entry] = OrderedDict()
        self._lru_lock = threading.Lock()

    @property
    def guard(self) -> RedisGuard:
        """The Redis guard (shared by callers that want the same outage logging)."""
        return self._guard

    def certificate_for(self, x5u: str, *, now: int) -> StiCertificate:
        """The validated certificate behind ``x5u``, with the chain checked at ``now``.

        Raises :class:`BadIdentityInfo` / :class:`CertificateFetchError` (436)
        when the URL is refused or cannot be fetched, and
        :class:`UnsupportedCredential` (437) when the chain is not acceptable;
        both also when remembered from an earlier attempt.
        """
        # Warm path: keep it to a lookup and two compares (see module docstring).
        entry = self._lru.get(x5u)
        if entry is not None and self._clock() < entry.expires_at:
            certificate = entry.certificate
            if certificate is None or certificate.not_before <= now <= certificate.not_after:
                try:
                    self._lru.move_to_end(x5u)
                except KeyError:  # evicted by another thread meanwhile
                    pass
                return entry.result()
        entry = self._lookup_redis(x5u, now)
        if entry is None:
            entry = self._fetch_single_flight(x5u, now)
        self._remember(x5u, entry)
        return entry.result()

    def forget(self, x5u: str) -> None:
        """Drop ``x5u`` from the LRU and from Redis (e.g. after a certificate rotation)."""
        with self._lru_lock:
            self._lru.pop(x5u, None)
        client = self._redis
        if client is not None:
            self._guard.call(lambda: client.delete(self._key(x5u)))

    # -- internals -------------------------------------------------------------

    def _key(self, x5u: str) -> str:
        return self._prefix + x5u

    def _lock_key(self, x5u: str) -> str:
        return f"{self._prefix}lock:{x5u}"

    def _remember(self, x5u: str, entry: _Entry) -> None:
        with self._lru_lock:
            self._lru[x5u] = entry
            self._lru.move_to_end(x5u)
            while len(self._lru) > self._lru_size:
                self._lru.popitem(last=False)

    def _ttl(self, max_age: int | None) -> int:
        # ATIS-1000074: no directive, or one shorter than the floor, caches for the floor.
        ttl = self._min_ttl if max_age is None else max(max_age, self._min_ttl)
        return min(ttl, self._max_ttl)

    def _validated(self, body: bytes, now: int, expires_at: float) -> _Entry:
        try:
            certificate = self._trust_store.validate(load_pem_chain(body), now=now)
        except UnsupportedCredential as exc:
            return _Entry(
                expires_at=self._clock() + self._negative_ttl,
                error=type(exc),
                detail=exc.detail,
            )
        return _Entry(
            expires_at=min(expires_at, certificate.chain_not_after), certificate=certificate
        )

    def _lookup_redis(self, x5u: str, now: int) -> _Entry | None:
        client = self._redis
        if client is None:
            return None
        stored: dict[Any, Any] | None = self._guard.call(
            lambda: client.hgetall(self._key(x5u)), default=None
        )
        if not stored:
            return None
        fields = {
            (k.decode() if isinstance(k, bytes) else k): v for k, v in stored.items()
        }
        try:
            expires_at = float(fields["expires"])
        except (KeyError, TypeError, ValueError):
            return None
        if expires_at <= self._clock():
            return None
        error_name = fields.get("error")
        if error_name is not None:
            if isinstance(error_name, bytes):
                error_name = error_name.decode("ascii", "replace")
            detail = fields.get("detail", b"")
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            error = _NEGATIVE_KINDS.get(error_name)
            if error is None:
                return None
            return _Entry(expires_at=expires_at, error=error, detail=detail)
        body = fields.get("body")
        if body is None:
            return None
        if isinstance(body, str):
            body = body.encode("latin-1")
        # Validated again here: Redis is shared, our trust store is our own.
        return self._validated(body, now, expires_at)

    def _store(self, x5u: str, entry: _Entry, body: bytes | None) -> None:
        client = self._redis
        if client is None:
            return
        ttl = math.ceil(entry.expires_at - self._clock())
        if ttl <= 0:
            return
        if entry.certificate is not None:
            assert body is not None
            mapping: dict[FieldT, EncodableT] = {"body": body, "expires": repr(entry.expires_at)}
        else:
            assert entry.error is not None
            mapping = {
                "error": entry.error.__name__,
                "status": str(entry.error.sip_status),
                "detail": entry.detail,
                "expires": repr(entry.expires_at),
            }
        key = self._key(x5u)

        def write() -> None:
            pipe = client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, ttl)
            pipe.execute()

        self._guard.call(write)

    def _fetch(self, x5u: str, now: int) -> tuple[_Entry, bytes | None]:
        try:
            fetched = self._fetcher.fetch(x5u)
        except BadIdentityInfo as exc:
            kind = next(
                _NEGATIVE_KINDS[c.__name__] for c in type(exc).__mro__ if c.__name__ in _NEGATIVE_KINDS
            )
            self._logger.info("x5u %s: %s", x5u, exc.detail)
            return (
                _Entry(
                    expires_at=self._clock() + self._negative_ttl,
                    error=kind,
                    detail=exc.detail,
                ),
                None,
            )
        expires_at = self._clock() + self._ttl(fetched.max_age)
        entry = self._validated(fetched.body, now, expires_at)
        if entry.error is not None:
            self._logger.info("x5u %s: %s", x5u, entry.detail)
        return entry, fetched.body

    def _fetch_single_flight(self, x5u: str, now: int) -> _Entry:
        client = self._redis
        token = secrets.token_hex(16)
        lock_key = self._lock_key(x5u)
        lock_ms = max(1, int(self._lock_timeout * 1000))

        def try_lock() -> object:
            assert client is not None
            return self._guard.call(
                lambda: client.set(lock_key, token, nx=True, px=lock_ms), default=_UNAVAILABLE
            )

        held = False
        if client is not None:
            outcome = try_lock()
            held = bool(outcome) and outcome is not _UNAVAILABLE
            if not held and outcome is not _UNAVAILABLE:
                # Another worker is fetching: wait for its result in Redis.
                deadline = time.monotonic() + self._lock_timeout
                while time.monotonic() < deadline:
                    time.sleep(_POLL_INTERVAL)
                    entry = self._lookup_redis(x5u, now)
                    if entry is not None:
                        return entry
                    outcome = try_lock()  # the holder may have died without a result
                    if outcome is _UNAVAILABLE:
                        break
                    if outcome:
                        held = True
                        break
        try:
            entry, body = self._fetch(x5u, now)
            self._store(x5u, entry, body)
        finally:
            if held and client is not None:
                self._guard.call(lambda: client.eval(_RELEASE_LOCK, 1, lock_key, token))
        return entry
