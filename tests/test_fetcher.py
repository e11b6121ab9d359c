"""stirshaken.fetcher: x5u URL rules (ATIS-1000074 §5.3.1), SSRF guard, HTTPS fetch limits."""

from __future__ import annotations

import email.utils
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers_certs import LOOPBACK_HOSTS, free_port, loopback_fetcher, running_certserver

from stirshaken import pki
from stirshaken.errors import BadIdentityInfo, CertificateFetchError, ConfigurationError
from stirshaken.fetcher import HttpsFetcher, cache_lifetime, validate_x5u_url


@pytest.fixture(scope="module")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> pki.PkiPaths:
    return pki.make_test_pki(
        tmp_path_factory.mktemp("pki"),
        tls_hosts=("127.0.0.1", "localhost", "certs.example.test"),
    )


# -- URL rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://cert.example.net/sp.pem",
        "https://cert.example.net:443/sp.pem",
        "https://cert.example.net:8443/certs/sp.pem",
        "HTTPS://Cert.Example.Net/sp.pem",
        "https://8.8.8.8/sp.pem",
        "https://[2001:4860:4860::8888]/sp.pem",
        "https://[64:ff9b::808:808]/sp.pem",  # NAT64 of 8.8.8.8
    ],
)
def test_acceptable_x5u(url: str) -> None:
    validate_x5u_url(url)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://cert.example.net/sp.pem", "https"),
        ("ftp://cert.example.net/sp.pem", "https"),
        ("https://cert.example.net:8080/sp.pem", "port 8080"),
        ("https://cert.example.net:80/sp.pem", "port 80"),
        ("https://user:pw@cert.example.net/sp.pem", "userinfo"),
        ("https://user@cert.example.net/sp.pem", "userinfo"),
        ("https://cert.example.net/sp.pem?a=1", "query"),
        ("https://cert.example.net/sp.pem?", "query"),
        ("https://cert.example.net/sp.pem#frag", "fragment"),
        ("https:///sp.pem", "no host"),
        ("https://cert.example.net:99999/sp.pem", "not a valid URL"),
        ("https://cert.example.net/s p.pem", "space"),
        ("https://cert.example.net/sp.pem\r\nX-Injected: 1", "control"),
        ("https://cërt.example.net/sp.pem", "non-ASCII"),
        ("https://127.0.0.1/sp.pem", "special-purpose"),
        ("https://10.1.2.3/sp.pem", "special-purpose"),
        ("https://192.168.1.1/sp.pem", "special-purpose"),
        ("https://169.254.169.254/latest", "special-purpose"),
        ("https://100.64.0.1/sp.pem", "special-purpose"),
        ("https://224.0.0.1/sp.pem", "special-purpose"),
        ("https://0.0.0.0/sp.pem", "special-purpose"),
        ("https://240.0.0.1/sp.pem", "special-purpose"),
        ("https://[::1]/sp.pem", "special-purpose"),
        ("https://[fe80::1]/sp.pem", "special-purpose"),
        ("https://[fc00::1]/sp.pem", "special-purpose"),
        ("https://[::ffff:127.0.0.1]/sp.pem", "special-purpose"),
        ("https://[2002:7f00:1::1]/sp.pem", "special-purpose"),  # 6to4 of 127.0.0.1
        ("https://[64:ff9b::a00:1]/sp.pem", "special-purpose"),  # NAT64 of 10.0.0.1
        ("https://localhost/sp.pem", "loopback name"),
        ("https://cert.localhost/sp.pem", "loopback name"),
    ],
)
def test_refused_x5u(url: str, match: str) -> None:
    with pytest.raises(BadIdentityInfo, match=match) as info:
        validate_x5u_url(url)
    assert info.value.sip_status == 436
    assert not isinstance(info.value, CertificateFetchError)


