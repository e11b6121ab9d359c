"""Shared helpers for the certificate, fetcher, cache and certificate-server tests.

Real parts only: a redis-server we start on a free loopback port (stopped by
PID), and the development HTTPS certificate server on an ephemeral port.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from stirshaken import certserver
from stirshaken.cache import connect_redis
from stirshaken.fetcher import FetchedChain, HttpsFetcher
from stirshaken.pki import PkiPaths

REDIS_SERVER = "/usr/bin/redis-server"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private redis-server (no persistence) on 127.0.0.1:``port``; stop() kills it by PID."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.2,
                             socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(self) -> redis.Redis:
        return connect_redis(self.url, timeout=0.25)


@contextlib.contextmanager
def running_certserver(directory: Path, pki: PkiPaths) -> Iterator[certserver.CertificateServer]:
    """The certificate server on 127.0.0.1:<ephemeral>, shut down afterwards."""
    server = certserver.make_server(
        directory, host="127.0.0.1", port=0, cert_file=pki.tls_cert, key_file=pki.tls_key,
        quiet=True,
    )
    thread = certserver.start_in_thread(server)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def loopback_fetcher(pki: PkiPaths, port: int, **kwargs: object) -> HttpsFetcher:
    """An HttpsFetcher allowed to reach our loopback server on ``port``."""
    return HttpsFetcher(
        allow_hosts=LOOPBACK_HOSTS,
        allowed_ports=frozenset({port}),
        tls_ca_file=str(pki.root),
        **kwargs,  # type: ignore[arg-type]
    )


@dataclass
class FakeFetcher:
    """A fetcher answering from a dict of URL → body (or exception); counts calls."""

    bodies: dict[str, bytes | Exception] = field(default_factory=dict)
    max_age: int | None = None
    delay: float = 0.0
    calls: list[str] = field(default_factory=list)

    def fetch(self, url: str) -> FetchedChain:
        self.calls.append(url)
        if self.delay:
            time.sleep(self.delay)
        body = self.bodies[url]
        if isinstance(body, Exception):
            raise body
        return FetchedChain(body=body, max_age=self.max_age)


class FakeClock:
    """An epoch clock that moves only when told."""

    def __init__(self, start: float | None = None) -> None:
        # Real time by default: the test certificates are valid around now.
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
