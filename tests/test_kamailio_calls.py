"""Calls through the real service: Kamailio + KEMI script + Redis + certificate server + SIPp.

Every test builds its routing group from SIPp vendors (dispatcher.reload),
sets tunables live (cfg.set_now_*), places calls with the SIPp caller and
checks what the caller got and what each vendor received.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stirshaken.cache import CertificateCache
from stirshaken.certs import TrustStore
from stirshaken.fetcher import HttpsFetcher
from stirshaken.signer import Signer
from stirshaken.verifier import Verifier
from tests import harness
from tests.harness import Vendor, header_values, run_uac, uas

pytestmark = pytest.mark.kamailio

CALLER = "+12155550121"
CALLEE = "+12155550131"
ORIG, DEST = "12155550121", "12155550131"
PAI = f"P-Asserted-Identity: <sip:{CALLER}@127.0.0.1>"

REQUIRED = "ss_enabled=1;ss_policy=required"
SUPPORTED = "ss_enabled=1;ss_policy=supported"
DISABLED = "ss_enabled=1;ss_policy=disabled"


@pytest.fixture(scope="module")
def verifier(pki, cert_server):  # type: ignore[no-untyped-def]
    fetcher = HttpsFetcher(allow_hosts=frozenset({"127.0.0.1"}), tls_ca_file=str(pki.root),
                           allowed_ports=frozenset({cert_server.port}))
    cache = CertificateCache(fetcher=fetcher, trust_store=TrustStore.from_directory(pki.trust_dir))
    return Verifier(certificates=cache, max_age=60, country_code="1")


def signer_for(pki, cert_server, name: str = "sp") -> Signer:  # type: ignore[no-untyped-def]
    if name == "sp":
        key, cert = pki.key, pki.cert
    else:
        key, cert = pki.out_dir / f"{name}-key.pem", pki.out_dir / f"{name}-cert.pem"
    return Signer.from_files(key_path=key, x5u=cert_server.url(f"{name}.pem"), cert_path=cert)


def identity_headers(signed) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"Identity: {signed.identity}", f"Date: {signed.date}"]


def only_invite(vendor: harness.SippUas) -> str:
    invites = vendor.invites()
    assert len(invites) == 1, f"{vendor.port} got {len(invites)} INVITEs"
    return invites[0]


# -- local signing and the policy table ------------------------------------------
def test_signed_call_reaches_vendor_with_valid_identity_and_date(kamailio, routing, sip_dir: Path, verifier) -> None:
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, REQUIRED)])
        result = run_uac(kamailio.port, sip_dir)
        assert result.final == "200", result.log
        invite = only_invite(vendor)
    identities = header_values(invite, "Identity")
    dates = header_values(invite, "Date")
    assert len(identities) == 1 and len(dates) == 1
    verdict = verifier.verify(identities, date=dates[0], orig=ORIG, dest=[DEST])
    assert verdict.passed, verdict.detail
    assert verdict.attest == "A"  # 127.0.0.1 is a trusted source owning every number


def test_failover_from_503_reuses_the_same_identity(kamailio, routing, sip_dir: Path, redis_server, verifier) -> None:
    with uas("vendor_503/uas.xml", sip_dir) as broken, uas("vendor/uas.xml", sip_dir) as good:
        routing([Vendor(broken.port, REQUIRED), Vendor(good.port, REQUIRED)])
        result = run_uac(kamailio.port, sip_dir)
        assert result.final == "200", result.log
        first, second = only_invite(broken), only_invite(good)
    ids_first, ids_second = header_values(first, "Identity"), header_values(second, "Identity")
    assert ids_first and ids_first == ids_second  # a second signature would carry a new origid and iat
    assert header_values(first, "Date") == header_values(second, "Date")
    assert verifier.verify(ids_second, date=header_values(second, "Date")[0], orig=ORIG, dest=[DEST]).passed
    call_id = header_values(second, "Call-ID")[0]
    assert b"ss:id:" + call_id.encode() in redis_server.command("KEYS", "ss:id:*")


def test_same_call_again_reuses_the_cached_identity(kamailio, routing, sip_dir: Path) -> None:
    """A new transaction of the same call (another node, a re-sent INVITE) takes the Identity from Redis."""
    call_id = f"cluster-{uuid.uuid4().hex}@127.0.0.1"
    # two vendors: SIPp ignores a second call with a Call-ID it has finished
    with uas("vendor/uas.xml", sip_dir) as first, uas("vendor/uas.xml", sip_dir) as second:
        for vendor in (first, second):
            routing([Vendor(vendor.port, REQUIRED)])
            result = run_uac(kamailio.port, sip_dir, extra=["-cid_str", call_id])
            assert result.final == "200", result.log
        one, two = only_invite(first), only_invite(second)
    assert header_values(one, "Identity") == header_values(two, "Identity")


@contextlib.contextmanager
def second_node(kamailio, sip_dir: Path, name: str, vendor_port: int, **defines: str) -> Iterator[harness.Kamailio]:  # type: ignore[no-untyped-def]
    """Another Kamailio of the cluster (same Redis, same PKI) routing to *vendor_port*."""
    node_dir = sip_dir / name
    node_dir.mkdir()
    node_list = harness.write_dispatcher_list(node_dir / "dispatcher.list", [Vendor(vendor_port, REQUIRED)])
    node = harness.Kamailio(node_dir, defines=dict(kamailio.defines, SS_DISPATCHER_LIST=harness.cfg_string(str(node_list)),
                                                   **defines), workers=2).start()
    try:
        yield node
    finally:
        node.stop()


def test_same_call_on_another_node_reuses_the_identity(kamailio, routing, sip_dir: Path, workdir: Path) -> None:
    """Two Kamailio nodes sharing Redis: the call retried on node 2 carries node 1's Identity."""
    call_id = f"node-{uuid.uuid4().hex}@127.0.0.1"
    with uas("vendor/uas.xml", sip_dir) as first, uas("vendor/uas.xml", sip_dir) as second:
        routing([Vendor(first.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir, extra=["-cid_str", call_id]).final == "200"
        with second_node(kamailio, sip_dir, "node2", second.port) as node2:
            assert run_uac(node2.port, sip_dir, extra=["-cid_str", call_id]).final == "200"
        one, two = only_invite(first), only_invite(second)
    assert header_values(one, "Identity") == header_values(two, "Identity")
    assert header_values(one, "Date") == header_values(two, "Date")


def test_redis_through_its_unix_socket(kamailio, routing, sip_dir: Path, redis_server, pki, cert_server) -> None:
    """A node given Redis as unix:///...sock (as `make run` does) shares the caches with a TCP node."""
    call_id = f"unix-{uuid.uuid4().hex}@127.0.0.1"
    with uas("vendor/uas.xml", sip_dir) as first, uas("vendor/uas.xml", sip_dir) as second:
        routing([Vendor(first.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir, extra=["-cid_str", call_id]).final == "200"
        with second_node(kamailio, sip_dir, "unix-node", second.port,
                         SS_REDIS_URL=harness.cfg_string(redis_server.unix_url)) as node2:
            assert run_uac(node2.port, sip_dir, extra=["-cid_str", call_id]).final == "200"
            signed = signer_for(pki, cert_server).sign(orig=ORIG, dest=[DEST], attest="A")
            assert run_uac(node2.port, sip_dir, headers=[PAI, *identity_headers(signed)]).final == "200"
            assert "unavailable" not in node2.log_text()
        one, (two, verified) = only_invite(first), second.invites()
    assert header_values(one, "Identity") == header_values(two, "Identity")
    assert header_values(verified, "P-Asserted-Identity") == [f"<sip:{CALLER};verstat=TN-Validation-Passed@127.0.0.1>"]
    assert any(key.startswith(b"ss:cert:") for key in redis_server.command("KEYS", "*").split()), \
        "the certificate cache wrote through the socket"


def test_disabled_entry_strips_the_identity(kamailio, routing, sip_dir: Path, pki, cert_server) -> None:
    signed = signer_for(pki, cert_server).sign(orig=ORIG, dest=[DEST], attest="A")
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, DISABLED)])
        result = run_uac(kamailio.port, sip_dir, headers=[PAI, *identity_headers(signed)])
        assert result.final == "200", result.log
        invite = only_invite(vendor)
    assert header_values(invite, "Identity") == []
    assert "verstat=TN-Validation-Passed" in header_values(invite, "P-Asserted-Identity")[0]


def test_supported_entry_without_identity_gets_the_call_unsigned(kamailio, routing, sip_dir: Path) -> None:
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir).final == "200"
        invite = only_invite(vendor)
    assert header_values(invite, "Identity") == []
    assert "verstat=No-TN-Validation" in header_values(invite, "From")[0]


