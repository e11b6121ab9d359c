"""Put a verstat value on a P-Asserted-Identity or From header value.

3GPP TS 24.229 §7.2A.20 defines ``verstat`` as a tel-URI parameter, so its
standard place is inside the user part of the URI that carries the verified
number (standards.md §5.3)::

    <sip:+12155550121;verstat=TN-Validation-Passed@example.net;user=phone>
    <tel:+12155550121;verstat=TN-Validation-Passed>

Some networks expect it as a header parameter after ``>`` instead::

    <sip:+12155550121@example.net;user=phone>;verstat=TN-Validation-Passed

Rules:

1. Any verstat already present (from upstream) is removed first: only our
   verdict is ever forwarded.
2. An addr-spec without ``<>`` is wrapped in ``<>`` so that a parameter we
   add to the URI is not read as a header parameter.
3. A URI without a user part gets the header-parameter form.
4. Placement ``none`` returns the value unchanged.
"""

from __future__ import annotations

import re

PLACEMENTS = ("user", "header", "none")

_USER_VERSTAT = re.compile(r";verstat=[^;@?>]*", re.IGNORECASE)
_PARAM_VERSTAT = re.compile(r";\s*verstat\s*=\s*[^;]*", re.IGNORECASE)


def _split(value: str) -> tuple[str, str, str]:
    """(display-name part incl. trailing space, URI, header params incl. leading ';')."""
    start = value.find("<")
    if start >= 0:
        end = value.find(">", start)
        if end < 0:
            raise ValueError("unterminated <")
        return value[:start], value[start + 1 : end], value[end + 1 :]
    text = value.strip()
    semi = text.find(";")
    if semi < 0:
        return "", text, ""
    return "", text[:semi], text[semi:]


def _add_to_user(uri: str, param: str) -> str | None:
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return None
    scheme_l = scheme.strip().lower()
    if scheme_l == "tel":
        # tel:+1215...;params  -> the whole thing is the "user" number
        qmark = rest.find("?")
        if qmark >= 0:
            return f"{scheme}:{rest[:qmark]}{param}{rest[qmark:]}"
        return f"{scheme}:{rest}{param}"
    if scheme_l not in ("sip", "sips"):
        return None
    at = rest.find("@")
    if at <= 0:
        return None
    user = rest[:at]
    password = ""
    if ":" in user:  # user:password@host
        user, _, pw = user.partition(":")
        password = ":" + pw
    return f"{scheme}:{user}{param}{password}{rest[at:]}"


def with_verstat(value: str, verstat: str, placement: str = "user") -> str:
    """The header value with ``verstat=<verstat>`` placed as configured."""
    if placement == "none":
        return value
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown verstat placement {placement!r}")
    display, uri, params = _split(value)
    if "verstat" in value.lower():  # rare: only then pay for the regexes
        uri = _USER_VERSTAT.sub("", uri)
        params = _PARAM_VERSTAT.sub("", params)
    param = f";verstat={verstat}"
    if placement == "user":
        placed = _add_to_user(uri, param)
        if placed is not None:
            return f"{display}<{placed}>{params}"
    return f"{display}<{uri}>{params}{param}"
