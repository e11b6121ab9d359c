"""Attestation level for local signing, from configured trusted sources.

Configuration (``stirshaken.as_trusted_sources``) is a list of trusted
sources, each an IP address or subnet with the number blocks it owns::

    127.0.0.1=*; 192.0.2.0/24=1215555,1267; 2001:db8::/32=44

Rules (ATIS-1000074 §5.2.3 attestation levels, decided by our local policy):

1. A call from a trusted source whose calling number lies in one of that
   source's blocks (prefix match on the canonical number; ``*`` = every
   number) gets **A**.
2. A call from a trusted source with any other calling number gets **B**.
3. A call from anywhere else gets ``as_other_attest``: **C**, or ``None``
   (do not sign).
4. When several entries match the source, the one granting A wins.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .errors import ConfigurationError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustedSource:
    network: IPNetwork
    prefixes: tuple[str, ...]
    """Canonical number prefixes; empty means every number."""

    def owns(self, tn: str) -> bool:
        return not self.prefixes or any(tn.startswith(p) for p in self.prefixes)


def _digits(prefix: str) -> str:
    digits = "".join(ch for ch in prefix if ch.isdigit())
    if not digits or any(ch not in "0123456789+-.() " for ch in prefix):
        raise ConfigurationError(f"not a number prefix: {prefix!r}")
    return digits


def parse_trusted_sources(text: str) -> tuple[TrustedSource, ...]:
    """Parse ``SUBNET=PREFIX,PREFIX;SUBNET=*``; raises ConfigurationError."""
    sources = []
    for item in text.replace("\n", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        net_text, _, blocks_text = item.partition("=")
        try:
            network = ipaddress.ip_network(net_text.strip(), strict=False)
        except ValueError as exc:
            raise ConfigurationError(f"trusted source {net_text.strip()!r}: {exc}") from None
        blocks = [b.strip() for b in blocks_text.split(",") if b.strip()]
        prefixes = () if not blocks or "*" in blocks else tuple(_digits(b) for b in blocks)
        sources.append(TrustedSource(network=network, prefixes=prefixes))
    return tuple(sources)


class AttestationPolicy:
    """Decides A/B/C (or no signing) for a source address and calling number."""

    __slots__ = ("sources", "other", "_by_address")

    def __init__(self, sources: tuple[TrustedSource, ...], *, other: str | None) -> None:
        if other is not None and other != "C":
            raise ConfigurationError(f"attestation for other sources must be C or none, got {other!r}")
        self.sources = sources
        self.other = other
        # source address text -> the trusted sources it belongs to (a proxy sees few sources)
        self._by_address: dict[str, tuple[TrustedSource, ...]] = {}

    @classmethod
    def from_config(cls, sources: str, other: str) -> AttestationPolicy:
        other_level = other.strip().upper()
        return cls(
            parse_trusted_sources(sources),
            other=None if other_level in ("", "NONE") else other_level,
        )

    def attest(self, source_ip: str, orig_tn: str) -> str | None:
        """A, B, C, or None when this call must not be signed."""
        matching = self._by_address.get(source_ip)
        if matching is None:
            matching = self._matching(source_ip)
            if len(self._by_address) > 4096:
                self._by_address.clear()
            self._by_address[source_ip] = matching
        if not matching:
            return self.other
        return "A" if any(source.owns(orig_tn) for source in matching) else "B"

    def _matching(self, source_ip: str) -> tuple[TrustedSource, ...]:
        try:
            address = ipaddress.ip_address(source_ip.strip("[]"))
        except ValueError:
            return ()
        return tuple(
            source
            for source in self.sources
            if address.version == source.network.version and address in source.network
        )