@pytest.mark.parametrize("how", ["provider-disabled", "ss_enabled-0", "untrusted-source"])
def test_required_entry_without_signing_is_skipped(kamailio, routing, tune, sip_dir: Path, how: str) -> None:
    required = REQUIRED
    if how == "provider-disabled":
        tune(provider="disabled")
    elif how == "ss_enabled-0":
        required = "ss_enabled=0;ss_policy=required"
    else:
        tune(as_trusted_sources="192.0.2.0/24=*", as_other_attest="none")
    with uas("vendor/uas.xml", sip_dir) as skipped, uas("vendor/uas.xml", sip_dir) as fallback:
        routing([Vendor(skipped.port, required), Vendor(fallback.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir).final == "200"
        assert skipped.invites() == []
        invite = only_invite(fallback)
    assert header_values(invite, "Identity") == []


def test_every_entry_skipped_gives_a_clear_503(kamailio, routing, tune, sip_dir: Path) -> None:
    tune(provider="disabled")
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir).final == "503"
        assert vendor.invites() == []


def test_untrusted_source_signed_c_when_configured(kamailio, routing, tune, sip_dir: Path, verifier) -> None:
    tune(as_trusted_sources="192.0.2.0/24=*", as_other_attest="C")
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir).final == "200"
        invite = only_invite(vendor)
    verdict = verifier.verify(header_values(invite, "Identity"), date=header_values(invite, "Date")[0],
                              orig=ORIG, dest=[DEST])
    assert verdict.passed and verdict.attest == "C"


