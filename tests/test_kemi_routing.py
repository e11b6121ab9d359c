"""The KEMI script against the stateful fake KSR (tests/fake_ksr.py).

The library side (Service) is replaced by a small recording stub, so these
tests pin the script's own job: read the message, apply the policy table per
attempt, put headers on the right branch, and map every failure to a defined
outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest

from stirshaken.service import InternalFailure, Obtained
from stirshaken.settings import SETTINGS
from tests.fake_ksr import Entry, FakeKSR, Message, UnexpectedCall

CALL_ID = "call-1@test"
RX_IDENTITY = "rx.token.sig;info=<https://127.0.0.1:8443/sp.pem>;alg=ES256;ppt=shaken"
OUR_IDENTITY = "our.token.sig;info=<https://127.0.0.1:8443/sp.pem>;alg=ES256;ppt=shaken"
OUR_DATE = "Fri, 27 Nov 2026 03:28:01 GMT"


@dataclass(frozen=True)
class FakeVerdict:
    verstat: str
    sip_status: int
    reason: str
    detail: str = ""
    reason_header: str = ""
    attest: str | None = "A"

    @property
    def passed(self) -> bool:
        return self.verstat == "TN-Validation-Passed"


PASSED = FakeVerdict("TN-Validation-Passed", 200, "OK")
FAILED_438 = FakeVerdict("TN-Validation-Failed", 438, "Invalid Identity Header", "bad signature",
                         'STIR;cause=438;text="Invalid Identity Header"')


@dataclass
class StubService:
    verdict: Any = PASSED
    obtained: Obtained | None = field(default_factory=lambda: Obtained(OUR_IDENTITY, OUR_DATE, "signed"))
    raise_in: str = ""
    verify_calls: list[dict[str, Any]] = field(default_factory=list)
    obtain_calls: list[dict[str, Any]] = field(default_factory=list)

    def verify(self, s: Any, **kwargs: Any) -> Any:
        self.verify_calls.append(kwargs)
        if self.raise_in == "verify":
            raise RuntimeError("boom in verify")
        return self.verdict

    def flush_if_due(self) -> None:
        pass

    def obtain(self, s: Any, **kwargs: Any) -> Obtained | None:
        self.obtain_calls.append({"provider": s.str("provider"), **kwargs})
        if self.raise_in == "obtain":
            raise RuntimeError("boom in obtain")
        return self.obtained


def invite(*extra: tuple[str, str], pai: bool = True) -> Message:
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1"),
        ("From", "<sip:+12155550121@127.0.0.1>;tag=abc"),
        ("To", "<sip:+12155550131@127.0.0.1>"),
        ("Call-ID", CALL_ID),
        ("CSeq", "1 INVITE"),
    ]
    if pai:
        headers.append(("P-Asserted-Identity", "<sip:+12155550121@127.0.0.1>"))
    return Message(headers=headers + list(extra), call_id=CALL_ID)


def with_identity() -> Message:
    return invite(("Identity", RX_IDENTITY), ("Date", "Fri, 27 Nov 2026 03:27:59 GMT"))


REQUIRED = "ss_enabled=1;ss_policy=required"
SUPPORTED = "ss_enabled=1;ss_policy=supported"
DISABLED = "ss_enabled=1;ss_policy=disabled"


@pytest.fixture
def handler(ksr: FakeKSR, kemi: ModuleType) -> Any:
    h = kemi.mod_init()
    h.service = StubService()
    h.settings = lambda: kemi.Settings(kemi._read_setting)  # fresh values for every message
    ksr.handler = h
    ksr.settings = {s.name: s.default for s in SETTINGS}
    return h


def route(ksr: FakeKSR, handler: Any, msg: Message, entries: list[str]) -> int:
    ksr.reset(msg, entries=[Entry(f"sip:127.0.0.1:{5090 + 2 * i}", attrs) for i, attrs in enumerate(entries)])
    return int(handler.ksr_request_route(msg))


# -- structure ------------------------------------------------------------------
def test_route_names_are_methods(kemi: ModuleType) -> None:
    h = kemi.kamailio()
    for name in (kemi.BRANCH_ROUTE, kemi.FAILURE_ROUTE, "ksr_request_route", "child_init"):
        assert callable(getattr(h, name)), name
    assert kemi.EXIT == -255


def test_no_reply_or_onsend_route_is_expected(kemi: ModuleType) -> None:
    """kamailio.cfg sets both callbacks to "none"; the script must not rely on them."""
    text = (kemi.__file__ and open(kemi.__file__).read()) or ""
    assert "def ksr_reply_route" not in text and "def ksr_onsend_route" not in text


def test_venv_is_first_on_sys_path(kemi: ModuleType) -> None:
    import sys

    assert kemi.VENV_SITE_PACKAGES is None or sys.path.index(kemi.VENV_SITE_PACKAGES) < len(sys.path)
    import cryptography

    assert int(cryptography.__version__.split(".")[0]) >= 45  # not Debian's 38


# -- verification -----------------------------------------------------------------
def test_no_identity_gets_no_tn_validation_on_pai(ksr: FakeKSR, handler: Any) -> None:
    assert route(ksr, handler, invite(), [SUPPORTED]) == 1
    (branch,) = ksr.branches
    assert branch.values("P-Asserted-Identity") == ["<sip:+12155550121;verstat=No-TN-Validation@127.0.0.1>"]
    assert branch.values("Identity") == []
    assert handler.service.verify_calls == []
    assert ksr.record_routed


def test_verstat_goes_on_from_when_there_is_no_pai(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, invite(pai=False), [SUPPORTED])
    (branch,) = ksr.branches
    assert branch.values("From") == ["<sip:+12155550121;verstat=No-TN-Validation@127.0.0.1>;tag=abc"]


def test_verstat_placement_none_leaves_headers_alone(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings["vs_verstat_placement"] = "none"
    route(ksr, handler, invite(), [SUPPORTED])
    assert ksr.branches[0].values("P-Asserted-Identity") == ["<sip:+12155550121@127.0.0.1>"]


def test_missing_identity_428_when_required(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings["vs_require_identity"] = 1
    assert route(ksr, handler, invite(), [SUPPORTED]) == -255
    assert ksr.replies == [(428, "Use Identity Header")]
    assert ksr.branches == []


def test_valid_identity_is_verified_and_passed_on(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, with_identity(), [REQUIRED])
    (call,) = handler.service.verify_calls
    assert call["identities"] == [RX_IDENTITY]
    assert call["orig_uri"] == "sip:+12155550121@127.0.0.1"
    assert call["dest_uri"] == "sip:+12155550131@127.0.0.1"
    (branch,) = ksr.branches
    assert branch.values("Identity") == [RX_IDENTITY]
    assert "verstat=TN-Validation-Passed" in branch.values("P-Asserted-Identity")[0]
    assert handler.service.obtain_calls == []  # the call has an Identity: required does not sign


def test_failed_identity_reject_answers_with_the_verdict(ksr: FakeKSR, handler: Any) -> None:
    handler.service.verdict = FAILED_438
    ksr.settings["vs_failure_action"] = "reject"
    assert route(ksr, handler, with_identity(), [SUPPORTED]) == -255
    assert ksr.replies == [(438, "Invalid Identity Header")]


def test_failed_identity_continue_marks_strips_and_adds_reason(ksr: FakeKSR, handler: Any) -> None:
    handler.service.verdict = FAILED_438
    route(ksr, handler, with_identity(), [SUPPORTED])
    (branch,) = ksr.branches
    assert "verstat=TN-Validation-Failed" in branch.values("P-Asserted-Identity")[0]
    assert branch.values("Reason") == ['STIR;cause=438;text="Invalid Identity Header"']
    assert branch.values("Identity") == []


def test_failed_identity_may_be_passed_on_when_configured(ksr: FakeKSR, handler: Any) -> None:
    handler.service.verdict = FAILED_438
    ksr.settings["vs_pass_failed_identity"] = 1
    ksr.settings["vs_reason_header"] = 0
    route(ksr, handler, with_identity(), [SUPPORTED])
    (branch,) = ksr.branches
    assert branch.values("Identity") == [RX_IDENTITY]
    assert branch.values("Reason") == []


NO_SUPPORTED = FakeVerdict("No-TN-Validation", 428, "Use Identity Header", "no Identity with a supported ppt")


def test_only_unsupported_ppt_is_treated_as_no_identity(ksr: FakeKSR, handler: Any) -> None:
    handler.service.verdict = NO_SUPPORTED
    ksr.settings["vs_failure_action"] = "reject"  # not a failed verification: nothing to reject
    assert route(ksr, handler, with_identity(), [SUPPORTED]) == 1
    (branch,) = ksr.branches
    assert "verstat=No-TN-Validation" in branch.values("P-Asserted-Identity")[0]
    assert branch.values("Reason") == []


def test_only_unsupported_ppt_gets_428_where_identity_is_required(ksr: FakeKSR, handler: Any) -> None:
    handler.service.verdict = NO_SUPPORTED
    ksr.settings["vs_require_identity"] = 1
    assert route(ksr, handler, with_identity(), [SUPPORTED]) == -255
    assert ksr.replies == [(428, "Use Identity Header")]


def test_verification_unavailable_is_no_tn_validation_and_continues(ksr: FakeKSR, handler: Any) -> None:
    handler.service.verdict = InternalFailure("verifier not configured")
    ksr.settings["vs_failure_action"] = "reject"  # a 5xx internal failure is never a rejection
    assert route(ksr, handler, with_identity(), [SUPPORTED]) == 1
    assert "verstat=No-TN-Validation" in ksr.branches[0].values("P-Asserted-Identity")[0]


# -- the policy table per attempt ------------------------------------------------------
def test_required_entry_signs_and_adds_identity_and_date(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, invite(("Date", "Fri, 27 Nov 2026 03:00:00 GMT")), [REQUIRED])
    (branch,) = ksr.branches
    assert branch.values("Identity") == [OUR_IDENTITY]
    assert branch.values("Date") == [OUR_DATE]  # the old Date is replaced by the signed one
    (call,) = handler.service.obtain_calls
    assert call["source_ip"] == "127.0.0.1" and call["call_id"] == CALL_ID


def test_supported_entry_never_signs(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, invite(), [SUPPORTED])
    assert handler.service.obtain_calls == []
    assert ksr.branches[0].values("Identity") == []


def test_disabled_entry_strips_received_identity(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, with_identity(), [DISABLED])
    assert ksr.branches[0].values("Identity") == []


def test_required_without_signing_skips_to_next(ksr: FakeKSR, handler: Any) -> None:
    handler.service.obtained = None
    route(ksr, handler, invite(), [REQUIRED, SUPPORTED])
    (branch,) = ksr.branches
    assert branch.destination == "sip:127.0.0.1:5092"
    assert branch.values("Identity") == []
    assert "skipping sip:127.0.0.1:5090" in ksr.log_text()


def test_ss_enabled_0_never_asks_for_a_signature(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, invite(), ["ss_enabled=0;ss_policy=required", SUPPORTED])
    assert handler.service.obtain_calls == []
    assert [b.destination for b in ksr.branches] == ["sip:127.0.0.1:5092"]


def test_provider_disabled_never_asks_for_a_signature(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings["provider"] = "disabled"
    route(ksr, handler, invite(), [REQUIRED, REQUIRED])
    assert handler.service.obtain_calls == []
    assert ksr.branches == []
    assert ksr.replies == [(503, "No Usable Route")]


def test_no_entries_at_all_is_503(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, invite(), [])
    assert ksr.replies == [(503, "No Usable Route")]


def test_signing_exception_skips_the_required_entry(ksr: FakeKSR, handler: Any) -> None:
    """Service.obtain never raises; if a bug made it raise, the call still gets a defined answer."""
    handler.service.raise_in = "obtain"
    assert route(ksr, handler, invite(), [REQUIRED, SUPPORTED]) == -255
    assert ksr.replies == [(500, "Server Internal Error")]
    assert CALL_ID in ksr.log_text()


def test_verify_exception_is_logged_with_call_id_and_answered(ksr: FakeKSR, handler: Any) -> None:
    handler.service.raise_in = "verify"
    assert route(ksr, handler, with_identity(), [SUPPORTED]) == -255
    assert ksr.replies == [(500, "Server Internal Error")]
    assert f"Call-ID {CALL_ID}" in ksr.log_text()


def test_vendor_timers_come_from_settings(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings["vendor_timeout_ms"] = 1234
    route(ksr, handler, invite(), [SUPPORTED])
    assert ksr.fr == (60000, 1234)


def test_settings_are_read_through_cfg_get(ksr: FakeKSR, handler: Any) -> None:
    ksr.settings["route_group"] = "7"  # $sel returns strings for ints in app_python3
    route(ksr, handler, invite(), [SUPPORTED])
    assert len(ksr.branches) == 1


# -- failover -----------------------------------------------------------------------
def test_failover_on_503_reuses_the_identity_without_signing_again(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, invite(), [REQUIRED, REQUIRED, SUPPORTED])
    ksr.fail(503)
    first, second = ksr.branches
    assert second.destination == "sip:127.0.0.1:5092"
    assert first.values("Identity") == second.values("Identity") == [OUR_IDENTITY]
    assert len(handler.service.obtain_calls) == 1


def test_failover_to_disabled_entry_strips_our_identity(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, invite(), [REQUIRED, DISABLED])
    ksr.fail(None)  # timeout
    first, second = ksr.branches
    assert first.values("Identity") == [OUR_IDENTITY]
    assert second.values("Identity") == []


def test_failover_to_supported_entry_keeps_the_identity_obtained_earlier(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, invite(), [REQUIRED, SUPPORTED])
    ksr.fail(600)
    assert ksr.branches[1].values("Identity") == [OUR_IDENTITY]


@pytest.mark.parametrize("status", [486, 404, 403])
def test_no_failover_on_other_statuses(ksr: FakeKSR, handler: Any, status: int) -> None:
    route(ksr, handler, invite(), [SUPPORTED, SUPPORTED])
    ksr.fail(status)
    assert len(ksr.branches) == 1


def test_failover_runs_out_quietly(ksr: FakeKSR, handler: Any) -> None:
    route(ksr, handler, invite(), [SUPPORTED])
    ksr.fail(503)
    assert len(ksr.branches) == 1
    assert ksr.replies == []  # tm relays the best reply it got


def test_failover_skips_required_entry_when_nothing_can_be_obtained(ksr: FakeKSR, handler: Any) -> None:
    handler.service.obtained = None
    route(ksr, handler, invite(), [SUPPORTED, REQUIRED, SUPPORTED])
    ksr.fail(408)
    assert [b.destination for b in ksr.branches] == ["sip:127.0.0.1:5090", "sip:127.0.0.1:5094"]


def test_relay_failure_tries_the_next_entry(ksr: FakeKSR, handler: Any) -> None:
    ksr.reset(invite(), entries=[Entry("sip:127.0.0.1:5090", SUPPORTED), Entry("sip:127.0.0.1:5092", SUPPORTED)])
    ksr.relay_fails.add("sip:127.0.0.1:5090")
    handler.ksr_request_route(ksr.msg)
    assert [b.destination for b in ksr.branches] == ["sip:127.0.0.1:5092"]


# -- other requests -------------------------------------------------------------------
def test_malformed_request_is_left_to_the_sanity_module(ksr: FakeKSR, handler: Any) -> None:
    ksr.reset(invite(), entries=[Entry("sip:127.0.0.1:5090", SUPPORTED)])
    ksr.insane = (400, "Bad From header")
    assert handler.ksr_request_route(ksr.msg) == -255
    assert ksr.replies == [(400, "Bad From header")] and ksr.branches == []


def test_retransmission_is_absorbed(ksr: FakeKSR, handler: Any) -> None:
    ksr.reset(invite(), entries=[Entry("sip:127.0.0.1:5090", REQUIRED)])
    ksr.retransmission = True
    assert handler.ksr_request_route(ksr.msg) == -255
    assert ksr.branches == [] and handler.service.obtain_calls == []


def test_options_keepalive_answered(ksr: FakeKSR, handler: Any) -> None:
    ksr.reset(Message(method="OPTIONS", ruri_user=""))
    handler.ksr_request_route(ksr.msg)
    assert ksr.replies == [(200, "OK")]


def test_other_methods_refused(ksr: FakeKSR, handler: Any) -> None:
    ksr.reset(Message(method="MESSAGE"))
    handler.ksr_request_route(ksr.msg)
    assert ksr.replies == [(405, "Method Not Allowed")]


def test_in_dialog_request_without_route_is_404(ksr: FakeKSR, handler: Any) -> None:
    ksr.reset(Message(method="BYE", to_tag="x"))
    handler.ksr_request_route(ksr.msg)
    assert ksr.replies == [(404, "Not Here")]


def test_branch_without_plan_strips_identity(ksr: FakeKSR, handler: Any) -> None:
    ksr.reset(with_identity())
    handler.ksr_branch_manage(ksr.msg)
    assert "identity" in ksr._level.removed
    assert "without a plan" in ksr.log_text()


# -- logging ------------------------------------------------------------------------
def test_redis_outage_logged_once_for_all_processes(ksr: FakeKSR, kemi: ModuleType) -> None:
    import logging

    kemi._setup_logging()
    logger = logging.getLogger("stirshaken.cache")
    for _ in range(3):  # three workers meet the same outage
        logger.warning("%s unavailable (%s); continuing without it", "Redis", "refused")
    logger.warning("%s back; using it again", "Redis")
    logger.warning("%s back; using it again", "Redis")
    text = ksr.log_text()
    assert text.count("unavailable") == 1 and text.count("back;") == 1


def test_fake_refuses_what_the_script_does_not_use(ksr: FakeKSR) -> None:
    with pytest.raises(UnexpectedCall):
        ksr.pv.get("$ua")
    with pytest.raises(UnexpectedCall):
        ksr.hdr.append("X-No-CRLF: 1")
    with pytest.raises(UnexpectedCall):
        ksr.textops.remove_hf("X")  # type: ignore[attr-defined]


def test_settings_are_kept_for_the_refresh_period(ksr: FakeKSR, kemi: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(kemi.time, "monotonic", lambda: now[0])
    h = kemi.kamailio()
    ksr.settings = {"provider": "local"}
    assert h.settings().str("provider") == "local"
    ksr.settings = {"provider": "disabled"}
    assert h.settings().str("provider") == "local"
    now[0] += kemi.SETTINGS_REFRESH
    assert h.settings().str("provider") == "disabled"


def test_cfg_and_kemi_agree_on_the_refresh_period(kemi: ModuleType) -> None:
    from tests.harness import SETTINGS_REFRESH

    assert kemi.SETTINGS_REFRESH == SETTINGS_REFRESH


def test_many_pai_lines_are_left_alone_not_lost(ksr: FakeKSR, handler: Any, kemi: ModuleType) -> None:
    pais = [("P-Asserted-Identity", f"<sip:+1215555{i:04d}@127.0.0.1>") for i in range(kemi.MAX_HEADER_VALUES + 2)]
    route(ksr, handler, invite(*pais, pai=False), [SUPPORTED])
    assert ksr.branches[0].values("P-Asserted-Identity") == [v for _, v in pais]


def test_several_pai_lines_all_marked_in_order(ksr: FakeKSR, handler: Any) -> None:
    msg = invite(("P-Asserted-Identity", "<tel:+12155550121>"))
    route(ksr, handler, msg, [SUPPORTED])
    assert ksr.branches[0].values("P-Asserted-Identity") == [
        "<sip:+12155550121;verstat=No-TN-Validation@127.0.0.1>",
        "<tel:+12155550121;verstat=No-TN-Validation>",
    ]


def test_info_lines_are_built_only_when_kamailio_prints_them(ksr: FakeKSR, kemi: ModuleType) -> None:
    """Below Kamailio's info level the per-call lines cost nothing (no KSR reads, no formatting)."""
    h = kemi.mod_init()
    h.service = StubService()
    ksr.handler = h
    ksr.settings = {s.name: s.default for s in SETTINGS}
    ksr.core_debug = 1  # notice: KSR.info lines would be dropped by Kamailio
    route(ksr, h, invite(), [SUPPORTED])
    assert ksr.branches and "stirshaken: to" not in ksr.log_text()
    ksr.core_debug = 2
    h._settings_at = -1e18  # the next message re-reads settings and the debug level
    route(ksr, h, invite(), [SUPPORTED])
    assert "stirshaken: to sip:127.0.0.1:5090" in ksr.log_text()


