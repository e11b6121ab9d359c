"""KEMI routing script (app_python3) for the STIR/SHAKEN proxy.

Kamailio imports this file (``modparam("app_python3", "load", ...)`` in
kamailio.cfg), calls :func:`mod_init` once, forks its workers, and then calls
the methods of the returned :class:`kamailio` object: ``child_init`` once per
worker, ``ksr_request_route`` for every request, and the branch and failure
routes armed per transaction by name (:data:`BRANCH_ROUTE`,
:data:`FAILURE_ROUTE`).

This script only reads the message through ``KSR``, asks
:class:`stirshaken.service.Service` and :mod:`stirshaken.policy`, and applies
the answer.  Flow of an initial INVITE::

    ksr_request_route
      ├─ retransmission?            t_check_trans absorbs it
      ├─ verify Identity            verstat on PAI/From; reject or continue
      └─ route_attempts(first)      ds_select_dst, then per entry:
           policy.decide ─ OBTAIN ─ service.obtain (sign / cache)
                        ├ SKIP ───── ds_next_dst
                        └ SEND ───── plan for the branch, t_relay
    ksr_branch_manage               strip / add Identity+Date on this branch only
                                    (armed only when the branch differs from the INVITE)
    ksr_failure_manage              408/5xx/6xx/timeout: route_attempts(next)

The call's Identity lives in the transaction (AVPs), so a failover in any
process reuses it; Redis (identity cache) is only written when we sign and
read before signing (another node may have signed this call).

Python path: Kamailio embeds Debian's /usr/bin/python3, whose dist-packages
hold older cryptography/PyJWT.  Before importing stirshaken we put the
project's virtualenv (``$STIRSHAKEN_VENV``, else ``.venv`` next to this
``kemi/`` directory) *ahead* of everything else on ``sys.path``, processing
its ``.pth`` files (the editable install) with :func:`site.addsitedir`.
No environment or cfg setting is needed for the default layout.

Rules: every entry point catches every exception, logs it with the Call-ID
and maps it to a defined outcome (500 in the request route, "let tm relay
the best reply" in the failure route, "strip Identity" in the branch route);
``EXIT`` (-255) stands for "stop", as ``KSR.x.exit`` does not exist in Python.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any
import os
import site
import sys
import time


def _use_project_venv() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    venv = os.environ.get("STIRSHAKEN_VENV") or os.path.join(os.path.dirname(here), ".venv")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = os.path.join(venv, "lib", version, "site-packages")
    if not os.path.isdir(site_packages):
        return None
    before = list(sys.path)
    site.addsitedir(site_packages)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + [p for p in before if p not in added]
    return site_packages


VENV_SITE_PACKAGES = _use_project_venv()

import KSR  # noqa: E402  (provided by app_python3; a fake in unit tests)

try:
    from stirshaken.as302 import AsResult, Outcome, VsResult, interpret_as_reply, interpret_vs_reply
    from stirshaken.external import ExternalServices
    from stirshaken.policy import Action, EntryPolicy, after_obtain, decide, parse_entry_attrs
    from stirshaken.service import Obtained, Service
    from stirshaken.settings import BY_NAME, GROUP, Settings
    from stirshaken.verifier import NO_TN_VALIDATION, Verdict
    from stirshaken.verstat import with_verstat
except ImportError as exc:  # Kamailio logs this at start-up and refuses to run
    raise ImportError(
        f"cannot import the stirshaken package ({exc}); build the virtualenv with `make venv` "
        f"(next to kemi/, or set STIRSHAKEN_VENV); site-packages found: {VENV_SITE_PACKAGES}"
    ) from exc

SETTINGS_REFRESH = 1.0
"""Seconds a process keeps the stirshaken.* values it read (a live change applies within this)."""

EXIT = -255
"""Return value meaning "stop processing this message" (no KSR.x.exit in Python)."""

BRANCH_ROUTE = "ksr_branch_manage"
FAILURE_ROUTE = "ksr_failure_manage"

SANITY_CHECKS = 17895
"""sanity module checks, as Kamailio's default cfg: R-URI, required headers, CSeq,
Content-Length, Expires, URIs parseable, first Via."""
SANITY_URI_CHECKS = 7
"""URIs that must parse: R-URI, From, To."""

DS_ALG_PRIORITY = 8
"""Dispatcher algorithm: entries in priority order (serial forking)."""

FAILOVER_STATUS = "408|5[0-9][0-9]|6[0-9][0-9]"
"""Vendor replies that make the call try the next entry (plus a timeout)."""

# transaction-persistent state of a call (AVPs survive into the failure route)
AVP_RX_USABLE = "$avp(ss_rx_usable)"  # 1: the received Identity may be passed on
AVP_IDENTITY = "$avp(ss_identity)"  # "<Date>\n<Identity>" obtained for this call (one shm value, not two)
SHV_REDIS_DOWN = "$shv(ss_redis_down)"  # shared by all processes: outage already logged
# the external 302 services: one request outstanding at a time per call
AVP_EXT_PHASE = "$avp(ss_ext_phase)"  # "as" or "vs" while a 302 service is being asked
AVP_EXT_INDEX = "$avp(ss_ext_index)"  # index of that host in its list
AVP_EXT_HOST = "$avp(ss_ext_host)"  # its host:port, the key of its circuit breaker
AVP_EXT_DEADLINE = "$avp(ss_ext_deadline)"  # end of the call's budget (epoch seconds)
AVP_OBTAIN_FAILED = "$avp(ss_obtain_failed)"  # 1: the AS gave this call no Identity; not asked again
HTABLE_BREAKERS = "ss_breaker"  # kamailio.cfg: shared by every worker of this node

VS_UNAVAILABLE = Verdict(
    verstat=NO_TN_VALIDATION,
    sip_status=503,
    reason="Verification Service Unavailable",
    detail="no Verification Service answered within the budget",
)

SETTING_PVS = {name: f"$sel(cfg_get.{GROUP}.{name})" for name in BY_NAME}

CORE_DEBUG_PV = "$sel(cfg_get.core.debug)"
L_INFO = 2
"""Kamailio's info log level: KSR.info lines are only built when the core debug level shows them."""

