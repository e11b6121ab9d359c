"""A development/test HTTPS server for x5u certificate chains.

It plays the STI-CR (certificate repository): ``GET /sp.pem`` answers the file
``<directory>/sp.pem`` as ``application/pem-certificate-chain`` (ATIS-1000080)
with ``Cache-Control: max-age=86400`` (an STI-CR sends a caching directive;
ATIS-1000074 caches for 24 h). Everything else is 404: no directory listings,
no hidden files, and no path can leave the directory (``..`` segments,
encoded slashes and symlinks pointing outside are refused).

TLS is handled per connection in the handler thread, so a client that
connects and never completes a handshake holds up only its own thread.
Not meant for production: there is no rate limiting.

Defaults for the CLI (``stirshaken serve-certs --dir DIR``): the certificate
and key default to ``DIR/../tls-cert.pem`` and ``DIR/../tls-key.pem``, which is
where :func:`stirshaken.pki.make_test_pki` writes them when DIR is its
``www/`` directory. See :func:`default_tls_paths`.
"""

from __future__ import annotations

import re
import ssl
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import socket
from typing import Any
from urllib.parse import unquote, urlsplit

CONTENT_TYPE = "application/pem-certificate-chain"
CACHE_CONTROL = "max-age=86400"

#: One path segment we serve: no leading dot, no separators, nothing exotic.
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")

#: Seconds a connection may stay idle (handshake or request) before it is dropped.
_CONNECTION_TIMEOUT = 10.0


def default_tls_paths(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) used when none is given: ``DIR/../tls-cert.pem``, ``DIR/../tls-key.pem``."""
    parent = Path(directory).resolve().parent
    return parent / "tls-cert.pem", parent / "tls-key.pem"


class CertificateServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that wraps each accepted connection in TLS."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        directory: Path,
        tls: ssl.SSLContext,
        *,
        quiet: bool = False,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.tls = tls
        self.quiet = quiet
        super().__init__(address, _ChainHandler)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server_address[1])

    def get_request(self) -> tuple[socket, Any]:
        sock, address = self.socket.accept()
        sock.settimeout(_CONNECTION_TIMEOUT)
        # The handshake runs later, in the handler thread (see module docstring).
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake or a dropped client is routine: one line, no traceback.
        error = sys.exc_info()[1]
        if not self.quiet:
            sys.stderr.write(f"certserver: {client_address[0]} connection error: {error}\n")


class _ChainHandler(BaseHTTPRequestHandler):
    server: CertificateServer
    server_version = "stirshaken-certserver"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.request.do_handshake()

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _resolve(self) -> Path | None:
        """The file the request path names inside the directory, or None."""
        raw_path = urlsplit(self.path).path
        segments = raw_path.split("/")[1:] if raw_path.startswith("/") else []
        if not segments:
            return None
        names = [unquote(segment) for segment in segments]
        # Match the decoded segments: "%2e%2e" and "%2f" cannot sneak through.
        if not all(_SEGMENT.fullmatch(name) for name in names):
            return None
        candidate = self.server.directory.joinpath(*names).resolve()
        if not candidate.is_relative_to(self.server.directory) or not candidate.is_file():
            return None
        return candidate

    def _serve(self, *, send_body: bool) -> None:
        target = self._resolve()
        if target is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        try:
            body = target.read_bytes()
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Cache-Control", CACHE_CONTROL)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            sys.stderr.write(f"certserver: {self.client_address[0]} {format % args}\n")

    def log_error(self, format: str, *args: Any) -> None:
        # send_error() also logs the request line through log_request(); one line is enough.
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.server.quiet:
            status = code.value if isinstance(code, HTTPStatus) else code
            sys.stderr.write(
                f"certserver: {self.client_address[0]} \"{self.requestline}\" {status}\n"
            )


def make_server(
    directory: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    quiet: bool = False,
) -> CertificateServer:
    """A bound, not yet serving, certificate server.

    ``port=0`` picks a free port (read it from ``server.port``). Run it with
    ``threading.Thread(target=server.serve_forever)`` and stop it with
    ``server.shutdown(); server.server_close()``. Missing ``cert_file`` /
    ``key_file`` default to :func:`default_tls_paths`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"certificate directory {directory} does not exist")
    default_cert, default_key = default_tls_paths(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(
        str(cert_file if cert_file is not None else default_cert),
        str(key_file if key_file is not None else default_key),
    )
    return CertificateServer((host, port), directory, context, quiet=quiet)


def serve(
    directory: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> None:
    """Serve ``directory`` over HTTPS until interrupted (blocking)."""
    server = make_server(directory, host=host, port=port, cert_file=cert_file, key_file=key_file)
    sys.stderr.write(
        f"certserver: serving {server.directory} on https://{host}:{server.port}/\n"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def start_in_thread(server: CertificateServer, *, poll_interval: float = 0.05) -> threading.Thread:
    """Run ``server.serve_forever`` in a daemon thread (tests); stop with ``server.shutdown()``.

    ``poll_interval`` bounds how long ``shutdown()`` waits.
    """
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": poll_interval},
        name="certserver",
        daemon=True,
    )
    thread.start()
    return thread
