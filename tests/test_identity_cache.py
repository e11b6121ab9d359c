"""The per-call Identity cache on a real Redis (stirshaken.identity_cache)."""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from stirshaken.cache import RedisGuard
from stirshaken.identity_cache import CachedIdentity, IdentityCache, RedisError, RespClient, cache_ttl
from tests import harness

NOW = 1_800_000_000


def entry(iat: int = NOW, orig: str = "12155550121") -> CachedIdentity:
    return CachedIdentity(identity="a.b.c;info=<https://x/y>", date="Fri, 15 Jan 2027 08:00:00 GMT", iat=iat,
                          orig=orig, dest=("12155550131",), attest="A")


@pytest.fixture
def cache(redis_server: harness.RedisServer) -> IdentityCache:
    client = RespClient(redis_server.url, timeout=0.2)
    return IdentityCache(client, prefix="test:id:", freshness=60, clock=lambda: NOW + 5)


def test_writes_are_batched_within_the_interval(redis_server: harness.RedisServer) -> None:
    mono = [100.0]
    client = RespClient(redis_server.url, timeout=0.2)
    cache = IdentityCache(client, prefix="batch:", flush_interval=0.05, clock=lambda: NOW, monotonic=lambda: mono[0])
    cache.put("one", entry())  # first write after a quiet period: sent at once
    assert client.queued == 0
    cache.put("two", entry())
    cache.put("three", entry())
    assert client.queued == 2 and redis_server.command("EXISTS", "batch:two") == b":0\r\n"
    mono[0] += 0.06
    cache.flush_if_due()
    assert client.queued == 0
    assert cache.get("three", orig="12155550121", dest=("12155550131",)) == entry()


def test_a_read_carries_the_queued_writes(redis_server: harness.RedisServer) -> None:
    client = RespClient(redis_server.url, timeout=0.2)
    cache = IdentityCache(client, prefix="carry:", flush_interval=60, clock=lambda: NOW)
    cache.put("a", entry())
    cache.put("b", entry())
    assert cache.get("b", orig="12155550121", dest=("12155550131",)) == entry()


def test_put_then_get(cache: IdentityCache, redis_server: harness.RedisServer) -> None:
    cache.put("call-1", entry())
    got = cache.get("call-1", orig="12155550121", dest=("12155550131",))
    assert got == entry()
    ttl = int(redis_server.command("TTL", "test:id:call-1").strip(b":\r\n"))
    assert 0 < ttl <= cache_ttl(60) == 45


def test_other_numbers_or_old_entries_are_misses(cache: IdentityCache) -> None:
    cache.put("call-2", entry())
    assert cache.get("call-2", orig="12155550199", dest=("12155550131",)) is None
    assert cache.get("call-2", orig="12155550121", dest=("12155550100",)) is None
    cache.put("call-3", entry(iat=NOW - 100))
    assert cache.get("call-3", orig="12155550121", dest=("12155550131",)) is None
    assert cache.get("never", orig="12155550121", dest=("12155550131",)) is None


def test_garbage_in_redis_is_a_miss(cache: IdentityCache, redis_server: harness.RedisServer) -> None:
    redis_server.command("SET", "test:id:junk", "{not an entry")
    assert cache.get("junk", orig="1", dest=("2",)) is None


def test_many_unread_writes_then_a_read(cache: IdentityCache) -> None:
    for i in range(200):
        cache.put(f"bulk-{i}", entry())
    assert cache.get("bulk-199", orig="12155550121", dest=("12155550131",)) == entry()


def test_password_and_db_in_url(redis_server: harness.RedisServer) -> None:
    client = RespClient(f"redis://127.0.0.1:{redis_server.port}/3", timeout=0.2)
    client.set_nowait("k", b"v", 10)
    assert client.get("k") == b"v"
    assert RespClient(redis_server.url).get("k") is None  # db 0


def test_redis_down_is_a_miss_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    port = harness.free_port(socket.SOCK_STREAM)  # nothing listens
    client = RespClient(f"redis://127.0.0.1:{port}/0", timeout=0.1)
    guard = RedisGuard(client, logger=logging.getLogger("test.idcache"), retry_interval=60)  # type: ignore[arg-type]
    cache = IdentityCache(client, guard=guard)
    with caplog.at_level(logging.WARNING, logger="test.idcache"):
        for _ in range(5):
            cache.put("c", entry())
            assert cache.get("c", orig="12155550121", dest=("12155550131",)) is None
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1


def test_no_client_means_no_cache() -> None:
    cache = IdentityCache(None)
    cache.put("c", entry())
    assert cache.get("c", orig="12155550121", dest=("12155550131",)) is None


def test_server_that_never_answers_costs_one_timeout() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    client = RespClient(f"redis://127.0.0.1:{server.getsockname()[1]}/0", timeout=0.05)
    with pytest.raises(RedisError):
        client.get("x")
    server.close()


def test_unix_socket_url(redis_server: harness.RedisServer) -> None:
    """A Redis on this host through its Unix socket; db and password as redis-py writes them."""
    client = RespClient(redis_server.unix_url, timeout=0.2)
    client.set_nowait("unix-k", b"v", 10)
    assert client.get("unix-k") == b"v"
    assert RespClient(redis_server.url).get("unix-k") == b"v"  # the same server and db over TCP
    other_db = RespClient(f"unix://{redis_server.socket_path}?db=2", timeout=0.2)
    assert other_db.get("unix-k") is None
    other_db.set_nowait("unix-k", b"db2", 10)
    assert other_db.get("unix-k") == b"db2" and client.get("unix-k") == b"v"


def test_unix_socket_missing_is_a_redis_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = RespClient(f"unix://{tmp_path}/no-such.sock", timeout=0.1)
    with pytest.raises(RedisError, match="no-such.sock"):
        client.get("x")


@pytest.mark.parametrize("url", ["unix://", "http://127.0.0.1:6379/0", "redis://127.0.0.1:6379/zero",
                                 "unix:///tmp/redis.sock?db=x"])
def test_bad_url(url: str) -> None:
    from stirshaken.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        RespClient(url)


def test_cached_identity_roundtrip() -> None:
    assert CachedIdentity.decode(entry().encode()) == entry()
    odd = CachedIdentity(identity="a|b;info=<https://x/|y>", date="d", iat=1, orig="1", dest=("2", "3"))
    assert CachedIdentity.decode(odd.encode()) == odd
    for junk in (b"[]", b"x|1|2|A|d|id", b"1|2", b"\xff\xfe", b"1|1|2|A||"):
        assert CachedIdentity.decode(junk) is None


def test_uncollected_lookup_does_not_shift_answers(cache: IdentityCache) -> None:
    cache.put("first", entry())
    cache.client.flush()  # type: ignore[union-attr]
    cache.lookup_start("first")  # never finished (e.g. signing raised)
    cache.lookup_start("second")
    assert cache.lookup_finish(orig="12155550121", dest=("12155550131",)) is None  # "second" is not stored
