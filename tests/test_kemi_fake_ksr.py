"""The fake KSR itself: it must keep state the way Kamailio does, or the KEMI unit tests prove nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fake_ksr import Entry, FakeKSR, Message, UnexpectedCall


class Handler:
    def __init__(self, ksr: FakeKSR) -> None:
        self.ksr = ksr
        self.branch_calls = 0
        self.failures: list[int] = []

    def branch(self, msg: Any) -> int:
        self.branch_calls += 1
        self.ksr.hdr.append("X-Branch: %d\r\n" % self.branch_calls)
        return 1

    def failure(self, msg: Any) -> int:
        self.failures.append(1)
        self.ksr.hdr.append("X-Failure: 1\r\n")
        self.ksr.dispatcher.ds_next_dst()
        self.ksr.tm.t_on_branch("branch")
        self.ksr.tm.t_relay()
        return 1


@pytest.fixture
def fake(ksr: FakeKSR) -> FakeKSR:
    ksr.handler = Handler(ksr)
    ksr.reset(Message(headers=[("From", "<sip:+1215@h>;tag=1"), ("To", "<sip:+1216@h>"), ("Identity", "a"),
                               ("Identity", "b")]),
              entries=[Entry("sip:127.0.0.1:1", "x=1"), Entry("sip:127.0.0.1:2")])
    return ksr


def test_pvs_read_received_headers_only(fake: FakeKSR) -> None:
    fake.hdr.append("Identity: c\r\n")
    fake.hdr.remove("Identity")
    assert fake.pv.get("$hdrc(Identity)") == 2
    assert fake.pv.get("$(hdr(Identity)[1])") == "b"
    assert fake.pv.get("$(hdr(Identity)[2])") is None
    assert fake.pv.get("$fu") == "sip:+1215@h" and fake.pv.get("$ai") is None


def test_request_route_changes_go_to_every_branch_branch_changes_to_one(fake: FakeKSR) -> None:
    fake.hdr.remove("Identity")
    fake.dispatcher.ds_select_dst(1, 8)
    fake.tm.t_on_branch("branch")
    fake.tm.t_on_failure("failure")
    fake.tm.t_relay()
    fake.fail(503)
    first, second = fake.branches
    assert first.values("Identity") == second.values("Identity") == []
    assert first.values("X-Branch") == ["1"] and second.values("X-Branch") == ["2"]
    assert first.values("X-Failure") == [] and second.values("X-Failure") == ["1"]
    assert second.destination == "sip:127.0.0.1:2"


def test_transaction_state(fake: FakeKSR) -> None:
    fake.pv.sets("$avp(ss_identity)", "x")
    fake.pv.seti("$shv(flag)", 1)
    assert fake.pv.get("$avp(ss_identity)") == "x" and fake.pv.get("$shv(flag)") == 1
    fake.dispatcher.ds_select_dst(1, 8)
    assert fake.pv.get("$xavp(_dsdst_=>attrs)") == "x=1"
    assert fake.dispatcher.ds_next_dst() == 1 and fake.pv.get("$xavp(_dsdst_=>attrs)") is None
    assert fake.dispatcher.ds_next_dst() == -1


def test_strictness(fake: FakeKSR) -> None:
    with pytest.raises(UnexpectedCall):
        fake.tm.t_on_failure("no_such_method")
    with pytest.raises(UnexpectedCall):
        fake.tm.t_relay()  # no destination selected
    with pytest.raises(UnexpectedCall):
        fake.sl.sl_send_reply("200", "OK")  # codes are ints
    with pytest.raises(UnexpectedCall):
        fake.hdr.append("A: 1\r\nB: 2")  # every line ends in CRLF
    with pytest.raises(UnexpectedCall):
        fake.hdr.append("A: 1\r\nnot a header\r\n")
    with pytest.raises(UnexpectedCall):
        fake.tm.t_check_status("503")  # only in a failure route
    with pytest.raises(UnexpectedCall):
        fake.pv.seti("$var(x)", 1)
    with pytest.raises(AttributeError):
        fake.__wrapped__  # noqa: B018


def test_one_append_may_carry_several_header_lines(fake: FakeKSR) -> None:
    fake.hdr.append("Date: d\r\nX-Second: i\r\n")
    fake.pv.sets("$du", "sip:127.0.0.1:1")
    fake.tm.t_relay()
    assert fake.branches[-1].values("Date") == ["d"] and fake.branches[-1].values("X-Second") == ["i"]
