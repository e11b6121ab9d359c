"""The 302 Authentication/Verification Service exchange, sans-IO (issue 4)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stirshaken.as302 import (
    AsServer,
    BreakerState,
    CircuitBreaker,
    Outcome,
    ServiceHost,
    interpret_as_reply,
    interpret_vs_reply,
    next_attempt,
    parse_hosts,
)
from stirshaken.errors import ConfigurationError
from stirshaken.sipdate import format_sip_date
from stirshaken.verifier import NO_TN_VALIDATION, TN_VALIDATION_FAILED, TN_VALIDATION_PASSED
from tests.keyring import DEST, NOW, ORIG, signer


def test_parse_hosts() -> None:
    assert parse_hosts("10.0.0.5, as2.example.net:5070;[2001:db8::1]:5062") == (
        ServiceHost(host="10.0.0.5"),
        ServiceHost(host="as2.example.net", port=5070),
        ServiceHost(host="[2001:db8::1]", port=5062),
    )
    assert parse_hosts("") == ()
    assert ServiceHost(host="10.0.0.5").uri == "sip:10.0.0.5:5060"


@pytest.mark.parametrize("text", ["as:0", "as:70000", "a b:c", "sip:as.example"])
def test_parse_hosts_refuses(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_hosts(text)


def test_breaker_opens_after_threshold_and_half_opens() -> None:
    breaker = CircuitBreaker(threshold=2, open_seconds=30)
    state = BreakerState()
    state = breaker.after_failure(state, 100)
    assert breaker.allows(state, 100)
    state = breaker.after_failure(state, 101)
    assert not breaker.allows(state, 101) and not breaker.allows(state, 130)
    assert breaker.allows(state, 131.5)  # half-open: one more try
    reopened = breaker.after_failure(state, 132)
    assert not breaker.allows(reopened, 133)  # one failure when half-open is enough
    assert breaker.after_success() == BreakerState()


@given(st.text(max_size=30))
def test_breaker_state_decode_never_raises(text: str) -> None:
    BreakerState.decode(text)


def test_breaker_state_round_trip() -> None:
    state = BreakerState(2, 1234.5)
    assert BreakerState.decode(state.encode()) == state


HOSTS = parse_hosts("as1, as2, as3")


def test_next_attempt_skips_open_hosts_and_respects_budget() -> None:
    breaker = CircuitBreaker()
    opened = {"as1:5060": BreakerState(0, 200.0)}

    def states(host: ServiceHost) -> BreakerState:
        return opened.get(host.key, BreakerState())

    first = next_attempt(HOSTS, after=-1, states=states, breaker=breaker, now=100, deadline=110, per_host_timeout_ms=3000)
    assert first is not None and first.host.host == "as2" and first.timeout_ms == 3000
    last = next_attempt(HOSTS, after=first.index, states=states, breaker=breaker, now=108.5, deadline=110, per_host_timeout_ms=3000)
    assert last is not None and last.host.host == "as3" and last.timeout_ms == 1500
    assert next_attempt(HOSTS, after=2, states=states, breaker=breaker, now=100, deadline=110, per_host_timeout_ms=3000) is None
    assert next_attempt(HOSTS, after=-1, states=states, breaker=breaker, now=109.95, deadline=110, per_host_timeout_ms=3000) is None


def _reply(status: int = 302, **kwargs: object):  # type: ignore[no-untyped-def]
    return interpret_as_reply(status, orig=ORIG, dest=[DEST], now=NOW, **kwargs)  # type: ignore[arg-type]


def test_302_with_x_identity_and_x_date_is_used_unchanged() -> None:
    signed = signer().sign(orig=ORIG, dest=[DEST], attest="A")
    result = _reply(identity=None, x_identity=signed.identity, x_date=signed.date)
    assert result.outcome is Outcome.SIGNED
    assert (result.identity, result.date) == (signed.identity, signed.date)
    assert not result.host_failed


def test_302_identity_wins_over_x_identity_and_missing_date_comes_from_iat() -> None:
    signed = signer().sign(orig=ORIG, dest=[DEST], attest="A")
    result = _reply(identity=signed.identity, x_identity="garbage")
    assert result.outcome is Outcome.SIGNED and result.date == format_sip_date(NOW)


@pytest.mark.parametrize(
    "make",
    [
        lambda s: {"identity": None},
        lambda s: {"identity": "garbage"},
        lambda s: {"identity": s.identity.replace("info=<https://cert.example.org/sp.pem>", "info=<https://x/>")},
        lambda s: {"identity": signer().sign(orig="19995550000", dest=[DEST], attest="A").identity},
        lambda s: {"identity": signer().sign(orig=ORIG, dest=["19995550000"], attest="A").identity},
        lambda s: {"identity": signer().sign(orig=ORIG, dest=[DEST], attest="A", iat=NOW - 300).identity},
        lambda s: {"identity": s.identity, "date": "not a date"},
        lambda s: {"identity": s.identity, "date": format_sip_date(NOW - 600)},
    ],
)
def test_bad_302_counts_as_no_signature(make) -> None:  # type: ignore[no-untyped-def]
    signed = signer().sign(orig=ORIG, dest=[DEST], attest="A")
    result = _reply(**make(signed))
    assert result.outcome is Outcome.NO_SIGNATURE
    assert result.identity is None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(404, Outcome.NO_SIGNATURE), (603, Outcome.REFUSED), (503, Outcome.TRY_NEXT), (408, Outcome.TRY_NEXT),
     (500, Outcome.TRY_NEXT), (600, Outcome.TRY_NEXT), (488, Outcome.TRY_NEXT), (200, Outcome.TRY_NEXT)],
)
def test_other_answers(status: int, outcome: Outcome) -> None:
    result = _reply(status, identity=None)
    assert result.outcome is outcome
    assert result.host_failed == (outcome is Outcome.TRY_NEXT)


@given(st.integers(100, 699), st.one_of(st.none(), st.text(max_size=200)), st.one_of(st.none(), st.text(max_size=40)))
def test_any_as_answer_is_interpreted(status: int, identity: str | None, date: str | None) -> None:
    assert _reply(status, identity=identity, date=date).outcome in Outcome


@pytest.mark.parametrize(
    ("pai", "verstat", "status"),
    [
        ("<sip:+12155550121;verstat=TN-Validation-Passed@example.net;user=phone>", TN_VALIDATION_PASSED, 200),
        ("<sip:+12155550121@example.net>;verstat=tn-validation-failed", TN_VALIDATION_FAILED, 438),
        ("<tel:+12155550121;verstat=No-TN-Validation>", NO_TN_VALIDATION, 428),
        ("<sip:+12155550121@example.net>", NO_TN_VALIDATION, 428),
    ],
)
def test_vs_302_verstat(pai: str, verstat: str, status: int) -> None:
    result = interpret_vs_reply(302, p_asserted_identity=pai, from_=None)
    assert result.verdict is not None
    assert (result.verdict.verstat, result.verdict.sip_status) == (verstat, status)


def test_vs_reason_gives_the_cause_and_from_is_the_fallback() -> None:
    result = interpret_vs_reply(
        302, p_asserted_identity=None, from_="<sip:1@x;verstat=TN-Validation-Failed>",
        reason='STIR;cause=437;text="Unsupported Credential"',
    )
    assert result.verdict is not None
    assert (result.verdict.sip_status, result.verdict.reason) == (437, "Unsupported Credential")


def test_vs_other_answers() -> None:
    assert interpret_vs_reply(503, p_asserted_identity=None, from_=None).host_failed
    refused = interpret_vs_reply(603, p_asserted_identity=None, from_=None, reason='SIP;cause=603;text="sti-blocked"')
    assert refused.outcome is Outcome.REFUSED and refused.verdict is not None
    assert refused.verdict.reason == "sti-blocked"
    assert interpret_vs_reply(404, p_asserted_identity=None, from_=None).verdict.verstat == NO_TN_VALIDATION  # type: ignore[union-attr]


def _server(**kwargs: object) -> AsServer:
    args = {
        "signer": signer(),
        "attest_for": lambda ip, tn: "A" if ip == "127.0.0.1" and tn == ORIG else ("B" if ip == "127.0.0.1" else None),
        "allowed_sources": "127.0.0.0/8, 192.0.2.0/24",
        "country_code": "1",
    } | kwargs
    return AsServer(**args)  # type: ignore[arg-type]


def test_server_answers_302_with_identity_and_date() -> None:
    answer = _server(x_headers=True).answer(
        source_ip="127.0.0.1", request_uri=f"sip:{DEST}@vendor.example", from_uri="<sip:someone@x>",
        to_uri=f"<sip:{DEST}@vendor.example>", p_asserted_identity=f"<sip:+{ORIG}@x>",
    )
    assert (answer.status, answer.reason) == (302, "Moved Temporarily")
    headers = dict(answer.headers)
    assert headers["Contact"] == f"<sip:{DEST}@vendor.example>"
    assert headers["X-Identity"] == headers["Identity"] and headers["X-Date"] == headers["Date"]
    client_view = _reply(identity=headers["Identity"], date=headers["Date"])
    assert client_view.outcome is Outcome.SIGNED


def test_server_attestation_hint_lowers_never_raises() -> None:
    server = _server()
    def attest(hint: str, orig: str = ORIG) -> str:
        answer = server.answer(source_ip="127.0.0.1", request_uri=f"sip:{DEST}@v", from_uri=f"<sip:{orig}@x>",
                               to_uri=f"<sip:{DEST}@v>", attest_hint=hint)
        from stirshaken.passport import decode_passport
        return decode_passport(dict(answer.headers)["Identity"].partition(";")[0]).attest
    assert attest("C") == "C"
    assert attest("B") == "B"
    assert attest("A", orig="12155559999") == "B"


@pytest.mark.parametrize(
    ("source", "from_uri", "to_uri", "status"),
    [
        ("203.0.113.9", f"<sip:{ORIG}@x>", f"<sip:{DEST}@v>", 403),
        ("not-an-ip", f"<sip:{ORIG}@x>", f"<sip:{DEST}@v>", 403),
        ("127.0.0.1", "<sip:alice@x>", f"<sip:{DEST}@v>", 404),
        ("127.0.0.1", f"<sip:{ORIG}@x>", "<sip:bob@v>", 404),
        ("192.0.2.7", f"<sip:{ORIG}@x>", f"<sip:{DEST}@v>", 404),  # allowed, but our policy will not sign
    ],
)
def test_server_refusals(source: str, from_uri: str, to_uri: str, status: int) -> None:
    answer = _server().answer(source_ip=source, request_uri="sip:bob@v", from_uri=from_uri, to_uri=to_uri)
    assert answer.status == status


def test_server_signing_failure_is_503() -> None:
    from stirshaken.signer import Signer
    from tests.keyring import Clock, private_key

    class Broken(Signer):
        def sign(self, **kwargs: object):  # type: ignore[override, no-untyped-def]
            from stirshaken.errors import SigningError
            raise SigningError('certificate "expired"')

    server = _server(signer=Broken(private_key(), x5u="https://x.example/a.pem", clock=Clock()))
    answer = server.answer(source_ip="127.0.0.1", request_uri="sip:b@v", from_uri=f"<sip:{ORIG}@x>", to_uri=f"<sip:{DEST}@v>")
    assert answer.status == 503
    assert '"expired"' not in dict(answer.headers)["Reason"].split("text=", 1)[1][1:-1]


def test_server_refuses_bad_allow_list() -> None:
    with pytest.raises(ConfigurationError):
        _server(allowed_sources="10.0.0.0/33")
