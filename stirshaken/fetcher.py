"""Fetch x5u certificate chains over HTTPS: the real I/O adapter behind the cache.

Theory of operation. :class:`HttpsFetcher` dereferences one x5u URL with the
standard library only and enforces the SHAKEN rules on the way:

1. the URL is ``https`` on port 443 or 8443, without userinfo, query or
   fragment (ATIS-1000074 §5.3.1; ATIS-1000080) — :func:`validate_x5u_url`;
2. the host resolves only to global unicast addresses; loopback, private,
   link-local, multicast, reserved and unspecified addresses are refused
   (RFC 6890; an x5u is attacker-chosen, so this is an SSRF guard) unless the
   host, as written in the URL, is on the ``allow_hosts`` development list;
3. the connection goes to the address that was checked (no second DNS lookup
   that could be rebound), while SNI and certificate hostname verification use
   the host from the URL;
4. one deadline covers resolution, connect, TLS handshake, request and
   response: ``timeout`` is the total time a verifier can be held up;
5. redirects are not followed ("The STI-VS shall not follow HTTP redirects",
   ATIS-1000074), any status but 200 fails, and the body is capped at
   ``max_bytes``;
6. the response's cache lifetime (RFC 9111 §4.2.1: ``s-maxage``, ``max-age``,
   ``Expires``) is reported in :class:`FetchedChain` for the cache to apply
   the ATIS-1000074 floor.

Policy failures raise :class:`~stirshaken.errors.BadIdentityInfo`; network,
TLS, HTTP status, size and timeout failures raise its subclass
:class:`~stirshaken.errors.CertificateFetchError`. Both mean 436.
"""

from __future__ import annotations

import email.utils
import http.client
import io
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from stirshaken.errors import BadIdentityInfo, CertificateFetchError, ConfigurationError

#: ATIS-1000074 §5.3.1 / ATIS-1000080: the x5u uses port 443 or 8443.
X5U_PORTS: frozenset[int] = frozenset({443, 8443})

