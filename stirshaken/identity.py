"""The SIP Identity header (RFC 8224 §4), parsed the way real peers send it.

Grammar (RFC 8224 §4, with errata 6499 for the base64url alphabet)::

    Identity = "Identity" HCOLON signed-identity-digest SEMI ident-info
               *( SEMI ident-info-params )
    ident-info = "info" EQUAL ident-info-uri      ; mandatory
    ident-info-uri = LAQUOT absoluteURI RAQUOT
    ident-info-params = ident-info-alg / ident-type / ident-info-extension

What peers actually send, and what this parser therefore accepts: ``ppt``
quoted (Sansay) or bare, ``alg`` missing (Sippy), parameters in any order,
whitespace around ``;`` and ``=``, several values joined by commas into one
header. What it refuses, each with its RFC 8224 §6.2.2 answer: a missing
``info`` (436), an ``alg`` other than ES256 (438), the compact form ``..sig``
(438: ATIS-1000074 §5.3.3 makes SHAKEN use the full form), duplicate
parameters, oversized values and anything that is not three base64url parts
(438). An Identity whose ``ppt`` is not ``shaken`` is not an error but
*unsupported*: RFC 8224 §6.2 skips it, and 428 applies only when no
supported Identity is left.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import BadIdentityInfo, InvalidIdentity

#: Largest Identity value we look at. A SHAKEN PASSporT with a long x5u is
#: about 700 bytes; anything above this is hostile or broken.
MAX_IDENTITY_LENGTH = 4096

SUPPORTED_PPT = "shaken"

_B64URL_PART = r"[A-Za-z0-9_-]*"
_FULL_FORM = re.compile(rf"{_B64URL_PART}\.{_B64URL_PART}\.{_B64URL_PART}")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-.!%*+`'~]+")
# What nearly every peer sends, parsed without the general parameter loop.
_CANONICAL_PARAMS = re.compile(r"info=<([^<>;\s]+)>;alg=ES256;ppt=shaken")


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityHeader:
    """One parsed Identity value: the PASSporT token and its parameters.

    ``ppt`` is None when the header did not name one (the PASSporT's own
    header then decides). ``params`` keeps every parameter, lower-cased
    names, unquoted values, in the order received.
    """

    token: str
    info: str
    alg: str | None
    ppt: str | None
    params: tuple[tuple[str, str], ...]

    @property
    def supported(self) -> bool:
        """False when the header names a ppt other than shaken (RFC 8224 §6.2)."""
        return self.ppt is None or self.ppt == SUPPORTED_PPT


def format_identity(token: str, x5u: str) -> str:
    """The full form every SHAKEN peer emits: ``<jws>;info=<x5u>;alg=ES256;ppt=shaken``."""
    return f"{token};info=<{x5u}>;alg=ES256;ppt={SUPPORTED_PPT}"


def split_identity_values(values: Iterable[str]) -> list[str]:
    """Every Identity value in the given header bodies, comma-joined ones split.

    RFC 3261 §7.3.1 lets repeated headers be joined with commas; a comma
    inside ``<...>`` or a quoted string belongs to the value.
    """
    found: list[str] = []
    for body in values:
        if "," not in body:
            if body.strip():
                found.append(body.strip())
            continue
        depth_angle = 0
        quoted = False
        start = 0
        for index, char in enumerate(body):
            if char == '"':
                quoted = not quoted
            elif quoted:
                continue
            elif char == "<":
                depth_angle += 1
            elif char == ">" and depth_angle:
                depth_angle -= 1
            elif char == "," and not depth_angle:
                part = body[start:index].strip()
                if part:
                    found.append(part)
                start = index + 1
        part = body[start:].strip()
        if part:
            found.append(part)
    return found


def parse_identity(value: str) -> IdentityHeader:
    """Parse one Identity value; raise InvalidIdentity or BadIdentityInfo."""
    if len(value) > MAX_IDENTITY_LENGTH:
        raise InvalidIdentity(f"Identity value longer than {MAX_IDENTITY_LENGTH} bytes")
    token, _, rest = value.strip().partition(";")
    token = token.strip()
    if token.startswith(".."):
        raise InvalidIdentity(
            "compact form PASSporT: SHAKEN requires the full form (ATIS-1000074 §5.3.3)"
        )
    if not _FULL_FORM.fullmatch(token):
        raise InvalidIdentity("Identity is not a header.payload.signature base64url token")
    canonical = _CANONICAL_PARAMS.fullmatch(rest)
    if canonical is not None:
        info = canonical.group(1)
        return IdentityHeader(
            token=token,
            info=info,
            alg="ES256",
            ppt=SUPPORTED_PPT,
            params=(("info", f"<{info}>"), ("alg", "ES256"), ("ppt", SUPPORTED_PPT)),
        )
    params = _parse_params(rest)
    names = [name for name, _ in params]
    if len(set(names)) != len(names):
        raise InvalidIdentity("duplicate Identity parameter")
    by_name = dict(params)
    info = by_name.get("info")
    if info is None:
        raise BadIdentityInfo("Identity has no info parameter (RFC 8224 §4)")
    if info.startswith("<") and info.endswith(">"):
        info = info[1:-1].strip()
    if not info:
        raise BadIdentityInfo("Identity info parameter is empty")
    alg = by_name.get("alg")
    if alg is not None and alg != "ES256":
        raise InvalidIdentity(f"Identity alg {alg!r} is not ES256 (RFC 8588)")
    return IdentityHeader(token=token, info=info, alg=alg, ppt=by_name.get("ppt"), params=params)


def _parse_params(text: str) -> tuple[tuple[str, str], ...]:
    """``;name=value`` pairs; values may be ``<uri>``, quoted strings or tokens."""
    params: list[tuple[str, str]] = []
    rest = text
    while rest.strip():
        name, eq, rest = rest.partition("=")
        name = name.strip().lower()
        if not eq or not _TOKEN_CHARS.fullmatch(name):
            raise InvalidIdentity(f"malformed Identity parameter near {name[:40]!r}")
        rest = rest.lstrip()
        if rest.startswith("<"):
            end = rest.find(">")
            if end < 0:
                raise InvalidIdentity("unterminated <...> in Identity parameter")
            val, rest = rest[: end + 1], rest[end + 1 :]
        elif rest.startswith('"'):
            end = rest.find('"', 1)
            if end < 0:
                raise InvalidIdentity("unterminated quoted Identity parameter")
            val, rest = rest[1:end], rest[end + 1 :]
        else:
            val, _, after = rest.partition(";")
            val = val.strip()
            rest = ";" + after if _ else ""
            if not val or not _TOKEN_CHARS.fullmatch(val):
                raise InvalidIdentity(f"malformed value of Identity parameter {name!r}")
        params.append((name, val))
        rest = rest.lstrip()
        if rest:
            if not rest.startswith(";"):
                raise InvalidIdentity(f"junk after Identity parameter {name!r}")
            rest = rest[1:]
    return tuple(params)