def test_allow_hosts_exempts_as_written() -> None:
    validate_x5u_url("https://127.0.0.1:8443/sp.pem", allow_hosts=LOOPBACK_HOSTS)
    validate_x5u_url("https://localhost/sp.pem", allow_hosts=LOOPBACK_HOSTS)
    with pytest.raises(BadIdentityInfo):
        validate_x5u_url("https://127.0.0.2/sp.pem", allow_hosts=LOOPBACK_HOSTS)
    # The allow-list does not relax the scheme or port rules.
    with pytest.raises(BadIdentityInfo, match="https"):
        validate_x5u_url("http://127.0.0.1/sp.pem", allow_hosts=LOOPBACK_HOSTS)
    with pytest.raises(BadIdentityInfo, match="port"):
        validate_x5u_url("https://127.0.0.1:8080/sp.pem", allow_hosts=LOOPBACK_HOSTS)
    validate_x5u_url(
        "https://127.0.0.1:8080/sp.pem", allow_hosts=LOOPBACK_HOSTS, allowed_ports=frozenset({8080})
    )


# -- Cache-Control / Expires -----------------------------------------------------------


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Cache-Control": "max-age=86400"}, 86400),
        ({"Cache-Control": "public, max-age=600"}, 600),
        ({"Cache-Control": 'max-age="600"'}, 600),
        ({"Cache-Control": "max-age=600, s-maxage=7200"}, 7200),
        ({"Cache-Control": "no-store"}, 0),
        ({"Cache-Control": "no-cache, max-age=600"}, 0),
        ({"Cache-Control": "max-age=abc"}, 0),
        ({"Cache-Control": "max-age=600", "Age": "100"}, 500),
        ({"Cache-Control": "public"}, None),
        ({"Expires": email.utils.formatdate(NOW + 3600, usegmt=True)}, 3600),
        (
            {
                "Expires": email.utils.formatdate(NOW + 100, usegmt=True),
                "Date": email.utils.formatdate(NOW - 500, usegmt=True),
            },
            600,
        ),
        ({"Expires": "0"}, 0),
        ({"Expires": email.utils.formatdate(NOW - 60, usegmt=True)}, 0),
        (
            {"Cache-Control": "max-age=60", "Expires": email.utils.formatdate(NOW + 3600, usegmt=True)},
            60,
        ),
    ],
)
def test_cache_lifetime(headers: dict[str, str], expected: int | None) -> None:
    assert cache_lifetime(headers, now=NOW) == expected


# -- fetching from the real certificate server ------------------------------------------


def test_fetch_from_certserver(test_pki: pki.PkiPaths) -> None:
    with running_certserver(test_pki.www_dir, test_pki) as server:
        fetcher = loopback_fetcher(test_pki, server.port)
        for host in ("127.0.0.1", "localhost"):
            fetched = fetcher.fetch(f"https://{host}:{server.port}/sp.pem")
            assert fetched.body == test_pki.chain.read_bytes()
            assert fetched.max_age == 86400


def test_loopback_refused_without_allow_list(test_pki: pki.PkiPaths) -> None:
    with running_certserver(test_pki.www_dir, test_pki) as server:
        fetcher = HttpsFetcher(allowed_ports=frozenset({server.port}), tls_ca_file=str(test_pki.root))
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(BadIdentityInfo) as info:
                fetcher.fetch(f"https://{host}:{server.port}/sp.pem")
            assert not isinstance(info.value, CertificateFetchError)


def test_name_resolving_to_private_address_is_refused(test_pki: pki.PkiPaths) -> None:
    def rebinding(host: str, port: int, timeout: float) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]

    fetcher = HttpsFetcher(resolver=rebinding, allowed_ports=frozenset({8443}))
    with pytest.raises(BadIdentityInfo, match="resolves to special-purpose address 127.0.0.1"):
        fetcher.fetch("https://certs.example.test:8443/sp.pem")


def test_connects_to_checked_address_and_verifies_original_host(test_pki: pki.PkiPaths) -> None:
    with running_certserver(test_pki.www_dir, test_pki) as server:
        lookups: list[str] = []

        def resolver(host: str, port: int, timeout: float) -> list[str]:
            lookups.append(host)
            return ["127.0.0.1"]

        fetcher = HttpsFetcher(
            resolver=resolver,
            allow_hosts=frozenset({"certs.example.test", "wrong.example.test"}),
            allowed_ports=frozenset({server.port}),
            tls_ca_file=str(test_pki.root),
        )
        fetched = fetcher.fetch(f"https://certs.example.test:{server.port}/sp.pem")
        assert fetched.body == test_pki.chain.read_bytes()
        assert lookups == ["certs.example.test"]
        # Same address, but the TLS certificate does not name this host.
        with pytest.raises(CertificateFetchError, match="TLS certificate verification failed"):
            fetcher.fetch(f"https://wrong.example.test:{server.port}/sp.pem")


