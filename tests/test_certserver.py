"""stirshaken.certserver: the development STI-CR over HTTPS."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from helpers_certs import loopback_fetcher, running_certserver

from stirshaken import certserver, pki
from stirshaken.certs import TrustStore, load_pem_chain


@pytest.fixture(scope="module")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> pki.PkiPaths:
    paths = pki.make_test_pki(tmp_path_factory.mktemp("pki"))
    (paths.www_dir / "sub").mkdir()
    pki.write_certificates(
        paths.www_dir / "sub" / "nested.pem", x509.load_pem_x509_certificate(paths.cert.read_bytes())
    )
    (paths.www_dir / ".hidden.pem").write_bytes(b"secret")
    os.symlink(paths.root_key, paths.www_dir / "escape.pem")
    return paths


@pytest.fixture(scope="module")
def server(test_pki: pki.PkiPaths) -> Iterator[certserver.CertificateServer]:
    with running_certserver(test_pki.www_dir, test_pki) as running:
        yield running


def request(
    test_pki: pki.PkiPaths, server: certserver.CertificateServer, method: str, path: str
) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cafile=str(test_pki.root))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=5)
    try:
        # putrequest sends the path exactly as given, traversal attempts included.
        conn.putrequest(method, path)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_serves_chain_with_sti_headers(test_pki: pki.PkiPaths, server: certserver.CertificateServer) -> None:
    status, headers, body = request(test_pki, server, "GET", "/sp.pem")
    assert status == 200
    assert headers["content-type"] == "application/pem-certificate-chain"
    assert headers["cache-control"] == "max-age=86400"
    assert body == test_pki.chain.read_bytes()
    assert int(headers["content-length"]) == len(body)
    TrustStore.from_directory(test_pki.trust_dir).validate(load_pem_chain(body), now=int(time.time()))


def test_head_has_headers_only(test_pki: pki.PkiPaths, server: certserver.CertificateServer) -> None:
    status, headers, body = request(test_pki, server, "HEAD", "/sp.pem")
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == len(test_pki.chain.read_bytes())


def test_nested_file(test_pki: pki.PkiPaths, server: certserver.CertificateServer) -> None:
    status, _headers, _body = request(test_pki, server, "GET", "/sub/nested.pem")
    assert status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/sub",
        "/sub/",
        "/missing.pem",
        "/../root-key.pem",
        "/sub/../../root-key.pem",
        "/%2e%2e/root-key.pem",
        "/..%2froot-key.pem",
        "/sub%2f..%2f..%2froot-key.pem",
        "//etc/passwd",
        "/.hidden.pem",
        "/escape.pem",  # a symlink pointing outside the directory
        "/sp.pem%00.txt",
    ],
)
def test_everything_else_is_404(test_pki: pki.PkiPaths, server: certserver.CertificateServer, path: str) -> None:
    status, _headers, body = request(test_pki, server, "GET", path)
    assert status == 404
    assert b"PRIVATE KEY" not in body


def test_query_string_is_ignored(test_pki: pki.PkiPaths, server: certserver.CertificateServer) -> None:
    status, _headers, body = request(test_pki, server, "GET", "/sp.pem?x=1")
    assert status == 200 and body == test_pki.chain.read_bytes()


def test_other_methods_refused(test_pki: pki.PkiPaths, server: certserver.CertificateServer) -> None:
    status, _headers, _body = request(test_pki, server, "POST", "/sp.pem")
    assert status == 501


def test_stalled_handshake_does_not_block_others(test_pki: pki.PkiPaths, server: certserver.CertificateServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)):
        # This connection never sends a ClientHello; others are still served.
        started = time.monotonic()
        status, _headers, _body = request(test_pki, server, "GET", "/sp.pem")
        assert status == 200
        assert time.monotonic() - started < 2


def test_plain_http_client_gets_nothing(test_pki: pki.PkiPaths, server: certserver.CertificateServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /sp.pem HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        assert b"BEGIN CERTIFICATE" not in data
    # and the server keeps serving
    assert request(test_pki, server, "GET", "/sp.pem")[0] == 200


def test_default_tls_paths_and_fetcher_round_trip(test_pki: pki.PkiPaths) -> None:
    assert certserver.default_tls_paths(test_pki.www_dir) == (
        test_pki.tls_cert.resolve(),
        test_pki.tls_key.resolve(),
    )
    # No cert_file/key_file: the defaults next to the www directory are used.
    srv = certserver.make_server(test_pki.www_dir, port=0, quiet=True)
    thread = certserver.start_in_thread(srv)
    try:
        fetched = loopback_fetcher(test_pki, srv.port).fetch(f"https://localhost:{srv.port}/sp.pem")
        assert fetched.body == test_pki.chain.read_bytes()
        assert fetched.max_age == 86400
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        certserver.make_server(tmp_path / "nope", port=0)


def test_request_log_is_one_line(test_pki: pki.PkiPaths, capfd: pytest.CaptureFixture[str]) -> None:
    srv = certserver.make_server(test_pki.www_dir, port=0)
    thread = certserver.start_in_thread(srv)
    try:
        context = ssl.create_default_context(cafile=str(test_pki.root))
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=context, timeout=5)
        conn.request("GET", "/missing.pem")
        assert conn.getresponse().status == 404
        conn.close()
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("certserver:")]
    assert lines == ['certserver: 127.0.0.1 "GET /missing.pem HTTP/1.1" 404']
