"""SHAKEN PASSporTs: canonical encoding, strict decoding, ES256 (RFC 8225, RFC 8588).

Theory of operation:

1. A PASSporT is a JWS in compact serialisation (RFC 8225 §6; RFC 7515 §5.1):
   ``BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)``.
2. The JSON is canonical (RFC 8225 §9): no whitespace, members in
   lexicographic key order at every level. We emit exactly that and verify
   the bytes we *received*, never a re-serialisation, so a peer that is not
   canonical still verifies.
3. ES256 (RFC 7518 §3.4): ECDSA P-256 / SHA-256; the signature is the raw
   64-byte ``R || S``, not DER, base64url without padding.
4. SHAKEN (RFC 8588) adds ``ppt: "shaken"`` to the header and the claims
   ``attest`` (A, B or C) and ``origid`` (a UUID) to ``orig``, ``dest`` and
   ``iat``; every one of them is required.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .errors import InvalidIdentity, InvalidSignature, UnsupportedPassportType

ATTESTATION_LEVELS = frozenset({"A", "B", "C"})
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TN = re.compile(r"[0-9*#]{1,15}")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _signing_algorithm() -> ec.ECDSA:
    """RFC 8225 §4.2 recommends deterministic ECDSA (RFC 6979): used where OpenSSL has it.

    Besides following the recommendation, a nonce derived from key and
    message cannot repeat across forked Kamailio workers.
    """
    try:
        algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        key = ec.generate_private_key(ec.SECP256R1())
        key.sign(b"probe", algorithm)
        return algorithm
    except Exception:  # noqa: BLE001 - older OpenSSL: randomised ECDSA is still valid ES256
        return _ECDSA_SHA256


_ECDSA_SIGN = _signing_algorithm()


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2); raises InvalidIdentity."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidIdentity("PASSporT part is not base64url") from exc


def canonical_json(value: Any) -> bytes:
    """RFC 8225 §9: sorted keys at every level, no whitespace, UTF-8."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def is_uuid(value: str) -> bool:
    return _UUID.fullmatch(value) is not None


def is_tn(value: str) -> bool:
    return _TN.fullmatch(value) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Passport:
    """A decoded SHAKEN PASSporT, with the exact bytes its signature covers."""

    x5u: str
    attest: str
    orig: str
    dest: tuple[str, ...]
    iat: int
    origid: str
    header: Mapping[str, Any]  # shared between tokens with the same header: read-only
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def encode_payload(*, attest: str, dest: tuple[str, ...], iat: int, orig: str, origid: str) -> bytes:
    """Canonical SHAKEN claims, written out directly (the hot path of signing).

    Safe without a JSON encoder because every value is validated by the
    caller to be digits, a UUID or one letter: nothing needs escaping.
    The keys are in the order RFC 8225 §9 demands: attest, dest, iat, orig, origid.
    """
    tns = ",".join(f'"{tn}"' for tn in dest)
    return (
        f'{{"attest":"{attest}","dest":{{"tn":[{tns}]}},"iat":{iat},'
        f'"orig":{{"tn":"{orig}"}},"origid":"{origid}"}}'
    ).encode("ascii")


def encode_header(x5u: str) -> bytes:
    """Canonical protected header (RFC 8588 §4): alg, ppt, typ, x5u."""
    return canonical_json({"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": x5u})


def sign_es256(private_key: ec.EllipticCurvePrivateKey, signing_input: bytes) -> str:
    """ES256 over the signing input, returned as base64url(R || S) (RFC 7518 §3.4)."""
    r, s = decode_dss_signature(private_key.sign(signing_input, _ECDSA_SIGN))
    return b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def verify_es256(public_key: ec.EllipticCurvePublicKey, passport: Passport) -> None:
    """Check the raw R || S signature over the received bytes; raise InvalidSignature."""
    sig = passport.signature
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public_key.verify(der, passport.signing_input, _ECDSA_SHA256)
    except _CryptoInvalidSignature as exc:
        raise InvalidSignature("ES256 signature does not verify") from exc


def decode_passport(token: str) -> Passport:
    """Decode and check a full-form SHAKEN PASSporT, without checking its signature.

    Raises InvalidIdentity, naming the first rule broken:
    RFC 8225 §4 (typ "passport", alg ES256, x5u), RFC 8588 §4-§6 (ppt
    "shaken", attest A/B/C, origid), RFC 8225 §5 (iat an integer, orig one
    tn string, dest an array of tn strings).
    """
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidIdentity("PASSporT is not header.payload.signature")
    header_b64, payload_b64, signature_b64 = parts
    header = _HEADER_CACHE.get(header_b64)
    if header is None:
        header = _checked_header(header_b64)
    claims = _json_object(b64url_decode(payload_b64), "payload")
    signature = b64url_decode(signature_b64)
    if len(signature) != 64:
        raise InvalidIdentity("ES256 signature is not 64 bytes of R || S (RFC 7518 §3.4)")

    x5u = header["x5u"]
    attest = claims.get("attest")
    if attest not in ATTESTATION_LEVELS:
        raise InvalidIdentity("attest is not A, B or C (RFC 8588 §5.1)")
    origid = claims.get("origid")
    if not isinstance(origid, str) or not origid:
        raise InvalidIdentity("origid missing (RFC 8588 §5.2)")
    iat = claims.get("iat")
    if type(iat) is not int:
        raise InvalidIdentity("iat is not an integer NumericDate (RFC 8225 §5.1.1)")
    orig = claims.get("orig")
    if not isinstance(orig, dict) or not isinstance(orig.get("tn"), str) or not orig["tn"]:
        raise InvalidIdentity("orig is not {\"tn\": \"...\"} (RFC 8225 §5.2.1)")
    dest = claims.get("dest")
    dest_tns = dest.get("tn") if isinstance(dest, dict) else None
    if (
        not isinstance(dest_tns, list)
        or not dest_tns
        or not all(isinstance(tn, str) and tn for tn in dest_tns)
    ):
        raise InvalidIdentity("dest is not {\"tn\": [\"...\"]} (RFC 8225 §5.2.1)")

    return Passport(
        x5u=x5u,
        attest=attest,
        orig=orig["tn"],
        dest=tuple(dest_tns),
        iat=iat,
        origid=origid,
        header=header,
        claims=claims,
        signing_input=token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii"),
        signature=signature,
    )


# A signer uses one protected header for every call: a verifier sees the
# same few, so each is decoded and checked once.
_HEADER_CACHE: dict[str, Mapping[str, Any]] = {}
_HEADER_CACHE_SIZE = 256


def _checked_header(header_b64: str) -> Mapping[str, Any]:
    header = _json_object(b64url_decode(header_b64), "header")
    if header.get("alg") != "ES256":
        raise InvalidIdentity("PASSporT alg is not ES256 (RFC 8588 §4)")
    if header.get("typ") != "passport":
        raise InvalidIdentity('PASSporT typ is not "passport" (RFC 8225 §4.1)')
    if header.get("ppt") != "shaken":
        raise UnsupportedPassportType(f"PASSporT ppt {header.get('ppt')!r} is not supported")
    x5u = header.get("x5u")
    if not isinstance(x5u, str) or not x5u:
        raise InvalidIdentity("PASSporT has no x5u (RFC 8225 §4.3)")
    if len(_HEADER_CACHE) >= _HEADER_CACHE_SIZE:
        _HEADER_CACHE.clear()
    frozen = MappingProxyType(header)
    _HEADER_CACHE[header_b64] = frozen
    return frozen


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidIdentity(f"PASSporT {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise InvalidIdentity(f"PASSporT {what} is not a JSON object")
    return value