def test_trusted_source_other_numbers_get_b(kamailio, routing, tune, sip_dir: Path, verifier) -> None:
    tune(as_trusted_sources="127.0.0.0/8=1267")
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir).final == "200"
        invite = only_invite(vendor)
    verdict = verifier.verify(header_values(invite, "Identity"), date=header_values(invite, "Date")[0],
                              orig=ORIG, dest=[DEST])
    assert verdict.passed and verdict.attest == "B"


def test_busy_vendor_is_not_failed_over(kamailio, routing, sip_dir: Path) -> None:
    with uas("vendor_busy/uas.xml", sip_dir) as busy, uas("vendor/uas.xml", sip_dir) as other:
        routing([Vendor(busy.port, SUPPORTED), Vendor(other.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir).final == "486"
        assert other.invites() == []


def test_silent_vendor_times_out_and_the_next_one_gets_the_call(kamailio, routing, sip_dir: Path) -> None:
    silent = harness.free_port()  # nothing listens: no reply, fr_timer (1.5 s here) fires
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(silent, REQUIRED), Vendor(vendor.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir).final == "200"
        assert header_values(only_invite(vendor), "Identity")


def test_cancelled_call_is_not_failed_over(kamailio, routing, sip_dir: Path) -> None:
    """The caller hangs up while the first vendor rings: 487, and the next vendor never sees the call."""
    with uas("vendor_ringing/uas.xml", sip_dir) as ringing, uas("vendor/uas.xml", sip_dir) as other:
        routing([Vendor(ringing.port, REQUIRED), Vendor(other.port, REQUIRED)])
        result = run_uac(kamailio.port, sip_dir, scenario="call_cancel/uac.xml")
        assert result.final == "487", result.log
        assert header_values(only_invite(ringing), "Identity")
        time.sleep(0.3)
        assert other.invites() == []


def test_all_vendors_failing_gives_the_caller_their_answer(kamailio, routing, sip_dir: Path) -> None:
    with uas("vendor_503/uas.xml", sip_dir) as one, uas("vendor_503/uas.xml", sip_dir) as two:
        routing([Vendor(one.port, REQUIRED), Vendor(two.port, SUPPORTED)])
        # RFC 3261 §16.7 step 6: a proxy turns a 503 it got into 500 upstream
        assert run_uac(kamailio.port, sip_dir).final == "500"
        assert len(one.invites()) == 1 and len(two.invites()) == 1


# -- verification -----------------------------------------------------------------
def test_valid_identity_passes_and_is_forwarded(kamailio, routing, sip_dir: Path, pki, cert_server) -> None:
    signed = signer_for(pki, cert_server).sign(orig=ORIG, dest=[DEST], attest="B")
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir, headers=[PAI, *identity_headers(signed)]).final == "200"
        invite = only_invite(vendor)
    pai = header_values(invite, "P-Asserted-Identity")
    assert pai == [f"<sip:{CALLER};verstat=TN-Validation-Passed@127.0.0.1>"]
    assert header_values(invite, "Identity") == [signed.identity]  # no new signature on a required entry
    assert header_values(invite, "Date") == [signed.date]


def test_verstat_as_header_parameter_on_from_when_no_pai(kamailio, routing, tune, sip_dir: Path, pki,
                                                         cert_server) -> None:
    tune(vs_verstat_placement="header")
    signed = signer_for(pki, cert_server).sign(orig=ORIG, dest=[DEST], attest="A")
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir, headers=identity_headers(signed)).final == "200"
        invite = only_invite(vendor)
    assert header_values(invite, "From")[0].endswith(";verstat=TN-Validation-Passed")


