"""The STI-VS (RFC 8224 §6.2, ATIS-1000074 §5.3.1): one verdict for every input."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stirshaken.errors import CertificateFetchError, UnsupportedCredential
from stirshaken.identity import format_identity
from stirshaken.passport import b64url_encode, canonical_json, sign_es256
from stirshaken.sipdate import format_sip_date
from stirshaken.verifier import (
    NO_TN_VALIDATION,
    TN_VALIDATION_FAILED,
    TN_VALIDATION_PASSED,
    StaticKey,
    Verdict,
)
from tests.keyring import DEST, NOW, ORIG, X5U, Clock, private_key, public_key, signer, verifier


def _signed(**kwargs: object):  # type: ignore[no-untyped-def]
    args = {"orig": ORIG, "dest": [DEST], "attest": "B"} | kwargs
    return signer().sign(**args)  # type: ignore[arg-type]


def _verify(identities: list[str], *, date: str | None = None, orig: str | None = ORIG, dest=(DEST,), **kwargs) -> Verdict:  # type: ignore[no-untyped-def]
    return verifier(**kwargs).verify(identities, date=date or format_sip_date(NOW), orig=orig, dest=dest)


def test_valid_identity_passes() -> None:
    signed = _signed()
    verdict = _verify([signed.identity], date=signed.date)
    assert verdict.verstat == TN_VALIDATION_PASSED and verdict.passed
    assert (verdict.sip_status, verdict.attest, verdict.origid) == (200, "B", signed.origid)
    assert verdict.identity == signed.identity
    assert verdict.reason_header == ""


def test_no_identity_is_no_tn_validation_428() -> None:
    verdict = _verify([])
    assert verdict.verstat == NO_TN_VALIDATION
    assert (verdict.sip_status, verdict.reason) == (428, "Use Identity Header")


def test_only_unsupported_ppt_is_428() -> None:
    verdict = _verify([format_identity("e30.e30.c2ln", X5U).replace("ppt=shaken", "ppt=div")])
    assert verdict.verstat == NO_TN_VALIDATION and verdict.sip_status == 428


def _tamper(identity: str) -> str:
    token, _, params = identity.partition(";")
    header, payload, sig = token.split(".")
    return f"{header}.{payload}.{sig[:10]}{'A' if sig[10] != 'A' else 'B'}{sig[11:]};{params}"


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda s: _tamper(s.identity), 438),
        (lambda s: s.identity.replace(f"info=<{X5U}>", "info=<https://other.example/sp.pem>"), 436),
        (lambda s: s.identity.replace(f";info=<{X5U}>", ""), 436),
        (lambda s: s.identity.replace("alg=ES256", "alg=whatever"), 438),
        (lambda s: "garbage", 438),
        (lambda s: "..c2ln;info=<https://x/>", 438),
    ],
)
def test_failures_carry_their_sip_status(make, status: int) -> None:  # type: ignore[no-untyped-def]
    signed = _signed()
    verdict = _verify([make(signed)], date=signed.date)
    assert verdict.verstat == TN_VALIDATION_FAILED
    assert verdict.sip_status == status
    assert verdict.reason_header.startswith(f"STIR;cause={status};text=")


@pytest.mark.parametrize("offset", [-61, 61, -3600, 10_000])
def test_stale_or_future_iat_is_403(offset: int) -> None:
    signed = _signed(iat=NOW + offset)
    verdict = _verify([signed.identity], date=format_sip_date(NOW))
    assert (verdict.sip_status, verdict.reason) == (403, "Stale Date")


@pytest.mark.parametrize("date", ["", "not a date", format_sip_date(NOW - 120), format_sip_date(NOW + 120)])
def test_bad_or_stale_date_header_is_403(date: str) -> None:
    verdict = verifier().verify([_signed().identity], date=date, orig=ORIG, dest=[DEST])
    assert verdict.sip_status == 403


def test_missing_date_is_403_unless_not_required() -> None:
    identity = _signed().identity
    assert verifier().verify([identity], date=None, orig=ORIG, dest=[DEST]).sip_status == 403
    assert verifier(require_date=False).verify([identity], date=None, orig=ORIG, dest=[DEST]).passed


def test_window_is_configurable() -> None:
    signed = _signed(iat=NOW - 200)
    assert _verify([signed.identity], date=signed.date, max_age=300).passed


@pytest.mark.parametrize(("orig", "dest"), [("19995550000", (DEST,)), (ORIG, ("19995550000",))])
def test_orig_or_dest_mismatch_is_438(orig: str, dest: tuple[str, ...]) -> None:
    verdict = _verify([_signed().identity], orig=orig, dest=dest)
    assert verdict.sip_status == 438


def test_claims_are_canonicalised_like_the_sip_side() -> None:
    # A peer that signs the national form still matches our canonical numbers.
    header = b64url_encode(canonical_json({"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U}))
    claims = {"attest": "A", "dest": {"tn": ["2155550131"]}, "iat": NOW, "orig": {"tn": "+1 215 555 0121"}, "origid": "x"}
    unsigned = header + "." + b64url_encode(canonical_json(claims))
    identity = format_identity(unsigned + "." + sign_es256(private_key(), unsigned.encode()), X5U)
    assert _verify([identity], country_code="1").passed


def test_one_valid_among_several_passes() -> None:
    """RFC 8224 §6.2: verified when at least one supported Identity validates."""
    good = _signed().identity
    bad = _tamper(good)
    div = format_identity("e30.e30.c2ln", X5U).replace("ppt=shaken", "ppt=div")
    assert _verify([div, bad, good]).passed
    assert _verify([f"{bad}, {good}"]).passed  # comma-joined in one header


def test_first_supported_failure_is_reported() -> None:
    good = _signed().identity
    verdict = _verify([_tamper(good), good.replace(f";info=<{X5U}>", "")], orig=ORIG)
    assert verdict.sip_status == 438


class _Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def certificate_for(self, x5u: str, *, now: int) -> StaticKey:
        self.calls += 1
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (CertificateFetchError("x5u timed out"), 436),
        (UnsupportedCredential("untrusted"), 437),
        (RuntimeError("bug in a certificate source"), 438),
    ],
)
def test_certificate_failures(error: Exception, status: int) -> None:
    source = _Failing(error)
    verdict = _verify([_signed().identity], certificates=source)
    assert verdict.sip_status == status
    assert source.calls == 1


def test_cheap_checks_come_before_the_certificate_fetch() -> None:
    source = _Failing(CertificateFetchError("must not be reached"))
    verdict = _verify([_signed(iat=NOW - 3600).identity], certificates=source)
    assert verdict.sip_status == 403 and source.calls == 0


class _Window:
    def __init__(self, not_before: int, not_after: int) -> None:
        self.credential = StaticKey(public_key=public_key(), not_before=not_before, not_after=not_after)

    def certificate_for(self, x5u: str, *, now: int) -> StaticKey:
        return self.credential


def test_iat_outside_certificate_validity_is_403() -> None:
    verdict = _verify([_signed().identity], certificates=_Window(NOW + 10, NOW + 1000))
    assert verdict.sip_status == 403


def test_clock_is_injected() -> None:
    signed = _signed()
    clock = Clock(NOW + 59)
    assert verifier(clock).verify([signed.identity], date=signed.date, orig=ORIG, dest=[DEST]).passed
    clock.now = NOW + 61
    assert verifier(clock).verify([signed.identity], date=signed.date, orig=ORIG, dest=[DEST]).sip_status == 403


def test_burst_of_identities_is_bounded() -> None:
    good = _signed().identity
    verdict = _verify(["garbage"] * 50 + [good])
    assert verdict.sip_status == 438  # only the first MAX_IDENTITIES are examined


@settings(max_examples=200)
@given(st.lists(st.text(max_size=120), max_size=4), st.one_of(st.none(), st.text(max_size=40)))
def test_any_input_gets_a_verdict(identities: list[str], date: str | None) -> None:
    verdict = verifier().verify(identities, date=date, orig=ORIG, dest=[DEST])
    assert verdict.verstat in (NO_TN_VALIDATION, TN_VALIDATION_FAILED)
    assert verdict.sip_status in (403, 428, 436, 437, 438)