def test_untrusted_tls_certificate(test_pki: pki.PkiPaths) -> None:
    with running_certserver(test_pki.www_dir, test_pki) as server:
        fetcher = HttpsFetcher(allow_hosts=LOOPBACK_HOSTS, allowed_ports=frozenset({server.port}))
        with pytest.raises(CertificateFetchError, match="TLS certificate verification failed"):
            fetcher.fetch(f"https://127.0.0.1:{server.port}/sp.pem")


def test_404_is_fetch_error(test_pki: pki.PkiPaths) -> None:
    with running_certserver(test_pki.www_dir, test_pki) as server:
        fetcher = loopback_fetcher(test_pki, server.port)
        with pytest.raises(CertificateFetchError, match="404") as info:
            fetcher.fetch(f"https://127.0.0.1:{server.port}/missing.pem")
        assert info.value.sip_status == 436


def test_connection_refused_is_fetch_error(test_pki: pki.PkiPaths) -> None:
    port = free_port()
    fetcher = loopback_fetcher(test_pki, port)
    with pytest.raises(CertificateFetchError):
        fetcher.fetch(f"https://127.0.0.1:{port}/sp.pem")


def test_unresolvable_name_is_fetch_error() -> None:
    def nxdomain(host: str, port: int, timeout: float) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(CertificateFetchError, match="does not resolve"):
        HttpsFetcher(resolver=nxdomain).fetch("https://nx.example.test/sp.pem")


def test_overlong_label_is_fetch_error() -> None:
    with pytest.raises(CertificateFetchError, match="does not resolve"):
        HttpsFetcher(timeout=0.5).fetch("https://" + "a" * 64 + ".example.test/sp.pem")


def test_slow_resolver_counts_against_the_total_timeout() -> None:
    def slow(host: str, port: int, timeout: float) -> list[str]:
        time.sleep(timeout + 0.01)
        raise TimeoutError

    started = time.monotonic()
    with pytest.raises(CertificateFetchError, match="DNS"):
        HttpsFetcher(timeout=0.2, resolver=slow).fetch("https://slow.example.test/sp.pem")
    assert time.monotonic() - started < 0.5


# -- canned HTTPS responses ------------------------------------------------------------------