def tampered(identity: str) -> str:
    token, _, params = identity.partition(";")
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[10] != "A" else "B")
    return f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]};{params}"


def test_tampered_identity_rejected_with_438(kamailio, routing, tune, sip_dir: Path, pki, cert_server) -> None:
    tune(vs_failure_action="reject")
    signed = signer_for(pki, cert_server).sign(orig=ORIG, dest=[DEST], attest="A")
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, SUPPORTED)])
        headers = [PAI, f"Identity: {tampered(signed.identity)}", f"Date: {signed.date}"]
        assert run_uac(kamailio.port, sip_dir, headers=headers).final == "438"
        assert vendor.invites() == []


def test_tampered_identity_continues_marked_failed(kamailio, routing, sip_dir: Path, pki, cert_server,
                                                   verifier) -> None:
    """Default action continue: forwarded with TN-Validation-Failed and a Reason; the bad Identity is not passed on."""
    signed = signer_for(pki, cert_server).sign(orig=ORIG, dest=[DEST], attest="A")
    with uas("vendor/uas.xml", sip_dir) as supported, uas("vendor/uas.xml", sip_dir) as required:
        routing([Vendor(supported.port, SUPPORTED)])
        headers = [PAI, f"Identity: {tampered(signed.identity)}", f"Date: {signed.date}"]
        assert run_uac(kamailio.port, sip_dir, headers=headers).final == "200"
        invite = only_invite(supported)
        assert "verstat=TN-Validation-Failed" in header_values(invite, "P-Asserted-Identity")[0]
        assert header_values(invite, "Reason") == ['STIR;cause=438;text="Invalid Identity Header"']
        assert header_values(invite, "Identity") == []
        # a required entry gets our own signature instead of the failed one
        routing([Vendor(required.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir, headers=headers).final == "200"
        signed_again = only_invite(required)
    ids = header_values(signed_again, "Identity")
    assert ids and ids != [tampered(signed.identity)]
    assert verifier.verify(ids, date=header_values(signed_again, "Date")[0], orig=ORIG, dest=[DEST]).passed


def test_stale_identity_rejected_with_403(kamailio, routing, tune, sip_dir: Path, pki, cert_server) -> None:
    tune(vs_failure_action="reject")
    signer = signer_for(pki, cert_server)
    old = signer.sign(orig=ORIG, dest=[DEST], attest="A", iat=int(time.time()) - 300)
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir, headers=[PAI, *identity_headers(old)]).final == "403"


def test_identity_of_another_ppt_counts_as_none(kamailio, routing, tune, sip_dir: Path, pki, cert_server) -> None:
    tune(vs_failure_action="reject")
    signed = signer_for(pki, cert_server).sign(orig=ORIG, dest=[DEST], attest="A")
    div = signed.identity.replace("ppt=shaken", "ppt=div")
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, SUPPORTED)])
        result = run_uac(kamailio.port, sip_dir, headers=[PAI, f"Identity: {div}", f"Date: {signed.date}"])
        assert result.final == "200", result.log
        invite = only_invite(vendor)
    assert "verstat=No-TN-Validation" in header_values(invite, "P-Asserted-Identity")[0]


def test_missing_identity_gets_428_where_required(kamailio, routing, tune, sip_dir: Path) -> None:
    tune(vs_require_identity=1)
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir).final == "428"
        assert vendor.invites() == []


