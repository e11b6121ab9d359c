"""Per-call Identity cache in Redis.

The Identity obtained for a call (and the Date it was signed with) is stored
under ``<prefix><Call-ID>`` with a TTL inside the freshness window, so that a
failover to the next vendor, a retransmission, or the same call reaching
another node of the cluster reuses it instead of signing again.

Theory of operation:

1. **Write once, when we sign**, without waiting for Redis' answer: the SET
   is queued, written with the next batch, and its ``+OK`` is read the next
   time the socket is used.  Signing never waits on Redis.  A worker batches
   its writes for up to ``flush_interval`` (every send to Redis wakes it up,
   which costs as much CPU as signing on a small VM); the KEMI script calls
   :meth:`IdentityCache.flush_if_due` on every new INVITE, so a queued
   write waits at most until that worker's next INVITE after the interval
   (only under load: at low traffic every write goes out at once).
2. **Read only when it can matter**: before signing a call we have not
   signed in this transaction (another node or an earlier transaction may
   have); failover inside one transaction carries the Identity in the
   transaction itself (the KEMI script keeps it in an AVP) and never reads.
   The read is overlapped with signing (:meth:`IdentityCache.lookup_start`,
   sign, :meth:`IdentityCache.lookup_finish`): Redis answers while we sign,
   so the worker never sleeps on it.  On a hit our fresh signature is thrown
   away and the stored Identity is used: the call keeps one Identity across
   nodes, at the price of a wasted signature on the rare hit.
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

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

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

    def encode(self) -> bytes:
        """``iat|orig|dest,dest|attest|date|identity``: the Identity goes last, it may hold anything."""
        return f"{self.iat}|{self.orig}|{','.join(self.dest)}|{self.attest}|{self.date}|{self.identity}".encode()

    @classmethod
    def decode(cls, data: bytes) -> CachedIdentity | None:
        try:
            iat, orig, dest, attest, date, identity = data.decode().split("|", 5)
            if not identity or not date:
                return None
            return cls(identity=identity, date=date, iat=int(iat), orig=orig,
                       dest=tuple(dest.split(",")) if dest else (), attest=attest)
        except (ValueError, UnicodeDecodeError):
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

    ``url`` is ``redis://[:password@]host[:port][/db]`` or, for a Redis on
    this host, ``unix:///path/to/redis.sock[?db=N][&password=P]`` (redis-py's
    forms, so the certificate cache takes the same URL).  A Unix socket
    spares the worker the loopback TCP stack (bench_sip.py (c) against (c"):
    about 15-20 us per signed call in most runs here).
    """

    def __init__(self, url: str, *, timeout: float = 0.1) -> None:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.unix_path: str | None = None
        if parts.scheme == "unix":
            if not parts.path:
                raise ConfigurationError(f"unsupported Redis URL {url!r} (unix:///path/to/redis.sock?db=0)")
            self.unix_path = unquote(parts.path)
            db_text = query.get("db", ["0"])[0]
        elif parts.scheme in ("redis", ""):
            db_text = parts.path.strip("/") or "0"
        else:
            raise ConfigurationError(f"unsupported Redis URL {url!r} (redis://host:port/db or unix:///path?db=0)")
        if not db_text.isdigit():
            raise ConfigurationError(f"unsupported Redis URL {url!r}: database {db_text!r} is not a number")
        self.host = parts.hostname or "127.0.0.1"
        self.port = (parts.port or 6379) if self.unix_path is None else 0
        self.password = query.get("password", [None])[0] or (unquote(parts.password) if parts.password else None)
        self.db = int(db_text)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self._pending = 0  # replies of fire-and-forget commands not read yet
        self._outbox: list[bytes] = []  # commands queued, not sent yet
        self._get_in_flight = False  # a GET was sent and its answer not read yet

    # -- connection ------------------------------------------------------
    def _connect(self) -> socket.socket:
        try:
            if self.unix_path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(self.timeout)
                    sock.connect(self.unix_path)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            where = self.unix_path or f"{self.host}:{self.port}"
            raise RedisError(f"connect {where}: {exc}") from exc
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
        self._outbox = []
        self._get_in_flight = False

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
        """GET, sent together with any queued writes."""
        self.send_get(key)
        return self.read_get()

    def send_get(self, key: str) -> None:
        """Send a GET (and the queued writes) without waiting; :meth:`read_get` collects it."""
        if self._get_in_flight:
            self.read_get()  # an answer nobody collected: read it so replies stay in order
        data = _command(b"GET", key.encode())
        queued = len(self._outbox)
        if queued:
            self._outbox.append(data)
            data = b"".join(self._outbox)
            self._outbox = []
        self._send(data)
        self._pending += queued
        self._get_in_flight = True

    def read_get(self) -> bytes | None:
        """The answer to the last :meth:`send_get`."""
        if not self._get_in_flight:
            raise RedisError("no GET in flight")
        self._get_in_flight = False
        try:
            self._drain()
            return self._reply()
        except (RedisError, ValueError) as exc:
            self.close()
            raise RedisError(str(exc)) from exc

    def queue_set(self, key: str, value: bytes, ttl: int) -> None:
        """SET key value EX ttl, sent with the next :meth:`flush` or :meth:`get`."""
        self._outbox.append(_command(b"SET", key.encode(), value, b"EX", str(ttl).encode()))

    @property
    def queued(self) -> int:
        return len(self._outbox)

    def flush(self) -> None:
        """Send the queued commands; read old replies when many are unread."""
        if self._get_in_flight:
            return  # replies must stay in order: the GET's answer is read first
        if self._outbox:
            queued = len(self._outbox)
            data = b"".join(self._outbox)
            self._outbox = []
            self._send(data)
            self._pending += queued
        if self._pending > 64:  # never let unread replies pile up
            try:
                self._drain()
            except (RedisError, ValueError) as exc:
                self.close()
                raise RedisError(str(exc)) from exc

    def set_nowait(self, key: str, value: bytes, ttl: int) -> None:
        self.queue_set(key, value, ttl)
        self.flush()

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
        flush_interval: float = 0.0,
        guard: RedisGuard | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = cache_ttl(freshness)
        self.flush_interval = flush_interval
        self.guard = guard if guard is not None else RedisGuard(client, what="Redis (identity cache)")  # type: ignore[arg-type]
        self.clock = clock
        self.monotonic = monotonic
        self._last_flush = -1e18
        self._looking_up = False

    def key(self, call_id: str) -> str:
        return self.prefix + call_id

    def get(self, call_id: str, *, orig: str, dest: Sequence[str]) -> CachedIdentity | None:
        self.lookup_start(call_id)
        return self.lookup_finish(orig=orig, dest=dest)

    def lookup_start(self, call_id: str) -> None:
        """Ask Redis for the call's entry without waiting (sign meanwhile, then :meth:`lookup_finish`)."""
        self._looking_up = False
        if self.client is None or not call_id:
            return
        self._looking_up = self.guard.call(self.client.send_get, self.key(call_id), default=False) is None

    def lookup_finish(self, *, orig: str, dest: Sequence[str]) -> CachedIdentity | None:
        """The entry asked for by :meth:`lookup_start`, if it is usable for this call."""
        if not self._looking_up or self.client is None:
            return None
        self._looking_up = False
        data = self.guard.call(self.client.read_get, default=None)
        if data is None:
            return None
        cached = CachedIdentity.decode(data)
        if cached is None or cached.orig != orig or tuple(cached.dest) != tuple(dest):
            return None
        if not 0 <= int(self.clock()) - cached.iat <= self.ttl:
            return None
        return cached

    def put(self, call_id: str, cached: CachedIdentity) -> None:
        if self.client is None or not call_id:
            return
        self.client.queue_set(self.key(call_id), cached.encode(), self.ttl)
        self.flush_if_due()

    def flush_if_due(self) -> None:
        """Send queued writes when the batch interval has passed since the last send."""
        client = self.client
        if client is None or not client.queued:
            return
        now = self.monotonic()
        if now - self._last_flush < self.flush_interval:
            return
        self._last_flush = now
        self.guard.call(client.flush)
        if not self.guard.available:
            client.close()  # drop what could not be written
