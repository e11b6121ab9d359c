"""The service's tunables, in one table.

Every setting here is a Kamailio custom config parameter in the group
``stirshaken`` (``stirshaken.NAME = value desc "..."`` at the top of
``kamailio.cfg``), so ``kamcmd cfg.set_now_int`` / ``cfg.set_now_string``
changes it on a running service.  The KEMI script reads a setting only when
the message at hand needs it, and builds expensive objects (signer, verifier,
Redis clients) keyed by the values they were built from, so a live change
takes effect on the next message.

Rules:

1. Names carry a role prefix, as Kamailio's own stirshaken module does:
   ``as_`` for the authentication (signing) side, ``vs_`` for the
   verification side, no prefix for routing and plumbing.
2. The table is the single source of truth: a test parses ``kamailio.cfg``
   and checks it declares exactly these names with these types, and the
   README table is generated from :func:`markdown_table`.
3. Relative paths are relative to the repository root (see
   :func:`resolve_path`), so the defaults work for ``make run`` from a clone.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    name: str
    kind: type  # int or str
    default: int | str
    description: str
    choices: tuple[str, ...] = ()

    def parse(self, raw: object) -> int | str:
        """Turn a raw cfg value into this setting's type, or its default when unusable."""
        if raw is None:
            return self.default
        if self.kind is int:
            try:
                return int(raw)  # type: ignore[call-overload, no-any-return]
            except (TypeError, ValueError):
                return self.default
        text = str(raw).strip()
        if self.choices and text.lower() not in self.choices:
            return self.default
        return text.lower() if self.choices else text


def _s(name: str, default: int | str, description: str, *choices: str) -> Setting:
    return Setting(
        name=name,
        kind=type(default),
        default=default,
        description=description,
        choices=tuple(choices),
    )


SETTINGS: tuple[Setting, ...] = (
    # -- routing ---------------------------------------------------------
    _s("route_group", 1, "dispatcher set id (routing group) that INVITEs are sent to"),
    _s("vendor_timeout_ms", 3000, "time a vendor has to send any reply before we fail over (ms)"),
    _s("vendor_ring_timeout_ms", 60000, "time a vendor has to answer after a provisional reply (ms)"),
    # -- authentication service (signing) --------------------------------
    _s(
        "provider",
        "local",
        "how a call gets an Identity: local (sign here), as302 (ask an external SIP 302 Authentication Service) or disabled",
        "local",
        "as302",
        "disabled",
    ),
    _s("as_key_path", "pki/sp-key.pem", "ES256 private key of our STI certificate (PEM)"),
    _s("as_cert_path", "pki/sp-cert.pem", "our STI certificate, checked against the key at load time (empty: no check)"),
    _s("as_x5u", "https://127.0.0.1:8443/sp.pem", "x5u URL published in our PASSporTs"),
    _s(
        "as_trusted_sources",
        "127.0.0.1=*",
        "trusted sources and the number blocks they own: 'SUBNET=PREFIX,PREFIX;SUBNET=*' "
        "(own numbers get A, other numbers B)",
    ),
    _s("as_other_attest", "none", "attestation for calls from any other source: C or none (do not sign)", "c", "none"),
    _s("country_code", "1", "country code used to canonicalise national numbers (orig/dest TNs)"),
    _s("freshness", 60, "freshness window in seconds: Date/iat check and identity cache lifetime"),
    _s("identity_cache_lookup", 1, "1: look the call up in the Redis identity cache before signing"),
    _s("identity_cache_prefix", "ss:id:", "Redis key prefix of the per-call identity cache"),
    _s("identity_cache_flush_ms", 20, "writes to the identity cache are batched per worker for up to this long (0: write at once)"),
    # -- external 302 services (provider as302, vs_provider vs302) ------
    _s("as302_hosts", "", "Authentication Service hosts for provider as302, tried in order: host[:port],... (port 5060 by default)"),
    _s("as302_budget_ms", 10000, "total time one call may spend asking 302 services, every host included (ms)"),
    _s("as302_host_timeout_ms", 3000, "time one 302 service host has to answer before the next is tried (ms)"),
    _s("as302_breaker_failures", 3, "consecutive failures (timeout, 5xx) after which a 302 service host is skipped"),
    _s("as302_breaker_open_s", 30, "seconds a failing 302 service host is skipped before it is tried again"),
    _s("as302_refused_action", "block", "when the Authentication Service answers 603: block (reply 603) or continue unsigned", "block", "continue"),
    _s("as302_attest_header", "", "header carrying our attestation hint on the signing request (e.g. X-Attestation; empty: none)"),
    _s("as302_orig_header", "keep", "calling number on the signing request: keep (the call's From/PAI) or pai (a P-Asserted-Identity with the canonical number)", "keep", "pai"),
    _s("vs_provider", "local", "how incoming Identity is verified: local (here) or vs302 (an external SIP 302 Verification Service)", "local", "vs302"),
    _s("vs302_hosts", "", "Verification Service hosts for vs_provider vs302, tried in order: host[:port],..."),
    _s("as_server", 0, "1: this service is a 302 STI-AS for other switches (WITH_AS302_SERVER): it signs and answers, never forwards"),
    _s("as_server_allowed", "127.0.0.1", "sources (IP or subnet, comma separated) allowed to use the 302 STI-AS"),
    _s("as_server_x_headers", 0, "1: the 302 STI-AS also sends X-Identity and X-Date (what Sippy expects)"),
    # -- verification service --------------------------------------------
    _s("vs_enabled", 1, "1: verify the Identity of every incoming INVITE"),
    _s("vs_require_identity", 0, "1: answer 428 to an INVITE without Identity"),
    _s("vs_failure_action", "continue", "on a failed verification: continue (mark and forward) or reject", "continue", "reject"),
    _s("vs_reason_header", 1, "1: add a Reason header (RFC 9410) to an INVITE forwarded after a failure"),
    _s("vs_pass_failed_identity", 0, "1: an Identity that failed verification may still be passed on to vendors"),
    _s(
        "vs_verstat_placement",
        "user",
        "where verstat goes on P-Asserted-Identity (or From): user (URI user part), header (header parameter), none",
        "user",
        "header",
        "none",
    ),
    _s("vs_trust_dir", "pki/trust", "directory of trusted STI root certificates (PEM)"),
    _s("vs_x5u_allow_hosts", "127.0.0.1", "hosts allowed in x5u URLs although loopback/private (comma separated)"),
    _s("vs_x5u_ports", "443,8443", "TCP ports allowed in x5u URLs (comma separated; ATIS-1000074: 443, 8443)"),
    _s("vs_tls_ca_file", "pki/root.pem", "extra CA file for HTTPS x5u fetches (the dev certificate server); empty: system CAs"),
    _s("vs_fetch_timeout_ms", 2000, "x5u fetch timeout (ms)"),
    _s("vs_negative_ttl", 30, "seconds a failed x5u fetch is remembered (one fetch per period, not per call)"),
    _s("vs_cert_cache_prefix", "ss:cert:", "Redis key prefix of the certificate cache"),
    # -- plumbing ----------------------------------------------------------
    _s("redis_url", "redis://127.0.0.1:6379/0", "Redis URL for the identity and certificate caches: redis://host:port/db or unix:///path.sock?db=N (empty: no Redis)"),
    _s("redis_timeout_ms", 100, "Redis connect/read timeout (ms); an outage costs at most this per retry period"),
)

BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}

GROUP = "stirshaken"

REPO_ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=64)
def resolve_path(value: str, root: Path | None = None) -> str:
    """An absolute path for a setting value; relative ones are taken from the repository root."""
    if not value:
        return ""
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = (root or REPO_ROOT) / path
    return str(path)


_PARSED: dict[tuple[str, object], int | str] = {}
"""(name, raw value) -> parsed value, per process: parsing is paid once per distinct value."""


class Settings:
    """A read-through view of the settings for one message.

    ``reader(name)`` returns the raw value (the KEMI script passes a function
    that reads ``$sel(cfg_get.stirshaken.NAME)``); each name is read at most
    once per view, so build one view per message.  This sits on the path of
    every INVITE, hence the plain dict lookups.
    """

    __slots__ = ("_reader", "_values")

    def __init__(self, reader: Callable[[str], object]) -> None:
        self._reader = reader
        self._values: dict[str, int | str] = {}

    def __getitem__(self, name: str) -> int | str:
        value = self._values.get(name)
        if value is None:
            raw = self._reader(name)
            key = (name, raw)
            value = _PARSED.get(key)
            if value is None:
                value = BY_NAME[name].parse(raw)
                if len(_PARSED) > 4096:
                    _PARSED.clear()
                _PARSED[key] = value
            self._values[name] = value
        return value

    def int(self, name: str) -> int:
        return self[name]  # type: ignore[return-value]

    def str(self, name: str) -> str:
        return self[name]  # type: ignore[return-value]

    def path(self, name: str) -> str:
        return resolve_path(self[name])  # type: ignore[arg-type]


def defaults() -> Settings:
    """A view with every default, for tests and tools."""
    return Settings(lambda name: None)


def cfg_declarations(defines: Mapping[str, str] | None = None) -> str:
    """The ``stirshaken.*`` declarations for kamailio.cfg.

    With *defines*, a setting whose name (upper-cased, prefixed ``SS_``) is in
    it gets that define as its value, so ``-A`` can override it.
    """
    lines = []
    for s in SETTINGS:
        value = f'"{s.default}"' if s.kind is str else str(s.default)
        if defines and s.name in defines:
            value = defines[s.name]
        lines.append(f'{GROUP}.{s.name} = {value} desc "{s.description}"')
    return "\n".join(lines)


def markdown_table() -> str:
    """The README table of settings."""
    rows = ["| parameter | type | default | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        kind = "int" if s.kind is int else "string"
        default = f"`{s.default}`" if s.default != "" else "(empty)"
        rows.append(f"| `{GROUP}.{s.name}` | {kind} | {default} | {s.description} |")
    return "\n".join(rows)