class BlackHole:
    """A TCP listener that accepts and never answers; counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


def test_unreachable_x5u_gives_436_once_per_negative_period(kamailio, routing, tune, sip_dir: Path, pki) -> None:
    hole = BlackHole()
    tune(vs_failure_action="reject", vs_fetch_timeout_ms=500,
         vs_x5u_ports=f"443,8443,{kamailio.get_cfg('vs_x5u_ports').split(',')[-1]},{hole.port}")
    try:
        signer = Signer.from_files(key_path=pki.key, x5u=f"https://127.0.0.1:{hole.port}/sp.pem", cert_path=pki.cert)
        with uas("vendor/uas.xml", sip_dir) as vendor:
            routing([Vendor(vendor.port, SUPPORTED)])
            finals = []
            for _ in range(4):
                signed = signer.sign(orig=ORIG, dest=[DEST], attest="A")
                finals.append(run_uac(kamailio.port, sip_dir, headers=[PAI, *identity_headers(signed)]).final)
            assert finals == ["436"] * 4
            assert vendor.invites() == []
        assert hole.accepted == 1  # the dead host cost one fetch, not one per call
    finally:
        hole.close()


@pytest.mark.parametrize("leaf", ["untrusted", "notnauth"])
def test_untrusted_or_tnauthlist_less_certificate_gives_437(kamailio, routing, tune, sip_dir: Path, pki,
                                                             cert_server, leaf: str) -> None:
    tune(vs_failure_action="reject")
    signed = signer_for(pki, cert_server, leaf).sign(orig=ORIG, dest=[DEST], attest="A")
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir, headers=[PAI, *identity_headers(signed)]).final == "437"


MALFORMED = [
    "Identity: garbage",
    "Identity: a.b.c;info=<https://127.0.0.1:1/x.pem>;alg=ES256;ppt=shaken",
    "Identity: ;;;;;",
    "Identity: eyJhbGciOiJub25lIn0.e30.;info=<http://127.0.0.1/x>",
    "Identity: " + "A" * 3000,
    "Identity: x.y.z;info=<;alg=;ppt=\"shaken",
    "Identity: ..;info=<https://[::1]/x>;ppt=shaken",
    "Identity: \u00e9\u00e8\u00ea.\u00ff;info=<https://127.0.0.1/\u00e9>",
]


@pytest.mark.parametrize("action", ["continue", "reject"])
def test_burst_of_malformed_identities_all_answered(kamailio, routing, tune, sip_dir: Path, action: str) -> None:
    tune(vs_failure_action=action)
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, SUPPORTED)])
        for header in MALFORMED:
            result = run_uac(kamailio.port, sip_dir, headers=[PAI, header, "Date: Fri, 27 Nov 2026 03:28:01 GMT"],
                             calls=10, rate=200)
            assert len(result.finals) == 10, (header[:60], result.log)
            expected = {"200"} if action == "continue" else {"438", "436", "403"}
            assert set(result.finals) <= expected, (header[:60], result.finals)
    assert kamailio.alive()
    assert harness.sip_options(kamailio.port) is not None
    assert "Traceback" not in kamailio.log_text()


MALFORMED_CALLERS = [
    ["P-Asserted-Identity: <sip:+12155550121@127.0.0.1"],  # unterminated <
    ["P-Asserted-Identity: garbage"],
    ["P-Asserted-Identity: <tel:>", "Date: yesterday"],
    ["P-Asserted-Identity: <sip:alice@127.0.0.1>", "P-Asserted-Identity: <tel:+12155550121>"],
    ["Date: Fri, 27 Nov 2026 03:28:01 GMT", "Identity: x;info=<https://127.0.0.1:8443/a.pem>", "Identity: y"],
]


@pytest.mark.parametrize("policy", [REQUIRED, SUPPORTED])
def test_malformed_callers_get_a_defined_answer(kamailio, routing, sip_dir: Path, policy: str) -> None:
    """Broken PAI/From/Date values: the call is answered (relayed or refused), never dropped."""
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, policy)])
        for headers in MALFORMED_CALLERS:
            result = run_uac(kamailio.port, sip_dir, headers=headers, calls=3, rate=100)
            assert len(result.finals) == 3 and set(result.finals) <= {"200", "503"}, (headers, result.log)
        for caller in ("alice", "+1", "%00%ff"):
            result = run_uac(kamailio.port, sip_dir, caller=caller)
            assert result.final in {"200", "503"}, (caller, result.log)
    assert kamailio.alive()
    assert "Traceback" not in kamailio.log_text()
    assert "Unhandled exception" not in kamailio.log_text()


def raw_request(port: int, lines: list[str], timeout: float = 1.0) -> list[str]:
    """Send one datagram built from *lines*; the status lines of every answer within *timeout*."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        local = s.getsockname()[1]
        s.sendto(("\r\n".join(lines).replace("LOCALPORT", str(local)) + "\r\n\r\n").encode("latin-1"),
                 ("127.0.0.1", port))
        answers = []
        try:
            while True:
                data, _ = s.recvfrom(65535)
                answers.append(data.split(b"\r\n", 1)[0].decode("latin-1"))
        except TimeoutError:
            pass
        return answers


