"""The external 302 Authentication/Verification Services, on real Kamailio and SIPp (issue 4).

SIPp plays the services (sipp_scenarios/as*/, vs302/): a 302 with
X-Identity/X-Date or Identity/Date signed at test time, 404, 603, garbage,
and a black hole. A second Kamailio runs this service as a 302 STI-AS
(-A WITH_AS302_SERVER) for the client/server tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stirshaken.pki import PkiPaths
from stirshaken.signer import SignedIdentity
from tests import harness
from tests.harness import Vendor, header_values, run_uac, uas
from tests.test_kamailio_calls import (  # noqa: F401 - verifier is a fixture
    DEST,
    ORIG,
    PAI,
    REQUIRED,
    SUPPORTED,
    identity_headers,
    only_invite,
    signer_for,
    verifier,
)
from tests.harness import SETTINGS_REFRESH

pytestmark = pytest.mark.kamailio


def _as_keys(signed: SignedIdentity) -> list[str]:
    return ["-key", "as_identity", signed.identity, "-key", "as_date", signed.date]


@pytest.fixture
def as302(tune, pki: PkiPaths, cert_server):  # type: ignore[no-untyped-def]
    """``as302(hosts, **tunables)``: provider as302 with these AS hosts, short timers."""

    def apply(*ports: int, **extra: int | str) -> None:
        hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
        values: dict[str, int | str] = {
            "provider": "as302",
            "as302_hosts": hosts,
            "as302_host_timeout_ms": 700,
            "as302_budget_ms": 5000,
            "as302_breaker_failures": 3,
        }
        values.update(extra)
        tune(**values)

    return apply


def _signed(pki, cert_server) -> SignedIdentity:  # type: ignore[no-untyped-def]
    return signer_for(pki, cert_server).sign(orig=ORIG, dest=[DEST], attest="A")


def test_as_302_x_identity_goes_on_the_vendor_invite_unchanged(kamailio, routing, as302, sip_dir: Path, pki,
                                                               cert_server) -> None:
    signed = _signed(pki, cert_server)
    with uas("as302_x_identity/uas_as302.xml", sip_dir, extra=_as_keys(signed)) as service, \
            uas("vendor/uas.xml", sip_dir) as vendor:
        as302(service.port, as302_attest_header="X-Attestation")
        routing([Vendor(vendor.port, REQUIRED)])
        result = run_uac(kamailio.port, sip_dir, headers=[PAI])
        assert result.final == "200", result.log
        request = service.invites()
        invite = only_invite(vendor)
    assert len(request) == 1
    assert header_values(invite, "Identity") == [signed.identity]
    assert header_values(invite, "Date") == [signed.date]
    # the signing request has a Call-ID of its own, our attestation hint, and no Identity
    assert header_values(request[0], "Call-ID") != header_values(invite, "Call-ID")
    assert header_values(request[0], "X-Attestation") == ["A"]
    assert header_values(request[0], "P-Asserted-Identity")[0].startswith("<sip:+12155550121")
    assert header_values(request[0], "Identity") == []


def test_as_identity_header_form_and_vendor_failover_reuses_it(kamailio, routing, as302, sip_dir: Path, pki,
                                                               cert_server, redis_server) -> None:
    """Failover to the next entry takes the cached Identity: the AS is asked once."""
    signed = _signed(pki, cert_server)
    with uas("as302_identity/uas_as302.xml", sip_dir, extra=_as_keys(signed)) as service, \
            uas("vendor_503/uas.xml", sip_dir) as broken, uas("vendor/uas.xml", sip_dir) as good:
        as302(service.port)
        routing([Vendor(broken.port, REQUIRED), Vendor(good.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir).final == "200"
        assert len(service.invites()) == 1
        first, second = only_invite(broken), only_invite(good)
    assert header_values(first, "Identity") == header_values(second, "Identity") == [signed.identity]
    call_id = header_values(second, "Call-ID")[0]
    assert b"ss:id:" + call_id.encode() in redis_server.command("KEYS", "ss:id:*")


@pytest.mark.parametrize("scenario", ["as404/uas_as404.xml", "as_garbage/uas_garbage.xml"])
def test_no_signature_skips_required_and_supported_goes_unsigned(kamailio, routing, as302, sip_dir: Path,
                                                                 scenario: str) -> None:
    with uas(scenario, sip_dir) as service, uas("vendor/uas.xml", sip_dir) as skipped, \
            uas("vendor/uas.xml", sip_dir) as fallback:
        as302(service.port)
        routing([Vendor(skipped.port, REQUIRED), Vendor(fallback.port, SUPPORTED), Vendor(skipped.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir).final == "200"
        assert len(service.invites()) == 1  # a call the AS would not sign is not asked about again
        assert skipped.invites() == []
        invite = only_invite(fallback)
    assert header_values(invite, "Identity") == []


def test_only_required_entries_and_no_signature_gives_503(kamailio, routing, as302, sip_dir: Path) -> None:
    with uas("as404/uas_as404.xml", sip_dir) as service, uas("vendor/uas.xml", sip_dir) as vendor:
        as302(service.port)
        routing([Vendor(vendor.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir).final == "503"  # never the AS's answer
        assert vendor.invites() == []


@pytest.mark.parametrize(("action", "final"), [("block", "603"), ("continue", "200")])
def test_as_603_blocks_or_continues(kamailio, routing, as302, sip_dir: Path, action: str, final: str) -> None:
    with uas("as603/uas_as603.xml", sip_dir) as service, uas("vendor/uas.xml", sip_dir) as vendor:
        as302(service.port, as302_refused_action=action)
        routing([Vendor(vendor.port, REQUIRED), Vendor(vendor.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir).final == final
        if action == "continue":
            assert header_values(only_invite(vendor), "Identity") == []
        else:
            assert vendor.invites() == []


def test_dead_first_host_then_live_second_within_budget(kamailio, routing, as302, sip_dir: Path, pki,
                                                        cert_server) -> None:
    signed = _signed(pki, cert_server)
    with uas("as_blackhole/uas_blackhole.xml", sip_dir) as dead, \
            uas("as302_x_identity/uas_as302.xml", sip_dir, extra=_as_keys(signed)) as live, \
            uas("vendor/uas.xml", sip_dir) as vendor:
        as302(dead.port, live.port)
        routing([Vendor(vendor.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir).final == "200"
        assert len(dead.invites()) >= 1 and len(live.invites()) == 1
        assert header_values(only_invite(vendor), "Identity") == [signed.identity]


def test_budget_spent_on_dead_hosts_means_no_signature(kamailio, routing, as302, sip_dir: Path) -> None:
    with uas("as_blackhole/uas_blackhole.xml", sip_dir) as dead, uas("vendor/uas.xml", sip_dir) as vendor:
        as302(dead.port, dead.port, dead.port, as302_host_timeout_ms=600, as302_budget_ms=1000)
        routing([Vendor(vendor.port, REQUIRED), Vendor(vendor.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir).final == "200"
        assert header_values(only_invite(vendor), "Identity") == []


def test_circuit_breaker_skips_a_dead_host_on_the_next_call(kamailio, routing, as302, sip_dir: Path, pki,
                                                            cert_server) -> None:
    signed = _signed(pki, cert_server)
    with uas("as_blackhole/uas_blackhole.xml", sip_dir) as dead, \
            uas("as302_x_identity/uas_as302.xml", sip_dir, extra=_as_keys(signed)) as live, \
            uas("vendor/uas.xml", sip_dir) as vendor:
        as302(dead.port, live.port, as302_breaker_failures=1, as302_breaker_open_s=60)
        routing([Vendor(vendor.port, REQUIRED)])
        for _ in range(2):  # one after the other: the first call's timeout opens the breaker
            assert run_uac(kamailio.port, sip_dir).final == "200"
        dead_calls = {header_values(m, "Call-ID")[0] for m in dead.invites()}
        assert len(dead_calls) == 1  # the second call went straight to the live host
        assert len(live.invites()) == 2


# -- this service as a 302 STI-AS ---------------------------------------------------
@pytest.fixture(scope="module")
def as_server(real_parts_available, pki, cert_server, redis_server,  # type: ignore[no-untyped-def]
              workdir: Path) -> Iterator[harness.Kamailio]:
    kdir = workdir / "as-server"
    kdir.mkdir()
    dispatcher_list = harness.write_dispatcher_list(kdir / "dispatcher.list", [Vendor(harness.free_port())])
    defines = harness.service_defines(pki, cert_server, redis_server.url, dispatcher_list)
    defines["WITH_AS302_SERVER"] = "1"
    instance = harness.Kamailio(kdir, defines=defines, workers=2)
    checked = instance.check_config()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    instance.start()
    yield instance
    instance.stop()


def test_client_and_server_kamailio_sign_a_verifiable_call(kamailio, as_server, routing, as302, sip_dir: Path,
                                                           verifier) -> None:
    with uas("vendor/uas.xml", sip_dir) as vendor:
        as302(as_server.port)
        routing([Vendor(vendor.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir, headers=[PAI]).final == "200"
        invite = only_invite(vendor)
    identities, dates = header_values(invite, "Identity"), header_values(invite, "Date")
    verdict = verifier.verify(identities, date=dates[0], orig=ORIG, dest=[DEST])
    assert verdict.passed, verdict.detail
    assert verdict.attest == "A"


def _set_live(instance: harness.Kamailio, name: str, value: int | str) -> None:
    instance.set_cfg(name, value)
    time.sleep(SETTINGS_REFRESH + 0.1)  # workers re-read the values once per SETTINGS_REFRESH


def test_server_answers_x_headers_and_never_forwards(as_server, sip_dir: Path, verifier) -> None:
    _set_live(as_server, "as_server_x_headers", 1)
    try:
        answer = harness.sip_invite(as_server.port, caller="+12155550121", callee="+12155550131")
    finally:
        _set_live(as_server, "as_server_x_headers", 0)
    assert answer.startswith("SIP/2.0 302")
    identity = header_values(answer, "Identity")
    assert identity and header_values(answer, "X-Identity") == identity
    assert header_values(answer, "X-Date") == header_values(answer, "Date")
    assert header_values(answer, "Contact") == ["<sip:+12155550131@127.0.0.1>"]
    assert verifier.verify(identity, date=header_values(answer, "Date")[0], orig=ORIG, dest=[DEST]).passed


@pytest.mark.parametrize(
    ("allowed", "caller", "status"),
    [("192.0.2.0/24", "+12155550121", "403"), ("127.0.0.1", "alice", "404")],
)
def test_server_refusals(as_server, allowed: str, caller: str, status: str) -> None:
    _set_live(as_server, "as_server_allowed", allowed)
    try:
        answer = harness.sip_invite(as_server.port, caller=caller, callee="+12155550131")
    finally:
        _set_live(as_server, "as_server_allowed", "127.0.0.1")
    assert answer.startswith(f"SIP/2.0 {status}")


# -- verification through an external VS ----------------------------------------------
@pytest.mark.parametrize(
    ("verstat", "reason", "action", "final", "expected"),
    [
        ("TN-Validation-Passed", "X-None", "continue", "200", "verstat=TN-Validation-Passed"),
        ("TN-Validation-Failed", 'STIR;cause=437;text="Unsupported Credential"', "continue", "200",
         "verstat=TN-Validation-Failed"),
        ("TN-Validation-Failed", 'STIR;cause=438;text="Invalid Identity Header"', "reject", "438", None),
    ],
)
def test_vs302_verdict_is_applied_like_a_local_one(kamailio, routing, tune, sip_dir: Path, pki, cert_server,
                                                   verstat: str, reason: str, action: str, final: str,
                                                   expected: str | None) -> None:
    signed = _signed(pki, cert_server)
    keys = ["-key", "vs_verstat", verstat, "-key", "vs_reason", reason]
    with uas("vs302/uas_vs302.xml", sip_dir, extra=keys) as service, uas("vendor/uas.xml", sip_dir) as vendor:
        tune(vs_provider="vs302", vs302_hosts=f"127.0.0.1:{service.port}", vs_failure_action=action,
             as302_host_timeout_ms=700)
        routing([Vendor(vendor.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir, headers=[PAI, *identity_headers(signed)]).final == final
        assert len(service.invites()) == 1
        assert header_values(service.invites()[0], "Identity") == [signed.identity]
        if expected is None:
            assert vendor.invites() == []
            return
        invite = only_invite(vendor)
    assert expected in header_values(invite, "P-Asserted-Identity")[0]


def test_vs302_dead_service_gives_no_tn_validation(kamailio, routing, tune, sip_dir: Path, pki, cert_server) -> None:
    signed = _signed(pki, cert_server)
    with uas("as_blackhole/uas_blackhole.xml", sip_dir) as dead, uas("vendor/uas.xml", sip_dir) as vendor:
        tune(vs_provider="vs302", vs302_hosts=f"127.0.0.1:{dead.port}", as302_host_timeout_ms=500,
             as302_budget_ms=1000)
        routing([Vendor(vendor.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir, headers=[PAI, *identity_headers(signed)]).final == "200"
        invite = only_invite(vendor)
    assert "verstat=No-TN-Validation" in header_values(invite, "P-Asserted-Identity")[0]
