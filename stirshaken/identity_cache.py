"""Per-call Identity cache in Redis.

The Identity obtained for a call (and the Date it was signed with) is stored
under ``<prefix><Call-ID>`` with a TTL inside the freshness window, so that a
failover to the next vendor, a retransmission, or the same call reaching
another node of the cluster reuses it instead of signing again.

Theory of operation:

1. **Write once, when we sign**, without waiting for Redis' answer: the SET
   is written to the socket and its ``+OK`` is read the next time the socket
   is used.  Signing never waits on Redis.
2. **Read only when it can matter**: before signing a call we have not
   signed in this transaction (another node or an earlier transaction may
   have); failover inside one transaction carries the Identity in the
   transaction itself (the KEMI script keeps it in an AVP) and never reads.
3. **A stored Identity is reused only for the same call**: the entry records
   orig, dest and iat; a lookup with other numbers, or an entry older than
   the TTL, is a miss.
4. **Redis down never stops a call**: every error is a miss (or a dropped
   write); :class:`~stirshaken.cache.RedisGuard` logs once per outage and,
   while Redis is down, tries again at most once per retry interval, so an
   outage costs at most one timeout per retry period, not one per call.

The client is a tiny RESP speaker (GET, SET .. EX) over one socket per
process, because redis-py costs about 50 µs of CPU per command and the
whole per-call budget of the service is not much more.  Nothing here is
shared between processes; build one :class:`IdentityCache` per worker.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis.exceptions

from .cache import RedisGuard
from .errors import ConfigurationError

@dataclass(frozen=True, slots=True, kw_only=True)
class CachedIdentity:
    identity: str
    date: str
    iat: int
    orig: str
    dest: tuple[str, ...]
    attest: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "identity": self.identity,
                "date": self.date,
                "iat": self.iat,
                "orig": self.orig,
                "dest": list(self.dest),
                "attest": self.attest,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CachedIdentity | None:
        try:
            obj = json.loads(data)
            return cls(
                identity=str(obj["identity"]),
                date=str(obj["date"]),
                iat=int(obj["iat"]),
                orig=str(obj["orig"]),
                dest=tuple(str(d) for d in obj["dest"]),
                attest=str(obj.get("attest", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None


def cache_ttl(freshness: int) -> int:
    """Seconds an Identity stays reusable: three quarters of the freshness window.

    The rest of the window is left for the transit to, and the clock of, the
    verifier downstream (RFC 8224 §6.1 and §12: 60 s recommended).
    """
    return max(1, (freshness * 3) // 4)


class RedisError(redis.exceptions.ConnectionError):
    """Any failure talking to Redis (refused, timeout, protocol).

    A redis-py ConnectionError, so :class:`~stirshaken.cache.RedisGuard`
    treats it like any other Redis outage.
    """


class RespClient:
    """A minimal Redis client: one socket, GET and fire-and-forget SET EX.

    ``url`` is ``redis://[:password@]host[:port][/db]``.
    """

    def __init__(self, url: str, *, timeout: float = 0.1) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", ""):
            raise ConfigurationError(f"unsupported Redis URL {url!r} (redis://host:port/db)")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.password = unquote(parts.password) if parts.password else None
        path = parts.path.strip("/")
        self.db = int(path) if path.isdigit() else 0
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self._pending = 0  # replies of fire-and-forget commands not read yet

    # -- connection ------------------------------------------------------
    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise RedisError(f"connect {self.host}:{self.port}: {exc}") from exc
        self._sock, self._buf, self._pending = sock, b"", 0
        if self.password is not None:
            self._send(_command(b"AUTH", self.password.encode()))
            self._pending += 1
        if self.db:
            self._send(_command(b"SELECT", str(self.db).encode()))
            self._pending += 1
        return sock

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock, self._buf, self._pending = None, b"", 0

    def _send(self, data: bytes) -> None:
        sock = self._sock or self._connect()
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise RedisError(f"send: {exc}") from exc

    # -- replies -----------------------------------------------------------
    def _fill(self) -> None:
        assert self._sock is not None
        try:
            chunk = self._sock.recv(65536)
        except OSError as exc:  # includes socket.timeout
            self.close()
            raise RedisError(f"recv: {exc}") from exc
        if not chunk:
            self.close()
            raise RedisError("connection closed by Redis")
        self._buf += chunk

    def _reply(self) -> bytes | None:
        """Read one reply: bulk string bytes, None for nil, b"OK"-like for status."""
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                kind, line = self._buf[:1], self._buf[1:end]
                if kind in (b"+", b":"):
                    self._buf = self._buf[end + 2 :]
                    return line
                if kind == b"-":
                    self._buf = self._buf[end + 2 :]
                    raise RedisError(line.decode(errors="replace"))
                if kind == b"$":
                    length = int(line)
                    if length < 0:
                        self._buf = self._buf[end + 2 :]
                        return None
                    total = end + 2 + length + 2
                    if len(self._buf) >= total:
                        data = self._buf[end + 2 : end + 2 + length]
                        self._buf = self._buf[total:]
                        return data
                else:
                    self.close()
                    raise RedisError(f"unexpected reply type {kind!r}")
            self._fill()

    def _drain(self) -> None:
        """Read the replies of earlier fire-and-forget commands."""
        while self._pending:
            self._pending -= 1
            try:
                self._reply()
            except RedisError:
                if self._sock is None:
                    raise
                # an error reply to an old SET: nothing to do but go on

    # -- commands ------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        self._send(_command(b"GET", key.encode()))
        try:
            self._drain()
            return self._reply()
        except (RedisError, ValueError) as exc:
            self.close()
            raise RedisError(str(exc)) from exc

    def set_nowait(self, key: str, value: bytes, ttl: int) -> None:
        self._send(_command(b"SET", key.encode(), value, b"EX", str(ttl).encode()))
        self._pending += 1
        if self._pending > 64:  # never let unread replies pile up
            try:
                self._drain()
            except (RedisError, ValueError) as exc:
                self.close()
                raise RedisError(str(exc)) from exc

    def ping(self) -> bool:
        self._send(_command(b"PING"))
        self._drain()
        return self._reply() == b"PONG"


def _command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class IdentityCache:
    """``get``/``put`` the Identity of a call; every Redis failure is a miss."""

    def __init__(
        self,
        client: RespClient | None,
        *,
        prefix: str = "ss:id:",
        freshness: int = 60,
        guard: RedisGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = cache_ttl(freshness)
        self.guard = guard if guard is not None else RedisGuard(client, what="Redis (identity cache)")  # type: ignore[arg-type]
        self.clock = clock

    def key(self, call_id: str) -> str:
        return self.prefix + call_id

    def get(self, call_id: str, *, orig: str, dest: Sequence[str]) -> CachedIdentity | None:
        if self.client is None or not call_id:
            return None
        data = self.guard.call(self.client.get, self.key(call_id), default=None)
        if data is None:
            return None
        cached = CachedIdentity.from_json(data)
        if cached is None or cached.orig != orig or tuple(cached.dest) != tuple(dest):
            return None
        if not 0 <= int(self.clock()) - cached.iat <= self.ttl:
            return None
        return cached

    def put(self, call_id: str, cached: CachedIdentity) -> None:
        if self.client is None or not call_id:
            return
        self.guard.call(self.client.set_nowait, self.key(call_id), cached.to_json(), self.ttl)
