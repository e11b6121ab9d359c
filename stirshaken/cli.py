"""``stirshaken``: make a test PKI, sign, verify, decode, serve certificates.

Exit codes: 0 success (for ``verify``: TN-Validation-Passed), 1 the
operation ran and failed (verification failed, decode found problems,
signing refused), 2 usage or configuration errors. Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import StirShakenError, VerificationError
from .tn import InvalidNumber, canonical_tn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments or unreadable files: exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except UsageError as exc:
        print(f"stirshaken {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StirShakenError as exc:
        print(f"stirshaken {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE if not isinstance(exc, VerificationError) else EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stirshaken", description="STIR/SHAKEN PASSporT signing and verification."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pki = commands.add_parser("pki", help="make a test STI PKI (root, intermediate, leaf, TLS)")
    pki.add_argument("--out", required=True, type=Path, help="directory to write into")
    pki.add_argument("--spc", default="1001", help="service provider code in the TNAuthList")
    pki.set_defaults(handler=_cmd_pki)

    sign = commands.add_parser("sign", help="print an Identity header value")
    sign.add_argument("--key", required=True, type=Path, help="EC P-256 private key (PEM)")
    sign.add_argument("--x5u", required=True, help="https URL of the certificate chain")
    sign.add_argument("--cert", type=Path, help="certificate the key must match (optional)")
    sign.add_argument("--orig", required=True, help="calling number")
    sign.add_argument("--dest", required=True, action="append", help="called number (repeatable)")
    sign.add_argument("--attest", required=True, choices=("A", "B", "C"))
    sign.add_argument("--origid", help="origination identifier (UUID); random when absent")
    sign.add_argument("--iat", type=int, help="issued-at, seconds since the epoch; now when absent")
    sign.add_argument("--country-code", default="", help="country code for national numbers")
    sign.add_argument("--date", action="store_true", help="also print the matching Date header")
    sign.set_defaults(handler=_cmd_sign)

    verify = commands.add_parser("verify", help="verify an Identity header value")
    verify.add_argument("--identity", required=True, action="append", help="Identity value (repeatable)")
    source = verify.add_mutually_exclusive_group()
    source.add_argument("--pubkey", type=Path, help="check the signature with this public key (PEM)")
    source.add_argument("--cert", type=Path, help="certificate chain (PEM) to use instead of fetching x5u")
    verify.add_argument("--trust", type=Path, help="directory of trusted root certificates (PEM)")
    verify.add_argument("--orig", help="calling number the PASSporT must carry")
    verify.add_argument("--dest", action="append", help="called number the PASSporT must carry")
    verify.add_argument("--date", help="the request's Date header, checked for freshness too")
    verify.add_argument("--now", type=int, help="verify as of this time (seconds since the epoch)")
    verify.add_argument("--max-age", type=int, default=60, help="freshness window in seconds (60)")
    verify.add_argument("--country-code", default="", help="country code for national numbers")
    verify.add_argument("--allow-host", action="append", default=[], help="x5u host allowed despite being loopback/private (tests)")
    verify.add_argument("--allow-port", action="append", type=int, default=[], help="x5u port allowed besides 443 and 8443 (tests)")
    verify.add_argument("--tls-ca", type=Path, help="CA file for the x5u server's TLS certificate")
    verify.add_argument("--timeout", type=float, default=2.0, help="x5u fetch timeout in seconds (2)")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    verify.set_defaults(handler=_cmd_verify)

    decode = commands.add_parser("decode", help="show an Identity's header and claims, and what is wrong")
    decode.add_argument("value", help="Identity header value or bare PASSporT")
    decode.add_argument("--now", type=int, help="judge freshness as of this time")
    decode.set_defaults(handler=_cmd_decode)

    serve = commands.add_parser("serve-certs", help="serve certificate chains over HTTPS (development)")
    serve.add_argument("--dir", required=True, type=Path, help="directory of chain files")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--cert", type=Path, help="TLS certificate (default: DIR/../tls-cert.pem)")
    serve.add_argument("--key", type=Path, help="TLS key (default: DIR/../tls-key.pem)")
    serve.set_defaults(handler=_cmd_serve_certs)
    return parser


def _tn(value: str, country_code: str, what: str) -> str:
    try:
        return canonical_tn(value, country_code)
    except InvalidNumber as exc:
        raise UsageError(f"{what}: {exc}") from exc


def _cmd_pki(args: argparse.Namespace) -> int:
    from .pki import make_test_pki

    paths = make_test_pki(args.out, spc=args.spc)
    print(f"trust directory: {paths.trust_dir}")
    print(f"signing key:     {paths.key}")
    print(f"certificate:     {paths.cert}")
    print(f"x5u chain file:  {paths.chain}")
    print(f"TLS cert/key:    {paths.tls_cert} {paths.tls_key}")
    return EXIT_OK


def _cmd_sign(args: argparse.Namespace) -> int:
    from .signer import Signer

    for path in (args.key, args.cert):
        if path is not None and not path.is_file():
            raise UsageError(f"no such file: {path}")
    signer = Signer.from_files(key_path=args.key, x5u=args.x5u, cert_path=args.cert)
    signed = signer.sign(
        orig=_tn(args.orig, args.country_code, "--orig"),
        dest=[_tn(tn, args.country_code, "--dest") for tn in args.dest],
        attest=args.attest,
        origid=args.origid,
        iat=args.iat,
    )
    print(signed.identity)
    if args.date:
        print(signed.date)
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verifier import Verifier

    now = args.now if args.now is not None else int(time.time())
    if args.max_age <= 0:
        raise UsageError("--max-age must be positive")
    if (args.orig is None) != (args.dest is None):
        raise UsageError("--orig and --dest go together")
    verifier = Verifier(
        certificates=_certificate_source(args),
        max_age=args.max_age,
        require_date=args.date is not None,
        country_code=args.country_code,
        clock=lambda: now,
    )
    verdict = verifier.verify(
        args.identity,
        date=args.date,
        orig=None if args.orig is None else _tn(args.orig, args.country_code, "--orig"),
        dest=None if args.dest is None else [_tn(tn, args.country_code, "--dest") for tn in args.dest],
    )
    if args.json:
        print(json.dumps(_verdict_json(verdict), sort_keys=True))
    else:
        print(f"{verdict.verstat}: {verdict.sip_status} {verdict.reason} ({verdict.detail})")
        if verdict.passed:
            print(f"attest {verdict.attest}, orig {verdict.orig}, dest {','.join(verdict.dest)}, origid {verdict.origid}")
    return EXIT_OK if verdict.passed else EXIT_FAILED


def _verdict_json(verdict: Any) -> dict[str, Any]:
    return {
        "verstat": verdict.verstat,
        "passed": verdict.passed,
        "status": verdict.sip_status,
        "reason": verdict.reason,
        "detail": verdict.detail,
        "attest": verdict.attest,
        "origid": verdict.origid,
        "orig": verdict.orig,
        "dest": list(verdict.dest),
        "iat": verdict.iat,
        "x5u": verdict.x5u,
        "reason_header": verdict.reason_header,
    }


def _certificate_source(args: argparse.Namespace) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from .verifier import StaticKeySource

    if args.pubkey is not None:
        try:
            key = load_pem_public_key(args.pubkey.read_bytes())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--pubkey {args.pubkey}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise UsageError(f"--pubkey {args.pubkey}: not an EC public key")
        return StaticKeySource(key)

    from .certs import TrustStore

    if args.trust is None:
        raise UsageError("--cert and x5u fetching need --trust DIR (or use --pubkey)")
    trust = TrustStore.from_directory(args.trust)
    if args.cert is not None:
        try:
            data = args.cert.read_bytes()
        except OSError as exc:
            raise UsageError(f"--cert {args.cert}: {exc}") from exc
        return _StaticChainSource(data, trust)

    from .cache import CertificateCache
    from .fetcher import X5U_PORTS, HttpsFetcher

    fetcher = HttpsFetcher(
        timeout=args.timeout,
        allow_hosts=frozenset(args.allow_host),
        allowed_ports=X5U_PORTS | frozenset(args.allow_port),
        tls_ca_file=None if args.tls_ca is None else str(args.tls_ca),
    )
    return CertificateCache(fetcher=fetcher, trust_store=trust, redis=None)


class _StaticChainSource:
    """A chain given on the command line, validated like a fetched one."""

    def __init__(self, pem: bytes, trust: Any) -> None:
        self._pem = pem
        self._trust = trust

    def certificate_for(self, x5u: str, *, now: int) -> Any:
        from .certs import load_pem_chain

        return self._trust.validate(load_pem_chain(self._pem), now=now)


def _cmd_decode(args: argparse.Namespace) -> int:
    from .identity import parse_identity
    from .passport import b64url_decode, decode_passport
    from .sipdate import format_sip_date

    problems: list[str] = []
    value = args.value.strip()
    token = value.partition(";")[0].strip()
    if ";" in value:
        try:
            header = parse_identity(value)
            print(f"Identity parameters: {dict(header.params)}")
        except VerificationError as exc:
            problems.append(f"{exc.sip_status} {exc.reason}: {exc.detail}")
    parts = token.split(".")
    if len(parts) != 3:
        problems.append("not a header.payload.signature token")
    else:
        for name, part in zip(("header", "claims"), parts[:2], strict=True):
            try:
                shown = json.dumps(json.loads(b64url_decode(part)), indent=2, sort_keys=True)
            except (VerificationError, ValueError):
                shown = "(not base64url JSON)"
            print(f"{name}: {shown}")
        try:
            passport = decode_passport(token)
        except VerificationError as exc:
            problems.append(f"{exc.sip_status} {exc.reason}: {exc.detail}")
        else:
            now = args.now if args.now is not None else int(time.time())
            print(f"iat: {format_sip_date(passport.iat)} ({now - passport.iat} s ago)")
            if ";" in value and f"info=<{passport.x5u}>" not in value.replace(" ", ""):
                problems.append("436 Bad Identity Info: info does not equal x5u")
    if problems:
        print("problems:")
        for problem in problems:
            print(f"  - {problem}")
        return EXIT_FAILED
    print("problems: none found (the signature is not checked by decode; use verify)")
    return EXIT_OK


def _cmd_serve_certs(args: argparse.Namespace) -> int:
    from .certserver import serve

    directory: Path = args.dir
    if not directory.is_dir():
        raise UsageError(f"--dir {directory}: not a directory")
    cert = args.cert or directory.parent / "tls-cert.pem"
    key = args.key or directory.parent / "tls-key.pem"
    for path in (cert, key):
        if not path.is_file():
            raise UsageError(f"TLS file {path} missing (give --cert and --key)")
    print(f"serving {directory} on https://{args.host}:{args.port}/", file=sys.stderr)
    serve(directory, host=args.host, port=args.port, cert_file=cert, key_file=key)
    return EXIT_OK
