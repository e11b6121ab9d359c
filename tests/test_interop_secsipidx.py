"""Interoperability with secsipidx, an independent implementation (Debian package)."""

import json
import shutil
import subprocess

import pytest

from tests.cli_runner import run
from tests.keyring import DEST, ORIG, PRIVATE_KEY_PATH, PUBLIC_KEY_PATH

SECSIPIDX = shutil.which("secsipidx")
pytestmark = pytest.mark.skipif(SECSIPIDX is None, reason="secsipidx is installed by `make test`")
X5U = "https://cert.example.org/sp.pem"


# secsipidx -check treats a token as expired once its iat is -expire seconds
# old, and -expire defaults to 0: without it a second boundary fails the check.
def _secsipidx(*args: str) -> subprocess.CompletedProcess[str]:
    assert SECSIPIDX is not None
    return subprocess.run([SECSIPIDX, *args], capture_output=True, text=True, timeout=30, check=False)


def _tamper(identity: str) -> str:
    token, _, params = identity.partition(";")
    header, payload, sig = token.split(".")
    flipped = "B" if sig[5] == "A" else "A"
    return f"{header}.{payload}.{sig[:5]}{flipped}{sig[6:]};{params}"


def _our_identity() -> str:
    signed = run("sign", "--key", str(PRIVATE_KEY_PATH), "--x5u", X5U, "--orig", ORIG, "--dest", DEST, "--attest", "A")
    assert signed.returncode == 0, signed.stderr
    return signed.stdout.strip()


def test_secsipidx_accepts_our_identity() -> None:
    checked = _secsipidx("-check", "-expire", "60", "-identity", _our_identity(), "-p", str(PUBLIC_KEY_PATH))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_secsipidx_rejects_our_tampered_identity() -> None:
    checked = _secsipidx("-check", "-expire", "60", "-identity", _tamper(_our_identity()), "-p", str(PUBLIC_KEY_PATH))
    assert checked.returncode != 0


def _their_identity() -> str:
    signed = _secsipidx("-sign-full", "-k", str(PRIVATE_KEY_PATH), "-o", ORIG, "-d", DEST, "-a", "A", "-x5u", X5U)
    assert signed.returncode == 0, signed.stderr
    return signed.stdout.strip()


def test_we_accept_secsipidx_identity() -> None:
    verified = run("verify", "--identity", _their_identity(), "--pubkey", str(PUBLIC_KEY_PATH), "--orig", ORIG, "--dest", DEST, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    verdict = json.loads(verified.stdout)
    assert verdict["verstat"] == "TN-Validation-Passed"
    assert verdict["attest"] == "A"


def test_we_reject_tampered_secsipidx_identity_with_438() -> None:
    verified = run("verify", "--identity", _tamper(_their_identity()), "--pubkey", str(PUBLIC_KEY_PATH), "--json")
    assert verified.returncode == 1
    verdict = json.loads(verified.stdout)
    assert (verdict["verstat"], verdict["status"]) == ("TN-Validation-Failed", 438)