ENTRY_ATTRS_PV = "$xavp(_dsdst_=>attrs)"
ENTRY_URI_PV = "$xavp(_dsdst_=>uri)"


# -- logging: stirshaken's logging goes to Kamailio's log --------------------
class _KsrLogHandler(logging.Handler):
    """Forward Python logging to KSR; Redis outage lines once per outage for all processes."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if "unavailable" in text and "continuing without it" in text:
                if KSR.pv.get(SHV_REDIS_DOWN) == 1:
                    return
                KSR.pv.seti(SHV_REDIS_DOWN, 1)
            elif "back; using it again" in text:
                if KSR.pv.get(SHV_REDIS_DOWN) != 1:
                    return
                KSR.pv.seti(SHV_REDIS_DOWN, 0)
            line = f"stirshaken: {text}\n"
            if record.exc_info:
                line = f"stirshaken: {text}: {record.exc_info[1]!r}\n"
            if record.levelno >= logging.ERROR:
                KSR.err(line)
            elif record.levelno >= logging.WARNING:
                KSR.warn(line)
            else:
                KSR.info(line)
        except Exception:  # noqa: BLE001 - logging must never raise into Kamailio
            pass


def _setup_logging() -> None:
    root = logging.getLogger("stirshaken")
    if not any(isinstance(h, _KsrLogHandler) for h in root.handlers):
        root.addHandler(_KsrLogHandler())
    root.setLevel(logging.INFO)
    root.propagate = False


def _describe(exc: BaseException) -> str:
    """The exception and what caused it (a SystemError from KSR carries the real one)."""
    text = repr(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        text += f" caused by {cause!r}"
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        text += f" at line {tb.tb_lineno}"
    return text


# -- message helpers -----------------------------------------------------------
def _gete(name: str) -> str:
    value = KSR.pv.get(name)
    return "" if value is None else str(value)


MAX_HEADER_VALUES = 10
"""At most this many lines of one header are read: each index is a PV name Kamailio keeps."""


def _header_values(name: str) -> list[str]:
    """The values of header *name*, in order (one per header line, at most MAX_HEADER_VALUES)."""
    count = KSR.pv.get(f"$hdrc({name})") or 0
    if count == 1:
        value = KSR.pv.get(f"$hdr({name})")
        return [] if value is None else [str(value)]
    values = []
    for index in range(min(int(count), MAX_HEADER_VALUES)):
        value = KSR.pv.get(f"$(hdr({name})[{index}])")
        if value is not None:
            values.append(str(value))
    return values


def _append_header(name: str, value: str) -> None:
    KSR.hdr.append(f"{name}: {value}\r\n")


def _call_id() -> str:
    return _gete("$ci")


def _branch_unchanged(action: Action, obtained: Obtained | None, rx_identity: bool | None) -> bool:
    """True when the branch goes out as the INVITE came: no branch route (a Python call) is needed.

    That is a received Identity passed on as it came, or no Identity to send
    and none received.  The plan is set all the same: should tm still have
    the branch route armed from an earlier branch, it finds a plan.
    """
    if obtained is not None:
        return False
    return action is Action.SEND_WITH_IDENTITY or (action is Action.SEND_WITHOUT_IDENTITY and rx_identity is False)


def _keep_in_transaction(obtained: Obtained) -> None:
    """The call's Identity and Date, for its later attempts (failure routes run in any process)."""
    KSR.pv.sets(AVP_IDENTITY, f"{obtained.date}\n{obtained.identity}")