def test_identity_and_date_are_kept_in_one_transaction_value(ksr: FakeKSR, handler: Any) -> None:
    """Failover reads the Date and Identity back from the single AVP written when signing."""
    route(ksr, handler, invite(), [REQUIRED, REQUIRED])
    assert ksr.avps["ss_identity"] == f"{OUR_DATE}\n{OUR_IDENTITY}"
    ksr.fail(503)
    assert len(handler.service.obtain_calls) == 1
    assert [b.values("Identity") for b in ksr.branches] == [[OUR_IDENTITY], [OUR_IDENTITY]]
    assert [b.values("Date") for b in ksr.branches] == [[OUR_DATE], [OUR_DATE]]


def test_branch_route_armed_only_when_the_branch_differs(ksr: FakeKSR, handler: Any) -> None:
    """A branch that goes out as the INVITE came costs no Python call in tm's branch route."""
    route(ksr, handler, invite(), [SUPPORTED])  # nothing received, nothing to add
    assert ksr.on_branch is None and ksr.branches[0].values("Identity") == []
    route(ksr, handler, with_identity(), [SUPPORTED])  # the verified Identity goes on as it came
    assert ksr.on_branch is None and ksr.branches[0].values("Identity") == [RX_IDENTITY]
    route(ksr, handler, with_identity(), [DISABLED])  # stripped: needs the branch route
    assert ksr.on_branch is not None and ksr.branches[0].values("Identity") == []
    route(ksr, handler, invite(), [REQUIRED])  # ours is added
    assert ksr.on_branch is not None and ksr.branches[0].values("Identity") == [OUR_IDENTITY]
