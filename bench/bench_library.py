"""Library speed: our ES256 sign and full-verifier rates against OpenSSL's, same core, same run.

Goals (issue 2): sign >= 0.5x and verify >= 0.6x ``openssl speed ecdsap256``.
The verify figure goes through the whole ``Verifier`` (header parse, PASSporT
decode, freshness, orig/dest, the certificate cache's warm in-process entry,
the signature), not only the ECDSA operation. Rounds alternate between
OpenSSL and us so that noise on a shared machine hits both alike; the best
round of each is reported.

Usage: .venv/bin/python bench/bench_library.py [--rounds 3] [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stirshaken.cache import CertificateCache
from stirshaken.certs import TrustStore
from stirshaken.fetcher import FetchedChain
from stirshaken.pki import make_test_pki
from stirshaken.signer import Signer
from stirshaken.verifier import Verifier

CORE = 0
ORIG, DEST = "12155550121", "12155550131"
X5U = "https://cert.example.net/sp.pem"


class _OneChain:
    """Serves the test chain for any x5u: the cache fetches it once, then stays warm."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.fetches = 0

    def fetch(self, url: str) -> FetchedChain:
        self.fetches += 1
        return FetchedChain(body=self.body, max_age=86400)


def openssl_rates(seconds: int) -> tuple[float, float]:
    out = subprocess.run(
        ["taskset", "-c", str(CORE), "openssl", "speed", "-seconds", str(seconds), "ecdsap256"],
        capture_output=True, text=True, check=True,
    ).stdout
    match = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", out)
    if match is None:
        sys.exit(f"cannot read openssl speed output:\n{out}")
    return float(match.group(1)), float(match.group(2))


def rate(operation, seconds: float) -> float:  # type: ignore[no-untyped-def]
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            operation()
        count += 200
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=2)
    args = parser.parse_args()
    os.sched_setaffinity(0, {CORE})

    with tempfile.TemporaryDirectory() as tmp:
        pki = make_test_pki(Path(tmp))
        signer = Signer.from_files(key_path=pki.key, x5u=X5U, cert_path=pki.cert)
        fetcher = _OneChain(pki.chain.read_bytes())
        cache = CertificateCache(fetcher=fetcher, trust_store=TrustStore.from_directory(pki.trust_dir), redis=None)
        verifier = Verifier(certificates=cache, max_age=60)

    sample = signer.sign(orig=ORIG, dest=[DEST], attest="A")
    identities, date, dest = [sample.identity], [sample.date][0], [DEST]
    first = verifier.verify(identities, date=date, orig=ORIG, dest=dest)
    assert first.passed, first

    def sign() -> None:
        signer.sign(orig=ORIG, dest=dest, attest="A")

    def verify() -> None:
        verifier.verify(identities, date=date, orig=ORIG, dest=dest)

    best = {"openssl sign": 0.0, "openssl verify": 0.0, "our sign": 0.0, "our verify": 0.0}
    for round_number in range(1, args.rounds + 1):
        ossl_sign, ossl_verify = openssl_rates(args.seconds)
        ours_sign = rate(sign, args.seconds)
        ours_verify = rate(verify, args.seconds)
        print(f"round {round_number}: openssl {ossl_sign:,.0f} sign/s {ossl_verify:,.0f} verify/s; "
              f"ours {ours_sign:,.0f} sign/s {ours_verify:,.0f} verify/s", flush=True)
        for name, value in zip(best, (ossl_sign, ossl_verify, ours_sign, ours_verify), strict=True):
            best[name] = max(best[name], value)
    assert fetcher.fetches == 1, "the certificate cache did not stay warm"

    sign_ratio = best["our sign"] / best["openssl sign"]
    verify_ratio = best["our verify"] / best["openssl verify"]
    print()
    print(f"{'':24}{'ours/s':>10}{'openssl/s':>12}{'ratio':>8}{'goal':>7}")
    print(f"{'ES256 sign':24}{best['our sign']:>10,.0f}{best['openssl sign']:>12,.0f}{sign_ratio:>8.2f}{'>=0.50':>7}")
    print(f"{'verify (full verifier)':24}{best['our verify']:>10,.0f}{best['openssl verify']:>12,.0f}{verify_ratio:>8.2f}{'>=0.60':>7}")


if __name__ == "__main__":
    main()