class CannedServer:
    """A TLS server on 127.0.0.1 that answers every request with ``respond(conn)``."""

    def __init__(self, pki_paths: pki.PkiPaths, respond: Callable[[ssl.SSLSocket], None]) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(str(pki_paths.tls_cert), str(pki_paths.tls_key))
        self._respond = respond
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self.requests = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            with self._context.wrap_socket(conn, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                self.requests += 1
                self._respond(tls)
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._listener.close()


@pytest.fixture
def canned(test_pki: pki.PkiPaths) -> Iterator[Callable[[Callable[[ssl.SSLSocket], None]], CannedServer]]:
    servers: list[CannedServer] = []

    def start(respond: Callable[[ssl.SSLSocket], None]) -> CannedServer:
        server = CannedServer(test_pki, respond)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def reply(raw: bytes) -> Callable[[ssl.SSLSocket], None]:
    return lambda tls: tls.sendall(raw)


def test_redirect_is_not_followed(test_pki: pki.PkiPaths, canned) -> None:  # type: ignore[no-untyped-def]
    with running_certserver(test_pki.www_dir, test_pki) as target:
        location = f"https://127.0.0.1:{target.port}/sp.pem"
        server = canned(reply(
            f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
        ))
        fetcher = HttpsFetcher(
            allow_hosts=LOOPBACK_HOSTS,
            allowed_ports=frozenset({server.port, target.port}),
            tls_ca_file=str(test_pki.root),
        )
        with pytest.raises(CertificateFetchError, match="302 redirect .* not followed"):
            fetcher.fetch(f"https://127.0.0.1:{server.port}/sp.pem")
        assert server.requests == 1


def test_server_error_is_fetch_error(test_pki: pki.PkiPaths, canned) -> None:  # type: ignore[no-untyped-def]
    server = canned(reply(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"))
    with pytest.raises(CertificateFetchError, match="503"):
        loopback_fetcher(test_pki, server.port).fetch(f"https://127.0.0.1:{server.port}/sp.pem")


def test_oversize_body_by_content_length(test_pki: pki.PkiPaths, canned) -> None:  # type: ignore[no-untyped-def]
    body = b"A" * 5000
    server = canned(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + body))
    fetcher = loopback_fetcher(test_pki, server.port, max_bytes=4096)
    with pytest.raises(CertificateFetchError, match="exceeds 4096"):
        fetcher.fetch(f"https://127.0.0.1:{server.port}/sp.pem")


def test_oversize_body_without_length_stops_reading(test_pki: pki.PkiPaths, canned) -> None:  # type: ignore[no-untyped-def]
    def endless(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for _ in range(200):
            tls.sendall(b"B" * 8192)

    server = canned(endless)
    fetcher = loopback_fetcher(test_pki, server.port, max_bytes=4096)
    with pytest.raises(CertificateFetchError, match="exceeds 4096"):
        fetcher.fetch(f"https://127.0.0.1:{server.port}/sp.pem")


def test_chunked_and_close_delimited_bodies(test_pki: pki.PkiPaths, canned) -> None:  # type: ignore[no-untyped-def]
    pem = test_pki.chain.read_bytes()
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: no-store\r\n\r\n"
        + f"{len(pem[:100]):x}\r\n".encode() + pem[:100] + b"\r\n"
        + f"{len(pem[100:]):x}\r\n".encode() + pem[100:] + b"\r\n0\r\n\r\n"
    )
    server = canned(reply(chunked))
    fetched = loopback_fetcher(test_pki, server.port).fetch(f"https://127.0.0.1:{server.port}/sp.pem")
    assert fetched.body == pem and fetched.max_age == 0

    server = canned(reply(b"HTTP/1.0 200 OK\r\n\r\n" + pem))
    fetched = loopback_fetcher(test_pki, server.port).fetch(f"https://127.0.0.1:{server.port}/sp.pem")
    assert fetched.body == pem and fetched.max_age is None


def test_truncated_body_is_fetch_error(test_pki: pki.PkiPaths, canned) -> None:  # type: ignore[no-untyped-def]
    server = canned(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"))
    with pytest.raises(CertificateFetchError, match="malformed"):
        loopback_fetcher(test_pki, server.port).fetch(f"https://127.0.0.1:{server.port}/sp.pem")


def test_slow_dribble_is_bounded_by_total_timeout(test_pki: pki.PkiPaths, canned) -> None:  # type: ignore[no-untyped-def]
    def dribble(tls: ssl.SSLSocket) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"C" * 1000:
            tls.sendall(bytes([byte]))
            time.sleep(0.02)

    server = canned(dribble)
    fetcher = loopback_fetcher(test_pki, server.port, timeout=0.4)
    started = time.monotonic()
    with pytest.raises(CertificateFetchError, match="0.4 s"):
        fetcher.fetch(f"https://127.0.0.1:{server.port}/sp.pem")
    assert time.monotonic() - started < 0.4 + 0.25


def test_silent_server_is_bounded_by_total_timeout(test_pki: pki.PkiPaths) -> None:
    # Accepts TCP connections (the kernel does, from the backlog) and never speaks TLS.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = int(silent.getsockname()[1])
        fetcher = loopback_fetcher(test_pki, port, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(CertificateFetchError, match="0.3 s"):
            fetcher.fetch(f"https://127.0.0.1:{port}/sp.pem")
        assert time.monotonic() - started < 0.3 + 0.2


def test_fetcher_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="TLS CA file"):
        HttpsFetcher(tls_ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError):
        HttpsFetcher(timeout=0)
    with pytest.raises(ValueError):
        HttpsFetcher(max_bytes=0)


def test_real_system_resolver_for_localhost(test_pki: pki.PkiPaths, tmp_path: Path) -> None:
    # "localhost" goes through getaddrinfo in the bounded thread.
    from stirshaken.fetcher import _system_resolver

    assert "127.0.0.1" in _system_resolver("localhost", 443, 2.0)