_ENTRY_POLICIES: dict[object, EntryPolicy] = {}


def _entry_policy(attrs: object) -> EntryPolicy:
    """parse_entry_attrs, memoised: a routing group has a handful of distinct attrs strings."""
    entry = _ENTRY_POLICIES.get(attrs)
    if entry is None:
        if len(_ENTRY_POLICIES) > 1024:
            _ENTRY_POLICIES.clear()
        entry = _ENTRY_POLICIES[attrs] = parse_entry_attrs(None if attrs is None else str(attrs))
    return entry


def _describe_identity(action: Action, obtained: Obtained | None) -> str:
    if action is Action.SEND_WITHOUT_IDENTITY:
        return "without Identity"
    if obtained is None:
        return "with the received Identity"
    return f"with our Identity ({obtained.source})"


def _read_setting(name: str) -> object:
    return KSR.pv.get(SETTING_PVS[name])


def _reply_header(name: str) -> str | None:
    """A header of the reply that ended the failed branch (None after a timeout)."""
    value = KSR.pv.get(f"$T_rpl($hdr({name}))")
    return None if value is None else str(value)


class _HtableBreakers:
    """Circuit-breaker states in Kamailio's shared htable (stirshaken.external.BreakerStore)."""

    def get(self, key: str) -> str | None:
        value = KSR.htable.sht_get(HTABLE_BREAKERS, key)
        return None if value is None else str(value)

    def set(self, key: str, value: str) -> None:
        KSR.htable.sht_sets(HTABLE_BREAKERS, key, value)


@dataclass(frozen=True, slots=True)
class BranchPlan:
    """The Identity decision for the branch ``t_relay`` is about to create.

    ``rx_identity`` says whether the INVITE carries Identity headers (None:
    not known here, the branch route looks).
    """

    action: Action | ExternalRequest
    obtained: Obtained | None
    rx_identity: bool | None = None


@dataclass(frozen=True, slots=True)
class ExternalRequest:
    """How the branch to a 302 service differs from the call's INVITE."""

    remove: tuple[str, ...]
    add: tuple[tuple[str, str], ...]


