"""Service: building objects from settings, obtaining and verifying (stirshaken.service)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from stirshaken.service import InternalFailure, Service
from stirshaken.settings import Settings
from stirshaken.verifier import StaticKeySource, Verifier

ORIG_URI, DEST_URI = "sip:+12155550121@127.0.0.1", "sip:+12155550131@127.0.0.1"


def settings(pki: Any, redis_url: str = "", **overrides: object) -> Settings:
    values: dict[str, object] = {
        "as_key_path": str(pki.key),
        "as_cert_path": str(pki.cert),
        "as_x5u": "https://127.0.0.1:8443/sp.pem",
        "redis_url": redis_url,
        "vs_trust_dir": str(pki.trust_dir),
        "vs_tls_ca_file": str(pki.root),
    }
    values.update(overrides)
    return Settings(values.get)


def obtain(service: Service, s: Settings, call_id: str = "c1", source: str = "127.0.0.1") -> Any:
    return service.obtain(s, call_id=call_id, source_ip=source, orig_uri=ORIG_URI, dest_uri=DEST_URI)


def test_local_signing_gives_a_verifiable_identity(pki: Any) -> None:
    from stirshaken.certs import load_certificate_file

    got = obtain(Service(), settings(pki))
    assert got is not None and got.source == "signed"
    key = load_certificate_file(pki.cert)[0].public_key()
    verdict = Verifier(certificates=StaticKeySource(key)).verify(  # type: ignore[arg-type]
        [got.identity], date=got.date, orig="12155550121", dest=["12155550131"])
    assert verdict.passed and verdict.attest == "A"


def test_second_obtain_for_the_call_comes_from_redis(pki: Any, redis_server: Any) -> None:
    s = settings(pki, redis_server.url, identity_cache_prefix="svc:")
    first = obtain(Service(), s, call_id="same")
    second = obtain(Service(), s, call_id="same")  # another process / node
    assert second.source == "cache" and second.identity == first.identity and second.date == first.date
    no_lookup = obtain(Service(), settings(pki, redis_server.url, identity_cache_prefix="svc:",
                                           identity_cache_lookup=0), call_id="same")
    assert no_lookup.source == "signed"


@pytest.mark.parametrize(
    "overrides",
    [
        {"provider": "disabled"},
        {"as_trusted_sources": "192.0.2.0/24=*"},  # other sources: none by default
        {"as_key_path": "/nonexistent/key.pem"},
        {"as_trusted_sources": "not-an-address=*"},
    ],
)
def test_no_identity_when_signing_is_impossible(pki: Any, overrides: dict[str, object]) -> None:
    assert obtain(Service(), settings(pki, **overrides)) is None


def test_numbers_that_are_not_telephone_numbers_are_not_signed(pki: Any) -> None:
    service = Service()
    assert service.obtain(settings(pki), call_id="c", source_ip="127.0.0.1", orig_uri="sip:alice@example.com",
                          dest_uri=DEST_URI) is None


def test_broken_signer_is_logged_once_not_per_call(pki: Any, caplog: pytest.LogCaptureFixture) -> None:
    service = Service()
    s = settings(pki, as_key_path="/nonexistent/key.pem")
    with caplog.at_level(logging.ERROR, logger="stirshaken.service"):
        for _ in range(5):
            assert obtain(service, s) is None
    assert sum("cannot set up signer" in r.getMessage() for r in caplog.records) == 1


def test_objects_are_rebuilt_when_a_setting_changes(pki: Any) -> None:
    service = Service()
    first = service.signer(settings(pki))
    assert service.signer(settings(pki)) is first
    assert service.signer(settings(pki, as_x5u="https://127.0.0.1:8443/other.pem")) is not first


def test_verify_without_trust_dir_is_an_internal_failure(pki: Any) -> None:
    verdict = Service().verify(settings(pki, vs_trust_dir="/nonexistent"), call_id="c", identities=["x"],
                               date=None, orig_uri=ORIG_URI, dest_uri=DEST_URI)
    assert isinstance(verdict, InternalFailure) and verdict.verstat == "No-TN-Validation"


def test_verify_garbage_is_a_438_verdict(pki: Any) -> None:
    verdict = Service().verify(settings(pki), call_id="c", identities=["garbage"], date=None,
                               orig_uri=ORIG_URI, dest_uri=DEST_URI)
    assert verdict.verstat == "TN-Validation-Failed" and verdict.sip_status == 438


def test_verify_never_raises(pki: Any) -> None:
    class Exploding(Settings):
        def int(self, name: str) -> int:  # type: ignore[override]
            raise RuntimeError("boom")

    verdict = Service().verify(Exploding(lambda n: None), call_id="c", identities=["x"], date=None,
                               orig_uri=ORIG_URI, dest_uri=DEST_URI)
    assert isinstance(verdict, InternalFailure)
    assert obtain(Service(), Exploding(lambda n: None)) is None


def test_stale_signature_cache_entry_is_not_reused(pki: Any, redis_server: Any) -> None:
    clock = [time.time() - 50]
    s = settings(pki, redis_server.url, identity_cache_prefix="svc2:")
    old = Service(clock=lambda: clock[0]).obtain(s, call_id="old", source_ip="127.0.0.1", orig_uri=ORIG_URI,
                                                  dest_uri=DEST_URI)
    assert old is not None
    fresh = obtain(Service(), s, call_id="old")  # 50 s later: past the 45 s reuse window
    assert fresh.source == "signed"