#: Room for the status line and headers on top of ``max_bytes`` of body.
_HEADER_ALLOWANCE = 16384

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int, float], list[str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchedChain:
    """The body of a 200 response to an x5u GET and how long it may be cached.

    ``max_age`` is in seconds from ``s-maxage``/``max-age``/``Expires``;
    None when the response has no caching directive, 0 for ``no-store`` or
    ``no-cache`` (the cache still applies its ATIS-1000074 floor).
    """

    body: bytes
    max_age: int | None


class ChainFetcher(Protocol):
    """What the certificate cache needs from a fetcher (tests pass fakes)."""

    def fetch(self, url: str) -> FetchedChain: ...


# -- URL and address policy --------------------------------------------------


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_special_address(address: Address) -> bool:
    """True for addresses an x5u must not reach (RFC 6890 special-purpose blocks).

    IPv6 forms that carry an IPv4 address (mapped ``::ffff:0:0/96``, 6to4
    ``2002::/16``, NAT64 ``64:ff9b::/96`` as DNS64 synthesises it on
    IPv6-only hosts) are judged by that IPv4 address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_special_address(embedded)
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def _split(url: str, allowed_ports: frozenset[int]) -> tuple[str, int, str]:
    """(host, port, path) of an acceptable x5u, or BadIdentityInfo."""
    if not url.isascii() or not url.isprintable() or " " in url:
        raise BadIdentityInfo(f"x5u {url!r} contains non-ASCII, space or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadIdentityInfo(f"x5u {url!r} is not a valid URL: {exc}") from None
    if parts.scheme.lower() != "https":
        raise BadIdentityInfo(f"x5u {url!r} must use https (ATIS-1000074 §5.3.1)")
    if "@" in parts.netloc:
        raise BadIdentityInfo(f"x5u {url!r} must not carry userinfo (ATIS-1000074 §5.3.1)")
    if "?" in url:
        raise BadIdentityInfo(f"x5u {url!r} must not carry a query (ATIS-1000074 §5.3.1)")
    if "#" in url:
        raise BadIdentityInfo(f"x5u {url!r} must not carry a fragment (ATIS-1000074 §5.3.1)")
    host = parts.hostname
    if not host:
        raise BadIdentityInfo(f"x5u {url!r} has no host")
    if port is None:
        port = 443
    if port not in allowed_ports:
        raise BadIdentityInfo(
            f"x5u {url!r} uses port {port}; only {sorted(allowed_ports)} are allowed "
            "(ATIS-1000074 §5.3.1)"
        )
    return host, port, parts.path or "/"


def _literal_address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def validate_x5u_url(
    url: str,
    *,
    allow_hosts: frozenset[str] = frozenset(),
    allowed_ports: frozenset[int] = X5U_PORTS,
) -> None:
    """Raise :class:`BadIdentityInfo` unless ``url`` is an acceptable x5u.

    ATIS-1000074 §5.3.1 / ATIS-1000080: ``https`` only; port 443 or 8443
    (443 when absent); no userinfo, query or fragment. A host written as a
    special-purpose IP literal (RFC 6890) or as ``localhost`` is refused
    unless listed, as written, in ``allow_hosts``. Names that resolve to such
    addresses are caught by :meth:`HttpsFetcher.fetch`.

    ``allowed_ports`` exists for tests and development servers on ephemeral
    ports; production keeps the default.
    """
    host, _port, _path = _split(url, allowed_ports)
    if host in allow_hosts:
        return
    address = _literal_address(host)
    if address is not None and is_special_address(address):
        raise BadIdentityInfo(f"x5u host {host} is a special-purpose address (RFC 6890)")
    if host == "localhost" or host.endswith(".localhost"):
        raise BadIdentityInfo(f"x5u host {host} is a loopback name (RFC 6761)")


# -- response parsing --------------------------------------------------------


def cache_lifetime(headers: Mapping[str, str] | http.client.HTTPMessage, *, now: float) -> int | None:
    """Seconds a response may be reused (RFC 9111 §4.2.1), or None without directives.

    ``no-store``/``no-cache`` give 0; ``s-maxage`` wins over ``max-age`` (we
    are a shared cache across workers), which wins over ``Expires`` minus
    ``Date`` (or minus ``now`` when there is no Date). An ``Age`` header is
    subtracted. An unparseable ``Expires`` means "already expired": 0.
    """
    cache_control = headers.get("Cache-Control") or ""
    directives: dict[str, str | None] = {}
    for item in cache_control.split(","):
        name, sep, value = item.strip().partition("=")
        if name:
            directives[name.strip().lower()] = value.strip().strip('"') if sep else None
    if "no-store" in directives or "no-cache" in directives:
        return 0
    lifetime: int | None = None
    for directive in ("s-maxage", "max-age"):
        seconds = directives.get(directive)
        if seconds is not None:
            try:
                lifetime = max(0, int(seconds))
            except ValueError:
                lifetime = 0  # RFC 9111 §4.2.1: invalid freshness information means stale
            break
    if lifetime is None:
        expires = headers.get("Expires")
        if expires is None:
            return None
        expires_at = _http_date(expires)
        if expires_at is None:
            return 0
        date = headers.get("Date")
        base = _http_date(date) if date else None
        lifetime = max(0, int(expires_at - (base if base is not None else now)))
    age = headers.get("Age")
    if age is not None and age.strip().isdigit():
        lifetime = max(0, lifetime - int(age.strip()))
    return lifetime


def _http_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed.timestamp()


class _BufferSocket:
    """Just enough of a socket for http.client.HTTPResponse to parse bytes we hold."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str, *args: object, **kwargs: object) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self._data))


def _response_complete(buffer: bytes) -> bool:
    """True when ``buffer`` holds a whole response, so we need not wait for EOF."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = buffer[:head_end].decode("latin-1").lower()
    status_line, _, header_block = head.partition("\r\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or fields[1] != "200":
        return True  # the status line decides; the body does not matter
    body = buffer[head_end + 4 :]
    for line in header_block.split("\r\n"):
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if name == "content-length" and value.isdigit():
            return len(body) >= int(value)
        if name == "transfer-encoding" and "chunked" in value:
            return body.endswith(b"0\r\n\r\n")
    return False


# -- the fetcher ---------------------------------------------------------------


def _system_resolver(host: str, port: int, timeout: float) -> list[str]:
    """getaddrinfo bounded by ``timeout``.

    getaddrinfo cannot be interrupted, so it runs in a daemon thread that is
    abandoned (and finishes on its own) when the deadline passes.
    """
    result: list[str] = []
    failure: list[Exception] = []
    done = threading.Event()

    def resolve() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result.extend(dict.fromkeys(str(info[4][0]) for info in infos))
        except Exception as exc:  # handed to the caller below
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=resolve, name=f"x5u-resolve-{host}", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"resolving {host} took longer than {timeout:.2f} s")
    if failure:
        raise failure[0]
    return result


class HttpsFetcher:
    """Dereference x5u URLs over HTTPS (see the module docstring for the rules).

    ``timeout`` is the total budget of one :meth:`fetch` in seconds.
    ``allow_hosts`` lists hosts (exactly as written in URLs, e.g. "127.0.0.1",
    "localhost") exempt from the special-address refusal: for tests and lab
    setups only. ``tls_ca_file`` replaces the system CAs for server
    verification. ``resolver(host, port, timeout) -> [ip, ...]`` replaces DNS
    (tests use it to simulate a name resolving to a private address).
    """

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        max_bytes: int = 65536,
        allow_hosts: frozenset[str] = frozenset(),
        tls_ca_file: str | None = None,
        allowed_ports: frozenset[int] = X5U_PORTS,
        resolver: Resolver | None = None,
        user_agent: str = "stirshaken",
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.allow_hosts = frozenset(allow_hosts)
        self.allowed_ports = frozenset(allowed_ports)
        self._resolver: Resolver = resolver if resolver is not None else _system_resolver
        self._user_agent = user_agent
        try:
            context = ssl.create_default_context(cafile=tls_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"TLS CA file {tls_ca_file}: {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._tls = context

    def fetch(self, url: str) -> FetchedChain:
        """GET ``url`` and return its body and cache lifetime, or raise (436)."""
        deadline = time.monotonic() + self.timeout
        validate_x5u_url(url, allow_hosts=self.allow_hosts, allowed_ports=self.allowed_ports)
        host, port, path = _split(url, self.allowed_ports)
        addresses = self._addresses(host, port, deadline)
        try:
            raw = self._exchange(host, port, path, addresses, deadline)
        except CertificateFetchError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise CertificateFetchError(
                f"x5u {url}: TLS certificate verification failed: {exc.verify_message}"
            ) from None
        except TimeoutError:
            raise CertificateFetchError(
                f"x5u {url}: no complete response within {self.timeout:g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise CertificateFetchError(f"x5u {url}: {exc}") from None
        return self._parse(url, raw)

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        return remaining

    def _addresses(self, host: str, port: int, deadline: float) -> list[str]:
        literal = _literal_address(host)
        if literal is not None:
            return [str(literal)]
        try:
            found = self._resolver(host, port, self._remaining(deadline))
        except TimeoutError:
            raise CertificateFetchError(
                f"x5u host {host}: no DNS answer within {self.timeout:g} s"
            ) from None
        except (OSError, ValueError) as exc:  # ValueError: IDNA, e.g. a label over 63 octets
            raise CertificateFetchError(f"x5u host {host} does not resolve: {exc}") from None
        if not found:
            raise CertificateFetchError(f"x5u host {host} does not resolve")
        if host not in self.allow_hosts:
            # Refuse when any answer is special: a mixed answer is how
            # rebinding attacks pick the internal address on a retry.
            for text in found:
                address = ipaddress.ip_address(text.split("%", 1)[0])
                if is_special_address(address):
                    raise BadIdentityInfo(
                        f"x5u host {host} resolves to special-purpose address {text} (RFC 6890)"
                    )
        return found

    def _exchange(
        self, host: str, port: int, path: str, addresses: list[str], deadline: float
    ) -> bytes:
        last_error: OSError | None = None
        for address in addresses:
            try:
                raw_socket = socket.create_connection(
                    (address, port), timeout=self._remaining(deadline)
                )
            except TimeoutError:
                raise
            except OSError as exc:
                last_error = exc
                continue
            with raw_socket:
                raw_socket.settimeout(self._remaining(deadline))
                # Connected to the checked address; SNI and hostname
                # verification still use the host from the URL.
                with self._tls.wrap_socket(raw_socket, server_hostname=host) as tls:
                    return self._request(tls, host, port, path, deadline)
        raise CertificateFetchError(f"cannot connect to {host}:{port}: {last_error}")

    def _request(
        self, tls: ssl.SSLSocket, host: str, port: int, path: str, deadline: float
    ) -> bytes:
        host_header = f"[{host}]" if ":" in host else host
        if port != 443:
            host_header = f"{host_header}:{port}"
        request = (
            f"GET {path} HTTP/1.1\r\n"
            f"Host: {host_header}\r\n"
            f"User-Agent: {self._user_agent}\r\n"
            "Accept: application/pem-certificate-chain\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        tls.settimeout(self._remaining(deadline))
        tls.sendall(request)
        limit = self.max_bytes + _HEADER_ALLOWANCE
        buffer = bytearray()
        while True:
            # Each read gets only what is left of the total budget, so a
            # server dribbling one byte at a time cannot stretch the fetch.
            tls.settimeout(self._remaining(deadline))
            chunk = tls.recv(16384)
            if not chunk:
                break
            buffer += chunk
            if len(buffer) > limit:
                raise CertificateFetchError(
                    f"x5u response from {host} exceeds {self.max_bytes} bytes"
                )
            if _response_complete(bytes(buffer)):
                break
        return bytes(buffer)

    def _parse(self, url: str, raw: bytes) -> FetchedChain:
        response = http.client.HTTPResponse(_BufferSocket(raw))  # type: ignore[arg-type]
        try:
            response.begin()
            if 300 <= response.status < 400:
                location = response.getheader("Location", "")
                raise CertificateFetchError(
                    f"x5u {url} answered {response.status} redirect to {location!r}; "
                    "redirects are not followed (ATIS-1000074)"
                )
            if response.status != 200:
                raise CertificateFetchError(
                    f"x5u {url} answered {response.status} {response.reason}"
                )
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                raise CertificateFetchError(
                    f"x5u {url} body of {length} bytes exceeds {self.max_bytes}"
                )
            body = response.read()
        except (http.client.HTTPException, ValueError) as exc:
            raise CertificateFetchError(f"x5u {url}: malformed HTTP response: {exc!r}") from None
        if len(body) > self.max_bytes:
            raise CertificateFetchError(f"x5u {url} body exceeds {self.max_bytes} bytes")
        if not body:
            raise CertificateFetchError(f"x5u {url} answered an empty body")
        return FetchedChain(body=body, max_age=cache_lifetime(response.headers, now=time.time()))
