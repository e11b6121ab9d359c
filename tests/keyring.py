"""Static test keys and a signer/verifier pair on an injected clock."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from stirshaken.signer import Signer
from stirshaken.verifier import StaticKeySource, Verifier

KEYS = Path(__file__).parent / "keys"
PRIVATE_KEY_PATH = KEYS / "es256-private.pem"
PUBLIC_KEY_PATH = KEYS / "es256-public.pem"
X5U = "https://cert.example.org/sp.pem"
ORIG = "12155550121"
DEST = "12155550131"
NOW = 1_800_000_000


def private_key() -> ec.EllipticCurvePrivateKey:
    key = load_pem_private_key(PRIVATE_KEY_PATH.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def public_key() -> ec.EllipticCurvePublicKey:
    key = load_pem_public_key(PUBLIC_KEY_PATH.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


class Clock:
    """A settable clock for signers and verifiers."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signer(clock: Clock | None = None, x5u: str = X5U) -> Signer:
    return Signer(private_key(), x5u=x5u, clock=clock or Clock())


def verifier(clock: Clock | None = None, **kwargs: object) -> Verifier:
    kwargs.setdefault("certificates", StaticKeySource(public_key()))
    return Verifier(clock=clock or Clock(), **kwargs)  # type: ignore[arg-type]
