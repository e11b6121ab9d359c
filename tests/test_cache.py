"""stirshaken.cache: LRU → Redis → fetch, negative caching, TTL rules, outages, single-flight.

Uses a private redis-server and, for the end-to-end case, the real HTTPS
certificate server; time-dependent behaviour runs on an injected clock.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers_certs import FakeClock, FakeFetcher, RedisServer, loopback_fetcher, running_certserver

from stirshaken import pki
from stirshaken.cache import CertificateCache, RedisGuard, connect_redis
from stirshaken.certs import TrustStore
from stirshaken.errors import BadIdentityInfo, CertificateFetchError, UnsupportedCredential
from stirshaken.fetcher import FetchedChain

X5U = "https://cert.example.net/sp.pem"
PREFIX = "stirshaken:cert:"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="module")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> pki.PkiPaths:
    return pki.make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def store(test_pki: pki.PkiPaths) -> TrustStore:
    return TrustStore.from_directory(test_pki.trust_dir)


@pytest.fixture(scope="module")
def chain_pem(test_pki: pki.PkiPaths) -> bytes:
    return test_pki.chain.read_bytes()


@pytest.fixture(scope="module")
def untrusted_pem(test_pki: pki.PkiPaths) -> bytes:
    stranger = pki.make_intermediate(pki.make_root(common_name="SHAKEN ROOT OTHER"))
    _key, leaf = pki.make_leaf(stranger)
    return pki.pem_of(leaf, stranger.certificate)


def make_cache(fetcher: Any, store: TrustStore, client: redis.Redis | None, clock: FakeClock,
               **kwargs: Any) -> CertificateCache:
    return CertificateCache(fetcher=fetcher, trust_store=store, redis=client, clock=clock, **kwargs)


class CountingRedis:
    """Forwards to a real client and counts every command issued through it."""

    def __init__(self, inner: redis.Redis) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return counted


# -- the three tiers ------------------------------------------------------------------


def test_lru_hit_touches_neither_redis_nor_fetcher(store: TrustStore, client: redis.Redis, chain_pem: bytes) -> None:
    fetcher = FakeFetcher({X5U: chain_pem})
    counting = CountingRedis(client)
    clock = FakeClock()
    cache = make_cache(fetcher, store, counting, clock)  # type: ignore[arg-type]
    first = cache.certificate_for(X5U, now=int(clock()))
    assert fetcher.calls == [X5U]
    commands = list(counting.calls)
    assert commands  # the miss looked in Redis, took the lock, stored, released
    for _ in range(100):
        assert cache.certificate_for(X5U, now=int(clock())) is first
    assert counting.calls == commands
    assert fetcher.calls == [X5U]


def test_redis_shares_across_workers_and_stores_pem(store: TrustStore, client: redis.Redis, chain_pem: bytes) -> None:
    clock = FakeClock()
    worker_a = FakeFetcher({X5U: chain_pem}, max_age=7200)
    worker_b = FakeFetcher({X5U: chain_pem})
    cache_a = make_cache(worker_a, store, client, clock)
    cache_b = make_cache(worker_b, store, client, clock)
    cert_a = cache_a.certificate_for(X5U, now=int(clock()))
    cert_b = cache_b.certificate_for(X5U, now=int(clock()))
    assert worker_a.calls == [X5U] and worker_b.calls == []
    assert cert_b.certificate == cert_a.certificate
    stored = client.hgetall(PREFIX + X5U)
    assert stored[b"body"] == chain_pem  # the PEM itself, no pickle
    assert 7100 <= client.ttl(PREFIX + X5U) <= 7200
    assert not client.exists(f"{PREFIX}lock:{X5U}")  # lock released


def test_redis_body_is_validated_again(store: TrustStore, client: redis.Redis, untrusted_pem: bytes) -> None:
    clock = FakeClock()
    client.hset(PREFIX + X5U, mapping={"body": untrusted_pem, "expires": repr(clock() + 600)})
    client.expire(PREFIX + X5U, 600)
    fetcher = FakeFetcher({})
    cache = make_cache(fetcher, store, client, clock)
    with pytest.raises(UnsupportedCredential, match="trusted root"):
        cache.certificate_for(X5U, now=int(clock()))
    assert fetcher.calls == []


def test_end_to_end_over_https(test_pki: pki.PkiPaths, store: TrustStore, client: redis.Redis) -> None:
    with running_certserver(test_pki.www_dir, test_pki) as server:
        x5u = f"https://127.0.0.1:{server.port}/sp.pem"
        fetcher = loopback_fetcher(test_pki, server.port)
        clock = FakeClock()
        sti = make_cache(fetcher, store, client, clock).certificate_for(x5u, now=int(clock()))
        assert sti.tn_auth_list.spcs == ("1001",)
        # certserver sends max-age=86400: the default ceiling.
        assert 86300 <= client.ttl(PREFIX + x5u) <= 86400
    # Server gone: a second worker is served from Redis.
    other = make_cache(FakeFetcher({}), store, client, clock)
    assert other.certificate_for(x5u, now=int(clock())).certificate == sti.certificate


# -- negative caching -------------------------------------------------------------------


def test_dead_repository_is_fetched_once_per_negative_ttl(test_pki: pki.PkiPaths, store: TrustStore,
                                                          client: redis.Redis) -> None:
    from helpers_certs import free_port

    port = free_port()  # nothing listens there
    x5u = f"https://127.0.0.1:{port}/sp.pem"
    real = loopback_fetcher(test_pki, port)
    calls: list[str] = []

    class Counting:
        def fetch(self, url: str) -> FetchedChain:
            calls.append(url)
            return real.fetch(url)

    clock = FakeClock()
    cache = make_cache(Counting(), store, client, clock, negative_ttl=30)
    for _ in range(5):
        with pytest.raises(CertificateFetchError) as info:
            cache.certificate_for(x5u, now=int(clock()))
        assert info.value.sip_status == 436
    assert len(calls) == 1
    stored = client.hgetall(PREFIX + x5u)
    assert stored[b"error"] == b"CertificateFetchError" and stored[b"status"] == b"436"
    # Another worker gets the remembered failure from Redis.
    other_calls = FakeFetcher({})
    with pytest.raises(CertificateFetchError):
        make_cache(other_calls, store, client, clock).certificate_for(x5u, now=int(clock()))
    assert other_calls.calls == []
    clock.advance(31)
    with pytest.raises(CertificateFetchError):
        cache.certificate_for(x5u, now=int(clock()))
    assert len(calls) == 2


def test_invalid_chain_is_remembered_as_437(store: TrustStore, client: redis.Redis, untrusted_pem: bytes) -> None:
    fetcher = FakeFetcher({X5U: untrusted_pem})
    clock = FakeClock()
    cache = make_cache(fetcher, store, client, clock, negative_ttl=30)
    for _ in range(3):
        with pytest.raises(UnsupportedCredential) as info:
            cache.certificate_for(X5U, now=int(clock()))
        assert info.value.sip_status == 437
    assert fetcher.calls == [X5U]
    assert client.hgetall(PREFIX + X5U)[b"status"] == b"437"
    assert 1 <= client.ttl(PREFIX + X5U) <= 30


def test_refused_url_is_436_and_remembered(store: TrustStore, client: redis.Redis) -> None:
    fetcher = FakeFetcher({"https://10.0.0.1/sp.pem": BadIdentityInfo("special-purpose")})
    clock = FakeClock()
    cache = make_cache(fetcher, store, client, clock)
    for _ in range(2):
        with pytest.raises(BadIdentityInfo) as info:
            cache.certificate_for("https://10.0.0.1/sp.pem", now=int(clock()))
        assert type(info.value) is BadIdentityInfo
    assert len(fetcher.calls) == 1


# -- TTLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_age", "expected"),
    [
        (None, 3600),  # no directive: the floor
        (0, 3600),  # no-store: still the ATIS-1000074 floor
        (60, 3600),  # shorter than the floor
        (7200, 7200),
        (86400, 86400),
        (10**7, 86400),  # clamped to max_ttl
    ],
)
def test_ttl_rules(store: TrustStore, client: redis.Redis, chain_pem: bytes,
                   max_age: int | None, expected: int) -> None:
    fetcher = FakeFetcher({X5U: chain_pem}, max_age=max_age)
    clock = FakeClock()
    cache = make_cache(fetcher, store, client, clock, min_ttl=3600, max_ttl=86400)
    cache.certificate_for(X5U, now=int(clock()))
    assert expected - 2 <= client.ttl(PREFIX + X5U) <= expected
    client.delete(PREFIX + X5U)  # leave only the LRU
    clock.advance(expected - 1)
    cache.certificate_for(X5U, now=int(clock()))
    assert len(fetcher.calls) == 1
    clock.advance(2)
    cache.certificate_for(X5U, now=int(clock()))
    assert len(fetcher.calls) == 2


def test_entry_never_outlives_the_certificate(test_pki: pki.PkiPaths, store: TrustStore,
                                             client: redis.Redis) -> None:
    intermediate = pki.load_issuer(test_pki.intermediate, test_pki.intermediate_key)
    soon = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=100)
    _key, leaf = pki.make_leaf(intermediate, not_after=soon)
    fetcher = FakeFetcher({X5U: pki.pem_of(leaf, intermediate.certificate)}, max_age=86400)
    clock = FakeClock()
    cache = make_cache(fetcher, store, client, clock)
    cache.certificate_for(X5U, now=int(clock()))
    assert client.ttl(PREFIX + X5U) <= 101
    clock.advance(110)
    with pytest.raises(UnsupportedCredential, match="expired"):
        cache.certificate_for(X5U, now=int(clock()))
    assert len(fetcher.calls) == 2


def test_lru_is_bounded(store: TrustStore, chain_pem: bytes) -> None:
    urls = [f"https://cert.example.net/sp{i}.pem" for i in range(3)]
    fetcher = FakeFetcher({url: chain_pem for url in urls})
    clock = FakeClock()
    cache = make_cache(fetcher, store, None, clock, lru_size=2)
    for url in urls:
        cache.certificate_for(url, now=int(clock()))
    cache.certificate_for(urls[2], now=int(clock()))
    assert len(fetcher.calls) == 3
    cache.certificate_for(urls[0], now=int(clock()))  # evicted: fetched again
    assert len(fetcher.calls) == 4


def test_forget(store: TrustStore, client: redis.Redis, chain_pem: bytes) -> None:
    fetcher = FakeFetcher({X5U: chain_pem})
    clock = FakeClock()
    cache = make_cache(fetcher, store, client, clock)
    cache.certificate_for(X5U, now=int(clock()))
    cache.forget(X5U)
    assert not client.exists(PREFIX + X5U)
    cache.certificate_for(X5U, now=int(clock()))
    assert len(fetcher.calls) == 2


# -- Redis absent or failing -----------------------------------------------------------------


def test_works_without_redis(store: TrustStore, chain_pem: bytes, caplog: pytest.LogCaptureFixture) -> None:
    fetcher = FakeFetcher({X5U: chain_pem})
    clock = FakeClock()
    with caplog.at_level(logging.INFO):
        cache = make_cache(fetcher, store, None, clock)
        cache.certificate_for(X5U, now=int(clock()))
        cache.certificate_for(X5U, now=int(clock()))
    assert fetcher.calls == [X5U]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_redis_outage_mid_run_logs_once_and_recovers(store: TrustStore, chain_pem: bytes,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer().start()
    try:
        client = server.client()
        urls = [f"https://cert.example.net/o{i}.pem" for i in range(6)]
        fetcher = FakeFetcher({url: chain_pem for url in urls})
        clock = FakeClock()
        cache = make_cache(fetcher, store, client, clock)
        with caplog.at_level(logging.INFO, logger="stirshaken.cache"):
            cache.certificate_for(urls[0], now=int(clock()))
            server.stop()
            started = time.monotonic()
            for url in urls[1:4]:
                assert cache.certificate_for(url, now=int(clock())).tn_auth_list.spcs == ("1001",)
                clock.advance(2)  # past the guard's retry interval: Redis is tried again each time
            assert time.monotonic() - started < 2
            assert cache.certificate_for(urls[0], now=int(clock()))  # LRU still serves
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 1 and "unavailable" in warnings[0]

            server.start()  # same port
            clock.advance(2)
            cache.certificate_for(urls[4], now=int(clock()))
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 2 and "back" in warnings[1]
            assert client.exists(PREFIX + urls[4])
        assert len(fetcher.calls) == 5
    finally:
        server.stop()


def test_redis_guard_generic(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    logger = logging.getLogger("stirshaken.test.guard")
    calls: list[int] = []
    healthy = True

    def command(x: int) -> int:
        calls.append(x)
        if not healthy:
            raise redis.exceptions.ConnectionError("refused")
        return x * 2

    guard = RedisGuard(object(), logger=logger, retry_interval=1.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="stirshaken.test.guard"):
        assert guard.call(command, 2) == 4
        healthy = False
        assert guard.call(command, 3, default="d") == "d"
        assert guard.call(command, 4, default="d") == "d"  # skipped: within retry_interval
        assert calls == [2, 3]
        clock.advance(1.5)
        assert guard.call(command, 5) is None
        assert calls == [2, 3, 5]
        healthy = True
        clock.advance(1.5)
        assert guard.call(command, 6) == 12
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "unavailable" in messages[0] and "back" in messages[1]
    assert RedisGuard(None).call(command, 7, default=0) == 0
    assert calls == [2, 3, 5, 6]


def test_unexpected_redis_data_is_ignored(store: TrustStore, client: redis.Redis, chain_pem: bytes) -> None:
    client.set(PREFIX + X5U, "not a hash")  # WRONGTYPE for HGETALL
    fetcher = FakeFetcher({X5U: chain_pem})
    clock = FakeClock()
    cache = make_cache(fetcher, store, client, clock)
    assert cache.certificate_for(X5U, now=int(clock()))
    assert fetcher.calls == [X5U]


def test_connect_redis_fails_fast(redis_server: RedisServer) -> None:
    from helpers_certs import free_port

    dead = connect_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=0.1)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        dead.ping()
    assert time.monotonic() - started < 0.5


# -- single-flight ------------------------------------------------------------------------------


def test_single_flight_across_workers(store: TrustStore, client: redis.Redis, redis_server: RedisServer,
                                     chain_pem: bytes) -> None:
    fetcher = FakeFetcher({X5U: chain_pem}, delay=0.2)
    clock = FakeClock()
    # One client each, as each Kamailio worker has its own connection.
    workers = [make_cache(fetcher, store, redis_server.client(), clock) for _ in range(3)]
    barrier = threading.Barrier(len(workers))
    results: list[object] = [None] * len(workers)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = workers[index].certificate_for(X5U, now=int(clock()))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert fetcher.calls == [X5U]
    assert all(r is not None for r in results)


def test_stuck_lock_holder_is_waited_for_only_lock_timeout(store: TrustStore, client: redis.Redis,
                                                            chain_pem: bytes) -> None:
    client.set(f"{PREFIX}lock:{X5U}", "someone-else", px=60_000)
    fetcher = FakeFetcher({X5U: chain_pem})
    clock = FakeClock()
    cache = make_cache(fetcher, store, client, clock, lock_timeout=0.2)
    started = time.monotonic()
    cache.certificate_for(X5U, now=int(clock()))
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 2.0  # waited for the lock, then fetched itself
    assert fetcher.calls == [X5U]
    assert client.get(f"{PREFIX}lock:{X5U}") == b"someone-else"  # not ours to release


# -- warm path ------------------------------------------------------------------------------------
# Its speed is measured by `make bench` (bench/bench_library.py), not here.


def test_warm_hit_touches_neither_fetcher_nor_validation(store: TrustStore, chain_pem: bytes) -> None:
    fetcher = FakeFetcher({X5U: chain_pem})
    cache = CertificateCache(fetcher=fetcher, trust_store=store)
    now = int(time.time())
    first = cache.certificate_for(X5U, now=now)
    for _ in range(100):
        assert cache.certificate_for(X5U, now=now) is first
    assert fetcher.calls == [X5U]
