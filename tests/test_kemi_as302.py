"""The KEMI script's 302 service paths (issue 4) against the stateful fake KSR.

The real Service and stirshaken.as302 run here; only KSR is fake. The
fake's ``fail(status, headers)`` plays the 302 service's answer.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stirshaken.pki import PkiPaths, ensure_test_pki
from stirshaken.settings import SETTINGS
from stirshaken.signer import Signer
from tests.fake_ksr import Entry, FakeKSR, Message
from tests.test_kemi_routing import REQUIRED, SUPPORTED, invite, with_identity

AS1, AS2 = "127.0.0.1:5101", "127.0.0.1:5102"
ORIG, DEST = "12155550121", "12155550131"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    return ensure_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def handler(ksr: FakeKSR, kemi: ModuleType, pki: PkiPaths) -> Any:
    h = kemi.mod_init()
    h.settings = lambda: kemi.Settings(kemi._read_setting)
    ksr.handler = h
    ksr.settings = {s.name: s.default for s in SETTINGS}
    ksr.settings.update(
        provider="as302",
        as302_hosts=f"{AS1},{AS2}",
        redis_url="",
        as_key_path=str(pki.key),
        as_cert_path=str(pki.cert),
    )
    return h


def route(ksr: FakeKSR, handler: Any, msg: Message, entries: list[str]) -> int:
    ksr.reset(msg, entries=[Entry(f"sip:127.0.0.1:{5090 + 2 * i}", attrs) for i, attrs in enumerate(entries)])
    return int(handler.ksr_request_route(msg))


def signed(pki: PkiPaths) -> Any:
    return Signer.from_files(key_path=pki.key, x5u="https://127.0.0.1:8443/sp.pem").sign(
        orig=ORIG, dest=[DEST], attest="A"
    )


def test_required_entry_asks_the_as_with_its_own_call_id(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings["as302_attest_header"] = "X-Attestation"
    assert route(ksr, handler, invite(("Identity", "stale.bad.sig;info=<https://x/>")), [REQUIRED]) == 1
    (request,) = ksr.branches
    assert request.destination == f"sip:{AS1}"
    (call_id,) = request.values("Call-ID")
    assert call_id != "call-1@test" and call_id.endswith("@stirshaken")
    assert request.values("Identity") == []
    assert request.values("X-Attestation") == ["A"]
    assert ksr.fr == (3000, 3000)


def test_302_x_identity_goes_to_the_vendor_unchanged(ksr: FakeKSR, handler: Any, pki: PkiPaths) -> None:
    answer = signed(pki)
    route(ksr, handler, invite(), [REQUIRED])
    ksr.fail(302, {"X-Identity": answer.identity, "X-Date": answer.date})
    vendor = ksr.branches[-1]
    assert vendor.destination == "sip:127.0.0.1:5090"
    assert vendor.values("Identity") == [answer.identity]
    assert vendor.values("Date") == [answer.date]
    assert vendor.values("Call-ID") == ["call-1@test"]
    # the vendor fails: the next entry reuses the Identity, the AS is not asked again
    ksr.entries.append(Entry("sip:127.0.0.1:5092", REQUIRED))
    ksr.fail(503)
    assert [b.destination for b in ksr.branches] == [f"sip:{AS1}", "sip:127.0.0.1:5090", "sip:127.0.0.1:5092"]
    assert ksr.branches[-1].values("Identity") == [answer.identity]


@pytest.mark.parametrize("answer", [(404, {}), (302, {"Identity": "garbage"}), (302, {})])
def test_no_signature_skips_required_and_sends_supported_unsigned(ksr: FakeKSR, handler: Any,
                                                                 answer: tuple[int, dict[str, str]]) -> None:
    route(ksr, handler, invite(), [REQUIRED, SUPPORTED, REQUIRED])
    ksr.fail(*answer)
    assert [b.destination for b in ksr.branches] == [f"sip:{AS1}", "sip:127.0.0.1:5092"]
    assert ksr.branches[-1].values("Identity") == []
    ksr.fail(503)  # the last required entry: the AS said no, it is not asked again
    assert len(ksr.branches) == 2
    assert ksr.replies == [] or ksr.replies[-1][0] != 302


def test_nothing_left_after_the_as_gives_503_not_its_302(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, invite(), [REQUIRED])
    ksr.fail(404)
    assert ksr.replies == [(503, "No Usable Route")]


def test_timeout_tries_the_next_host_and_counts_in_the_shared_breaker(ksr: FakeKSR, handler: Any,
                                                                      pki: PkiPaths) -> None:
    answer = signed(pki)
    route(ksr, handler, invite(), [REQUIRED])
    ksr.fail(None)  # AS1 never answered
    assert ksr.branches[-1].destination == f"sip:{AS2}"
    assert ksr.htables["ss_breaker"][AS1].startswith("1:")
    ksr.fail(302, {"Identity": answer.identity, "Date": answer.date})
    assert ksr.branches[-1].values("Identity") == [answer.identity]


def test_open_breaker_skips_the_host(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings["as302_breaker_failures"] = 1
    route(ksr, handler, invite(), [REQUIRED])
    ksr.fail(503)
    assert ksr.branches[-1].destination == f"sip:{AS2}"
    route(ksr, handler, invite(), [REQUIRED])  # the next call
    assert ksr.branches[0].destination == f"sip:{AS2}"


def test_budget_limits_the_per_host_timer(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings.update(as302_budget_ms=1000, as302_host_timeout_ms=3000)
    route(ksr, handler, invite(), [REQUIRED])
    assert ksr.fr is not None and ksr.fr[1] <= 1000


@pytest.mark.parametrize(("action", "reply"), [("block", [(603, "Decline")]), ("continue", [])])
def test_603_blocks_or_continues(ksr: FakeKSR, handler: Any, action: str, reply: list[tuple[int, str]]) -> None:
    ksr.settings["as302_refused_action"] = action
    route(ksr, handler, invite(), [REQUIRED, SUPPORTED])
    ksr.fail(603)
    assert ksr.replies == reply
    assert len(ksr.branches) == (1 if action == "block" else 2)


def test_no_as_host_configured_means_no_signature(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings["as302_hosts"] = "not a host list::"
    assert route(ksr, handler, invite(), [REQUIRED, SUPPORTED]) == 1
    assert [b.destination for b in ksr.branches] == ["sip:127.0.0.1:5092"]


def test_exception_in_the_answer_is_logged_not_raised(ksr: FakeKSR, handler: Any, kemi: ModuleType,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    route(ksr, handler, invite(), [REQUIRED])

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(kemi, "interpret_as_reply", boom)
    ksr.fail(302, {"Identity": "x"})
    assert "failure route failed (Call-ID call-1@test)" in ksr.log_text()


# -- this service as a 302 STI-AS ------------------------------------------------------
def test_as_server_answers_302_with_identity_and_never_relays(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings.update(as_server=1, as_server_x_headers=1)
    assert route(ksr, handler, invite(), [REQUIRED]) == handler_exit()
    assert ksr.branches == []
    assert ksr.replies == [(302, "Moved Temporarily")]
    headers = dict(ksr.reply_headers)
    assert "Contact" not in headers  # tm writes it from the destination set
    assert ksr.ruri_set == "sip:+12155550131@127.0.0.1"
    assert headers["X-Identity"] == headers["Identity"] and headers["X-Date"] == headers["Date"]


def test_as_server_refuses_other_sources(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings.update(as_server=1, as_server_allowed="192.0.2.0/24")
    route(ksr, handler, invite(), [REQUIRED])
    assert ksr.replies == [(403, "Forbidden")]


def test_as_server_without_a_usable_key_answers_503(ksr: FakeKSR, handler: Any, tmp_path: Path) -> None:
    ksr.settings.update(as_server=1, as_key_path=str(tmp_path / "missing.pem"))
    route(ksr, handler, invite(), [REQUIRED])
    assert ksr.replies == [(503, "Service Unavailable")]


def handler_exit() -> int:
    return -255


# -- verification through an external VS ------------------------------------------------
def test_vs302_verdict_goes_on_the_pai(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings.update(vs_provider="vs302", vs302_hosts=AS1, provider="local")
    route(ksr, handler, with_identity(), [SUPPORTED])
    (request,) = ksr.branches
    assert request.destination == f"sip:{AS1}"
    assert request.values("Identity")  # the VS needs it
    ksr.fail(302, {"P-Asserted-Identity": "<sip:+12155550121;verstat=TN-Validation-Passed@vs.example>"})
    vendor = ksr.branches[-1]
    assert vendor.values("P-Asserted-Identity") == ["<sip:+12155550121;verstat=TN-Validation-Passed@127.0.0.1>"]
    assert vendor.values("Call-ID") == ["call-1@test"]


def test_vs302_failure_with_reject_answers_its_cause(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings.update(vs_provider="vs302", vs302_hosts=AS1, vs_failure_action="reject")
    route(ksr, handler, with_identity(), [SUPPORTED])
    ksr.fail(302, {"P-Asserted-Identity": "<sip:+1;verstat=TN-Validation-Failed@vs>",
                   "Reason": 'STIR;cause=437;text="Unsupported Credential"'})
    assert ksr.replies == [(437, "Unsupported Credential")]
    assert len(ksr.branches) == 1


def test_vs302_all_dead_is_no_tn_validation(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings.update(vs_provider="vs302", vs302_hosts=AS1, provider="local")
    route(ksr, handler, with_identity(), [SUPPORTED])
    ksr.fail(None)
    vendor = ksr.branches[-1]
    assert vendor.values("P-Asserted-Identity") == ["<sip:+12155550121;verstat=No-TN-Validation@127.0.0.1>"]