class kamailio:  # noqa: N801 - the name app_python3's examples use
    """The handler object; Kamailio calls its methods by name."""

    def __init__(self) -> None:
        self.service = Service()
        self.external = ExternalServices(_HtableBreakers())
        # the Identity decision for the branch t_relay is about to create
        # (branch routes run synchronously inside t_relay, in this process,
        # and the plan is cleared when t_relay returns)
        self.plan: BranchPlan | None = None
        self._settings = Settings(_read_setting)
        self._settings_at = -1e18
        self.log_info = True  # Kamailio would print KSR.info lines (re-read with the settings)

    def child_init(self, rank: int) -> int:
        return 0

    def settings(self) -> Settings:
        """The stirshaken.* values, read lazily and kept for SETTINGS_REFRESH seconds.

        Reading a cfg parameter is a KSR call; an INVITE needs about twenty.
        A process re-reads them at most once per SETTINGS_REFRESH, so a
        ``kamcmd cfg.set_now_*`` change applies within that time.
        """
        now = time.monotonic()
        if now - self._settings_at >= SETTINGS_REFRESH:
            self._settings = Settings(_read_setting)
            self._settings_at = now
            debug = KSR.pv.get(CORE_DEBUG_PV)
            self.log_info = not isinstance(debug, int) or debug >= L_INFO
        return self._settings

    # -- equivalent of request_route{} --------------------------------------
    def ksr_request_route(self, msg: object) -> int:
        try:
            return self.ksr_route_main()
        except Exception as exc:  # noqa: BLE001 - never a traceback into Kamailio
            KSR.err(f"stirshaken: request route failed (Call-ID {_call_id()}): {_describe(exc)}\n")
            self._reply(500, "Server Internal Error")
            return EXIT

    def ksr_route_main(self) -> int:
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return EXIT
        if KSR.sanity.sanity_check(SANITY_CHECKS, SANITY_URI_CHECKS) < 0:
            # the sanity module has answered (400, 420, ...): nothing to add
            KSR.info(f"stirshaken: malformed request from {_gete('$si')} refused (Call-ID {_call_id()})\n")
            return EXIT
        if KSR.siputils.has_totag() > 0:
            return self.ksr_route_withindlg()
        method = KSR.pv.get("$rm")  # one KSR call instead of one per is_METHOD test
        if method == "INVITE":
            if KSR.tm.t_check_trans() == 0:
                return EXIT  # retransmission, absorbed by tm
            self.service.flush_if_due()
            return self.ksr_route_invite()
        if method == "CANCEL":
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return EXIT
        if method == "ACK":
            # ACK for a negative reply of ours: tm absorbs it
            KSR.tm.t_check_trans()
            return EXIT
        if method == "OPTIONS" and _gete("$rU") == "":
            KSR.sl.sl_send_reply(200, "OK")
            return EXIT
        KSR.sl.sl_send_reply(405, "Method Not Allowed")
        return EXIT

    # -- equivalent of route[WITHINDLG] ---------------------------------------
    def ksr_route_withindlg(self) -> int:
        if KSR.rr.loose_route() > 0:
            KSR.tm.t_relay()
            return EXIT
        if KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return EXIT
        KSR.sl.sl_send_reply(404, "Not Here")
        return EXIT

    # -- equivalent of route[INVITE]: verification, then the first attempt ----
    def ksr_route_invite(self) -> int:
        s = self.settings()
        if s.int("as_server"):
            return self.ksr_route_as_server(s)
        identities = _header_values("Identity")
        verdict = None
        call_id = _call_id()
        KSR.rr.record_route()
        if s.int("vs_enabled") and identities:
            if s.str("vs_provider") == "vs302":
                if self._ask_external(s, "vs", after=-1):
                    return 1  # the failure route takes the VS answer from here
                verdict = VS_UNAVAILABLE
            else:
                verdict = self.service.verify(
                    s,
                    call_id=call_id,
                    identities=identities,
                    date=KSR.pv.get("$hdr(Date)"),
                    orig_uri=self._calling_uri(),
                    dest_uri=_gete("$tu"),
                )
        return self._route_after_verdict(s, verdict, identities, call_id)

    def _route_after_verdict(self, s: Settings, verdict: Any, identities: list[str], call_id: str) -> int:
        """Apply the verdict, then the first attempt; a defined reply when the call goes nowhere."""
        rx_usable = self._apply_verdict(s, verdict, identities, call_id)
        if rx_usable is None:
            return EXIT
        if self.ksr_route_attempts(s, first=True, call_id=call_id, rx_usable=rx_usable,
                                   rx_identity=bool(identities)):
            return 1
        self._reply(503, "No Usable Route")
        return EXIT

    def _apply_verdict(self, s: Settings, verdict: Any, identities: list[str], call_id: str) -> bool | None:
        """verstat, Reason and whether the received Identity may be passed on; None when rejected.

        ``verdict`` is None when nothing was verified (no Identity, or
        verification disabled). Used after local and external verification.
        """
        rx_usable = False
        verstat: str | None = None
        if s.int("vs_enabled"):
            if verdict is not None:
                verstat = verdict.verstat
                if verdict.passed:
                    rx_usable = True
                    if self.log_info:
                        KSR.info(f"stirshaken: Identity verified, attest {verdict.attest} (Call-ID {call_id})\n")
                elif verdict.sip_status == 428:
                    # only Identity headers of other PASSporT types (ppt): as if there were none
                    if s.int("vs_require_identity"):
                        self._reply(428, "Use Identity Header")
                        return None
                else:
                    status, reason = verdict.sip_status, verdict.reason
                    KSR.info(
                        f"stirshaken: Identity failed verification (Call-ID {call_id}): "
                        f"{status} {verdict.detail}\n"
                    )
                    if s.str("vs_failure_action") == "reject" and status < 500:
                        self._reply(status, reason)
                        return None
                    if s.int("vs_reason_header") and verdict.reason_header:
                        _append_header("Reason", verdict.reason_header)
                    rx_usable = bool(s.int("vs_pass_failed_identity"))
            else:
                if s.int("vs_require_identity"):
                    self._reply(428, "Use Identity Header")
                    return None
                verstat = NO_TN_VALIDATION
            placement = s.str("vs_verstat_placement")
            if verstat and placement != "none":
                self._place_verstat(verstat, placement, call_id)
        else:
            rx_usable = bool(identities)  # not verified here: passed on as received
        rx_usable = rx_usable and bool(identities)
        if rx_usable:  # absent means 0: no shared-memory write for most calls
            KSR.pv.seti(AVP_RX_USABLE, 1)
        return rx_usable

    # -- equivalent of route[AS_SERVER]: this service as a 302 STI-AS ----------
    def ksr_route_as_server(self, s: Settings) -> int:
        """Answer a signing request (302 + Identity + Date, 404, 403); never forward it."""
        server = self.service.as_server(s)
        if server is None:
            self._reply(503, "Service Unavailable")
            return EXIT
        hint_header = s.str("as302_attest_header")
        answer = server.answer(
            source_ip=_gete("$si"),
            request_uri=_gete("$ru"),
            from_uri=_gete("$fu"),
            to_uri=_gete("$tu"),
            p_asserted_identity=_gete("$ai") or None,
            attest_hint=KSR.pv.get(f"$hdr({hint_header})") if hint_header else None,
        )
        KSR.tm.t_newtran()  # retransmissions get the same answer, not a new signature
        for name, value in answer.headers:
            if name == "Contact":
                # tm writes a 3xx reply's Contact from the destination set (and
                # warns on every reply when that set is empty): give it the URI
                KSR.pv.sets("$ru", value.strip("<>"))
            else:
                KSR.hdr.append_to_reply(f"{name}: {value}\r\n")
        KSR.tm.t_reply(answer.status, answer.reason)
        return EXIT

    # -- equivalent of route[ATTEMPTS]: the per-entry policy loop -------------
    def ksr_route_attempts(
        self,
        s: Settings,
        *,
        first: bool,
        resume: bool = False,
        call_id: str | None = None,
        rx_usable: bool | None = None,
        rx_identity: bool | None = None,
    ) -> bool:
        """Relay to the first usable entry from here on; False when none is left.

        ``resume`` re-enters at the current entry, after an Authentication
        Service answered (its request went out in this entry's place).
        ``rx_usable`` and ``rx_identity`` spare KSR reads when the request
        route already knows them; None means "read them".
        """
        if call_id is None:
            call_id = _call_id()
        provider = s.str("provider")
        # a transaction that just started has no Identity of ours yet
        fresh = first and not resume and rx_usable is not None
        if resume:
            found = True
            KSR.pv.sets("$du", _gete(ENTRY_URI_PV))
        elif first:
            found = KSR.dispatcher.ds_select_dst(s.int("route_group"), DS_ALG_PRIORITY) > 0
        else:
            found = KSR.dispatcher.ds_next_dst() > 0
        can_obtain = provider == "local" or (provider == "as302" and KSR.pv.get(AVP_OBTAIN_FAILED) != 1)
        if rx_usable is None:
            rx_usable = KSR.pv.get(AVP_RX_USABLE) == 1
        obtained = None if fresh else self._call_identity_obtained()
        while found:
            entry = _entry_policy(KSR.pv.get(ENTRY_ATTRS_PV))
            has_identity = obtained is not None or rx_usable
            action = decide(entry, has_identity=has_identity, can_obtain=can_obtain)
            if action is Action.OBTAIN:
                if provider == "as302":
                    obtained = self._cached_identity(s, call_id)
                    if obtained is None:
                        if self._ask_external(s, "as", after=-1):
                            return True  # the failure route resumes at this entry
                        KSR.pv.seti(AVP_OBTAIN_FAILED, 1)
                        KSR.pv.sets("$du", _gete(ENTRY_URI_PV))
                        can_obtain = False
                else:
                    obtained = self.service.obtain(
                        s,
                        call_id=call_id,
                        source_ip=_gete("$si"),
                        orig_uri=self._calling_uri(),
                        dest_uri=_gete("$tu"),
                    )
                    if obtained is not None:
                        _keep_in_transaction(obtained)
                action = after_obtain(entry, obtained=obtained is not None)
            if action is not Action.SKIP:
                if self.log_info:
                    KSR.info(
                        f"stirshaken: to {_gete(ENTRY_URI_PV)} ({entry.policy.value}): "
                        f"{_describe_identity(action, obtained)} (Call-ID {call_id})\n"
                    )
                self.plan = BranchPlan(action, obtained, rx_identity)
                if not _branch_unchanged(action, obtained, rx_identity):
                    KSR.tm.t_on_branch(BRANCH_ROUTE)
                KSR.tm.t_on_failure(FAILURE_ROUTE)
                KSR.tm.t_set_fr(s.int("vendor_ring_timeout_ms"), s.int("vendor_timeout_ms"))
                relayed = KSR.tm.t_relay() > 0
                self.plan = None
                if relayed:
                    return True
                KSR.warn(f"stirshaken: relay to {_gete(ENTRY_URI_PV)} failed (Call-ID {call_id})\n")
            elif self.log_info:
                KSR.info(
                    f"stirshaken: skipping {_gete(ENTRY_URI_PV)} ({entry.policy.value}, "
                    f"no Identity) (Call-ID {call_id})\n"
                )
            found = KSR.dispatcher.ds_next_dst() > 0
        return False

    # -- equivalent of branch_route[MANAGE]: this vendor's Identity headers ----
    def ksr_branch_manage(self, msg: object) -> int:
        try:
            plan = self.plan
            if plan is None:
                KSR.err(f"stirshaken: branch without a plan, stripping Identity (Call-ID {_call_id()})\n")
                KSR.hdr.remove("Identity")
                return 1
            action, obtained = plan.action, plan.obtained
            if isinstance(action, ExternalRequest):
                for name in action.remove:
                    if KSR.hdr.is_present(name) > 0:
                        KSR.hdr.remove(name)
                for name, value in action.add:
                    _append_header(name, value)
                return 1
            if action is Action.SEND_WITH_IDENTITY and obtained is None:
                return 1  # the received, verified Identity goes on as it came
            if plan.rx_identity or (plan.rx_identity is None and KSR.hdr.is_present("Identity") > 0):
                KSR.hdr.remove("Identity")
            if action is Action.SEND_WITH_IDENTITY and obtained is not None:
                if KSR.hdr.is_present("Date") > 0:
                    KSR.hdr.remove("Date")
                # one lump for both lines: every lump is a Kamailio allocation, copied per branch
                KSR.hdr.append(f"Date: {obtained.date}\r\nIdentity: {obtained.identity}\r\n")
            return 1
        except Exception as exc:  # noqa: BLE001
            KSR.err(f"stirshaken: branch route failed (Call-ID {_call_id()}): {_describe(exc)}\n")
            try:
                KSR.hdr.remove("Identity")
            except Exception:  # noqa: BLE001
                pass
            return 1

    # -- equivalent of failure_route[MANAGE]: fail over to the next entry -----
    def ksr_failure_manage(self, msg: object) -> int:
        try:
            if KSR.tm.t_is_canceled() > 0:
                return EXIT
            phase = _gete(AVP_EXT_PHASE)
            if phase:
                return self.ksr_route_external_answer(phase)
            if not (KSR.tm.t_check_status(FAILOVER_STATUS) > 0 or KSR.tm.t_branch_timeout() > 0):
                return EXIT  # e.g. 486 Busy: the caller gets it
            s = self.settings()
            self.ksr_route_attempts(s, first=False)
            # nothing left: tm relays the best reply received
            return 1
        except Exception as exc:  # noqa: BLE001
            KSR.err(f"stirshaken: failure route failed (Call-ID {_call_id()}): {_describe(exc)}\n")
            return EXIT

    # -- the external 302 services ---------------------------------------------
    # Why the transaction layer: the request to an AS/VS is relayed as a branch
    # of the call's own transaction (with a fresh Call-ID of its own, set in
    # the branch route), and its answer -- 302, 404, 603, or tm's timeout --
    # arrives in the failure route, which then relays to the vendor. No worker
    # ever waits: a black-holed AS holds only a transaction and a tm timer, so
    # calls that need no AS flow at full rate. Suspending the transaction and
    # sending a separate UAC request (uac_req_send + t_continue) would do the
    # same with two transactions, an extra event route and no per-host timer.
    def _ask_external(self, s: Settings, kind: str, *, after: int) -> bool:
        """Relay the call's INVITE to the next 302 service host; False when none is left."""
        call_id = _call_id()
        now = time.time()
        if after < 0:
            deadline = now + max(0, s.int("as302_budget_ms")) / 1000
            KSR.pv.sets(AVP_EXT_DEADLINE, repr(deadline))
        else:
            try:
                deadline = float(_gete(AVP_EXT_DEADLINE))
            except ValueError:
                deadline = now
        request = self._external_request(s, kind)
        while True:
            attempt = self.external.attempt(s, kind, after=after, now=now, deadline=deadline)
            if attempt is None:
                return False
            KSR.pv.sets(AVP_EXT_PHASE, kind)
            KSR.pv.seti(AVP_EXT_INDEX, attempt.index)
            KSR.pv.sets(AVP_EXT_HOST, attempt.host.key)
            KSR.pv.sets("$du", attempt.host.uri)
            self.plan = BranchPlan(request, None)
            KSR.tm.t_on_branch(BRANCH_ROUTE)
            KSR.tm.t_on_failure(FAILURE_ROUTE)
            KSR.tm.t_set_fr(attempt.timeout_ms, attempt.timeout_ms)
            relayed = KSR.tm.t_relay() > 0
            self.plan = None
            if relayed:
                return True
            KSR.warn(f"stirshaken: relay to 302 service {attempt.host.key} failed (Call-ID {call_id})\n")
            self.external.record(s, attempt.host.key, failed=True, now=now)
            KSR.pv.unset(AVP_EXT_PHASE)
            after = attempt.index

    def _external_request(self, s: Settings, kind: str) -> ExternalRequest:
        """The signing (as) or verification (vs) request: the call's INVITE with its own Call-ID."""
        remove: list[str] = ["Call-ID"]
        add: list[tuple[str, str]] = [("Call-ID", f"{uuid.uuid4().hex}@stirshaken")]
        if kind == "as":
            remove.append("Identity")  # an unusable received one is not the AS's business
            orig, _ = self.service.parties(s, orig_uri=self._calling_uri(), dest_uri="")
            hint_header = s.str("as302_attest_header")
            if hint_header and orig:
                policy = self.service.attestation(s)
                attest = policy.attest(_gete("$si"), orig) if policy is not None else None
                if attest:
                    add.append((hint_header, attest))
            if s.str("as302_orig_header") == "pai" and orig:
                remove.append("P-Asserted-Identity")
                add.append(("P-Asserted-Identity", f"<sip:+{orig}@{_gete('$fd') or 'invalid'}>"))
        return ExternalRequest(remove=tuple(remove), add=tuple(add))

    def ksr_route_external_answer(self, kind: str) -> int:
        """The answer (or timeout) of a 302 service; then on to the vendors."""
        s = self.settings()
        KSR.pv.unset(AVP_EXT_PHASE)
        now = time.time()
        status = 408 if KSR.tm.t_branch_timeout() > 0 else int(KSR.pv.get("$T_reply_code") or 408)
        host_key = _gete(AVP_EXT_HOST)
        index = int(KSR.pv.get(AVP_EXT_INDEX) or 0)
        if kind == "as":
            orig, dest = self.service.parties(s, orig_uri=self._calling_uri(), dest_uri=_gete("$tu"))
            as_result = interpret_as_reply(
                status,
                identity=_reply_header("Identity"),
                x_identity=_reply_header("X-Identity"),
                date=_reply_header("Date"),
                x_date=_reply_header("X-Date"),
                orig=orig or "",
                dest=[dest] if dest else [],
                now=int(now),
                max_age=s.int("freshness"),
                country_code=s.str("country_code"),
            )
            if not self._external_answered(s, kind, as_result.host_failed, as_result.detail, host_key, index, now):
                return 1
            return self._after_as_answer(s, as_result, orig, dest)
        vs_result = interpret_vs_reply(
            status,
            p_asserted_identity=_reply_header("P-Asserted-Identity"),
            from_=_reply_header("From"),
            reason=_reply_header("Reason"),
        )
        if not self._external_answered(s, kind, vs_result.host_failed, vs_result.detail, host_key, index, now):
            return 1
        return self._after_vs_answer(s, vs_result)

    def _external_answered(
        self, s: Settings, kind: str, host_failed: bool, detail: str, host_key: str, index: int, now: float
    ) -> bool:
        """Count the answer in the host's breaker; False when the next host was asked instead."""
        self.external.record(s, host_key, failed=host_failed, now=now)
        KSR.info(f"stirshaken: 302 service {host_key}: {detail} (Call-ID {_call_id()})\n")
        return not (host_failed and self._ask_external(s, kind, after=index))

    def _after_as_answer(self, s: Settings, result: AsResult, orig: str | None, dest: str | None) -> int:
        outcome = result.outcome
        if outcome is Outcome.SIGNED and orig and dest:
            identity, date = result.identity or "", result.date or ""
            _keep_in_transaction(Obtained(identity, date, "as302"))
            self.service.remember_identity(
                s, call_id=_call_id(), identity=identity, date=date, iat=result.iat or 0,
                orig=orig, dest=dest, attest=result.attest or "",
            )
        elif outcome is Outcome.REFUSED and s.str("as302_refused_action") == "block":
            self._reply(603, "Decline")
            return EXIT
        else:
            KSR.pv.seti(AVP_OBTAIN_FAILED, 1)
        if self.ksr_route_attempts(s, first=False, resume=True):
            return 1
        self._reply(503, "No Usable Route")  # never the AS's 302: it is not the call's answer
        return EXIT

    def _after_vs_answer(self, s: Settings, result: VsResult) -> int:
        verdict = result.verdict or VS_UNAVAILABLE
        if result.outcome is Outcome.REFUSED:
            self._reply(603, verdict.reason)
            return EXIT
        return self._route_after_verdict(s, verdict, _header_values("Identity"), _call_id())

    def _cached_identity(self, s: Settings, call_id: str) -> Obtained | None:
        orig, dest = self.service.parties(s, orig_uri=self._calling_uri(), dest_uri=_gete("$tu"))
        if not orig or not dest:
            return None
        obtained = self.service.cached_identity(s, call_id=call_id, orig=orig, dest=dest)
        if obtained is not None:
            _keep_in_transaction(obtained)
        return obtained

    # -- helpers ---------------------------------------------------------------
    def _calling_uri(self) -> str:
        """Calling party: P-Asserted-Identity if present, else From (ATIS-1000074 §5.2)."""
        return _gete("$ai") or _gete("$fu")

    def _call_identity_obtained(self) -> Obtained | None:
        kept = KSR.pv.get(AVP_IDENTITY)
        if not kept:
            return None
        date, _, identity = str(kept).partition("\n")
        return Obtained(identity, date, "transaction") if identity else None

    def _place_verstat(self, verstat: str, placement: str, call_id: str) -> None:
        pais = _header_values("P-Asserted-Identity")
        name, values = ("P-Asserted-Identity", pais) if pais else ("From", _header_values("From"))
        if not values or len(values) >= MAX_HEADER_VALUES:
            return  # nothing to mark, or too many lines to rewrite without losing one
        try:
            new_values = [with_verstat(v, verstat, placement) for v in values]
        except ValueError as exc:
            KSR.info(f"stirshaken: cannot place verstat on {name} (Call-ID {call_id}): {exc}\n")
            return
        if new_values == values:
            return
        KSR.hdr.remove(name)
        KSR.hdr.append("".join(f"{name}: {value}\r\n" for value in new_values))

    def _reply(self, code: int, reason: str) -> None:
        try:
            KSR.sl.send_reply(code, reason)
        except Exception:  # noqa: BLE001
            pass


def mod_init() -> kamailio:
    _setup_logging()
    return kamailio()
