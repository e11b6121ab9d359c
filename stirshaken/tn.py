"""Telephone numbers as PASSporT wants them (RFC 8224 §8.3, RFC 8225 §5.2.1.1).

Theory of operation: the signer and the verifier must reduce the numbers
they see in SIP (From, P-Asserted-Identity, To, Request-URI) to the same
string, or a valid call fails verification. RFC 8224 §8.3:

1. The user part is a telephone number when the URI is a tel URI, carries
   ``user=phone``, or starts with ``+``; otherwise local policy decides
   (here: it is one when nothing but digits and visual separators remain).
2. Drop the leading ``+`` and every visual separator ("-", ".", "(", ")",
   spaces); keep digits, ``#`` and ``*``.
3. A number that is not already E.164 "SHOULD" be made so by local policy:
   international prefixes (00, and 011 in the NANP) are stripped, national
   numbers get the configured country code (the NANP's 10-digit form gets a
   leading 1; elsewhere the trunk prefix 0 is replaced by the country code).
4. The result is ASCII digits (and ``#``/``*``), at most 15 digits, no ``+``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_VISUAL_SEPARATORS = str.maketrans("", "", "-.() \t")
_TN_CHARS = re.compile(r"[0-9*#]{1,15}")
_DIGITS = re.compile(r"[0-9]+")


class InvalidNumber(ValueError):
    """The value is not a telephone number that can be canonicalised."""


def canonical_tn(value: str, country_code: str = "") -> str:
    """Return the RFC 8224 §8.3 canonical form of one telephone number.

    ``country_code`` (digits, e.g. "1" or "44") turns national numbers into
    E.164; leave it empty to accept only numbers that are already global.
    Raises InvalidNumber when nothing valid remains.
    """
    number = value.strip().translate(_VISUAL_SEPARATORS)
    if number.startswith("+"):
        number = number[1:]
    elif country_code and _DIGITS.fullmatch(number):
        number = _to_e164(number, country_code)
    if not _TN_CHARS.fullmatch(number):
        raise InvalidNumber(f"not a telephone number: {value!r}")
    return number


def _to_e164(number: str, country_code: str) -> str:
    """Step 3 of RFC 8224 §8.3: local policy for numbers without a "+"."""
    if country_code == "1":
        if number.startswith("011"):
            return number[3:]
        if len(number) == 10:
            return "1" + number
        return number
    if number.startswith("00"):
        return number[2:]
    if number.startswith("0"):
        return country_code + number[1:]
    return number


def canonical_or_raw(tn: str, country_code: str = "") -> str:
    """canonical_tn, or the value unchanged when it is not a number.

    For comparing a PASSporT's claims with the call: a claim that is not a
    number then simply does not match (RFC 8224 §8.3: both sides alike).
    """
    try:
        return canonical_tn(tn, country_code)
    except InvalidNumber:
        return tn


def tn_from_uri(uri: str, country_code: str = "") -> str | None:
    """Canonical number in a SIP, SIPS or tel URI, or None when it holds none.

    Accepts a bare URI, a name-addr (``"Alice" <sip:...>;tag=x``) and the
    user parameters that real traffic carries inside the user part
    (``sip:+12155550121;verstat=TN-Validation-Passed@host``).
    """
    addr = uri.strip()
    if "<" in addr:
        start = addr.find("<")
        end = addr.find(">", start)
        if end < 0:
            return None
        addr = addr[start + 1 : end]
    scheme, sep, rest = addr.partition(":")
    if not sep:
        return None
    scheme = scheme.strip().lower()
    if scheme == "tel":
        user = rest.split(";", 1)[0]
        explicit = True
    elif scheme in ("sip", "sips"):
        user, at, hostpart = rest.partition("@")
        if not at:
            return None
        explicit = ";user=phone" in hostpart.lower().replace(" ", "")
        user = user.split(":", 1)[0].split(";", 1)[0]
    else:
        return None
    user = unquote(user).strip()
    explicit = explicit or user.startswith("+")
    if not explicit and not _DIGITS.fullmatch(user.translate(_VISUAL_SEPARATORS)):
        return None
    try:
        return canonical_tn(user, country_code)
    except InvalidNumber:
        return None