def raw_invite(**replace: str) -> list[str]:
    headers = {
        "Via": f"SIP/2.0/UDP 127.0.0.1:LOCALPORT;branch=z9hG4bK{uuid.uuid4().hex}",
        "From": f"<sip:{CALLER}@127.0.0.1>;tag={uuid.uuid4().hex[:8]}",
        "To": f"<sip:{CALLEE}@127.0.0.1>",
        "Call-ID": uuid.uuid4().hex,
        "CSeq": "1 INVITE",
        "Max-Forwards": "70",
        "Content-Length": "0",
    }
    headers.update(replace)
    return [f"INVITE sip:{CALLEE}@127.0.0.1 SIP/2.0"] + [f"{k}: {v}" for k, v in headers.items() if v]


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        ({"From": "<<<"}, "400"),
        ({"CSeq": "x INVITE"}, "400"),
        ({"CSeq": "1 BYE"}, "400"),
        ({"Content-Length": "999"}, "400"),
        ({"Max-Forwards": "0"}, "483"),
    ],
)
def test_malformed_invites_get_a_sip_answer(kamailio, routing, sip_dir: Path, replace: dict[str, str],
                                            expected: str) -> None:
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, REQUIRED)])
        answers = raw_request(kamailio.port, raw_invite(**replace))
        assert answers and answers[-1].split()[1] == expected, answers
        assert vendor.invites() == []


def test_requests_kamailio_cannot_answer_do_not_hurt_it(kamailio) -> None:
    """No From / Call-ID / Via, unparsable To, junk: Kamailio's core drops them before any route runs
    (it has nowhere sane to answer); it stays up and answers the next request."""
    for lines in (raw_invite(From=""), raw_invite(**{"Call-ID": ""}), raw_invite(Via=""), raw_invite(To="x <sip:"),
                  ["\x00\xff\xfe garbage"], ["INVITE"], []):
        raw_request(kamailio.port, lines, timeout=0.2)
    assert kamailio.alive()
    assert harness.sip_options(kamailio.port) is not None


def test_redis_stopped_mid_run_calls_keep_flowing(kamailio, routing, sip_dir: Path, redis_server, verifier,
                                                  pki, cert_server) -> None:
    signed = signer_for(pki, cert_server).sign(orig=ORIG, dest=[DEST], attest="A")
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, REQUIRED)])
        assert run_uac(kamailio.port, sip_dir).final == "200"
        log_before = kamailio.log_text().count("unavailable")
        redis_server.stop()
        try:
            result = run_uac(kamailio.port, sip_dir, calls=20, rate=50)
            assert result.finals == ["200"] * 20, result.log
            # verification goes on too (certificates from the in-process cache)
            result = run_uac(kamailio.port, sip_dir, headers=[PAI, *identity_headers(signed)], calls=5, rate=50)
            assert result.finals == ["200"] * 5, result.log
        finally:
            redis_server.start()
        invites = vendor.invites()
        assert len(invites) == 26
        for verified in invites[-5:]:
            assert "verstat=TN-Validation-Passed" in header_values(verified, "P-Asserted-Identity")[0]
        last = invites[-6]
        assert verifier.verify(header_values(last, "Identity"), date=header_values(last, "Date")[0],
                               orig=ORIG, dest=[DEST]).passed
        # one log line for the outage, whichever worker met it first
        assert kamailio.log_text().count("unavailable") - log_before == 1
        # and Redis is used again once it is back
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert run_uac(kamailio.port, sip_dir).final == "200"
            if b"ss:id:" in redis_server.command("KEYS", "ss:id:*"):
                break
            time.sleep(0.5)
        else:
            pytest.fail("identity cache not written after Redis came back")


def test_live_cfg_change_takes_effect(kamailio, routing, tune, sip_dir: Path) -> None:
    with uas("vendor/uas.xml", sip_dir) as vendor:
        routing([Vendor(vendor.port, SUPPORTED)])
        assert run_uac(kamailio.port, sip_dir).final == "200"
        tune(vs_require_identity=1)
        assert run_uac(kamailio.port, sip_dir).final == "428"
        tune(vs_require_identity=0)
        assert run_uac(kamailio.port, sip_dir).final == "200"


def test_no_traceback_reached_kamailio(kamailio) -> None:
    """Runs last in this module: nothing above made Python raise into Kamailio."""
    assert "Unhandled exception" not in kamailio.log_text()
    assert "Traceback" not in kamailio.log_text()
