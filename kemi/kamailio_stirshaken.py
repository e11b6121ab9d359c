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
    from stirshaken.policy import Action, EntryPolicy, after_obtain, decide, parse_entry_attrs
    from stirshaken.service import Obtained, Service
    from stirshaken.settings import BY_NAME, GROUP, Settings
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
AVP_IDENTITY = "$avp(ss_identity)"  # Identity obtained for this call
AVP_DATE = "$avp(ss_date)"  # ... and the Date it was signed with
SHV_REDIS_DOWN = "$shv(ss_redis_down)"  # shared by all processes: outage already logged

SETTING_PVS = {name: f"$sel(cfg_get.{GROUP}.{name})" for name in BY_NAME}

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


class kamailio:  # noqa: N801 - the name app_python3's examples use
    """The handler object; Kamailio calls its methods by name."""

    def __init__(self) -> None:
        self.service = Service()
        # the Identity decision for the branch t_relay is about to create
        # (branch routes run synchronously inside t_relay, in this process)
        self.plan: tuple[str, Action, Obtained | None] | None = None
        self._settings = Settings(_read_setting)
        self._settings_at = -1e18

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
        self.service.flush_if_due()
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return EXIT
        if KSR.sanity.sanity_check(SANITY_CHECKS, SANITY_URI_CHECKS) < 0:
            # the sanity module has answered (400, 420, ...): nothing to add
            KSR.info(f"stirshaken: malformed request from {_gete('$si')} refused (Call-ID {_call_id()})\n")
            return EXIT
        if KSR.siputils.has_totag() > 0:
            return self.ksr_route_withindlg()
        if KSR.is_CANCEL():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return EXIT
        if KSR.is_ACK():
            # ACK for a negative reply of ours: tm absorbs it
            KSR.tm.t_check_trans()
            return EXIT
        if KSR.is_OPTIONS() and _gete("$rU") == "":
            KSR.sl.sl_send_reply(200, "OK")
            return EXIT
        if not KSR.is_INVITE():
            KSR.sl.sl_send_reply(405, "Method Not Allowed")
            return EXIT
        if KSR.tm.t_check_trans() == 0:
            return EXIT  # retransmission, absorbed by tm
        return self.ksr_route_invite()

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
        call_id = _call_id()
        identities = _header_values("Identity")
        rx_usable = False
        verstat: str | None = None
        if s.int("vs_enabled"):
            if identities:
                verdict = self.service.verify(
                    s,
                    call_id=call_id,
                    identities=identities,
                    date=KSR.pv.get("$hdr(Date)"),
                    orig_uri=self._calling_uri(),
                    dest_uri=_gete("$tu"),
                )
                verstat = verdict.verstat
                if verdict.passed:
                    rx_usable = True
                    KSR.info(f"stirshaken: Identity verified, attest {verdict.attest} (Call-ID {call_id})\n")
                else:
                    KSR.info(
                        f"stirshaken: Identity failed verification (Call-ID {call_id}): "
                        f"{verdict.sip_status} {verdict.detail}\n"
                    )
                    if s.str("vs_failure_action") == "reject" and verdict.sip_status < 500:
                        KSR.sl.sl_send_reply(verdict.sip_status, verdict.reason)
                        return EXIT
                    if s.int("vs_reason_header") and verdict.reason_header:
                        _append_header("Reason", verdict.reason_header)
                    rx_usable = bool(s.int("vs_pass_failed_identity"))
            else:
                if s.int("vs_require_identity"):
                    KSR.sl.sl_send_reply(428, "Use Identity Header")
                    return EXIT
                verstat = "No-TN-Validation"
            placement = s.str("vs_verstat_placement")
            if verstat and placement != "none":
                self._place_verstat(verstat, placement)
        else:
            rx_usable = bool(identities)  # not verified here: passed on as received
        KSR.pv.seti(AVP_RX_USABLE, 1 if (rx_usable and identities) else 0)

        KSR.rr.record_route()
        if self.ksr_route_attempts(s, first=True):
            return 1
        self._reply(503, "No Usable Route")
        return EXIT

    # -- equivalent of route[ATTEMPTS]: the per-entry policy loop -------------
    def ksr_route_attempts(self, s: Settings, *, first: bool) -> bool:
        """Relay to the first usable entry from here on; False when none is left."""
        call_id = _call_id()
        if first:
            found = KSR.dispatcher.ds_select_dst(s.int("route_group"), DS_ALG_PRIORITY) > 0
        else:
            found = KSR.dispatcher.ds_next_dst() > 0
        can_obtain = s.str("provider") != "disabled"
        while found:
            entry = _entry_policy(KSR.pv.get(ENTRY_ATTRS_PV))
            obtained = self._call_identity_obtained()
            has_identity = obtained is not None or KSR.pv.get(AVP_RX_USABLE) == 1
            action = decide(entry, has_identity=has_identity, can_obtain=can_obtain)
            if action is Action.OBTAIN:
                obtained = self.service.obtain(
                    s,
                    call_id=call_id,
                    source_ip=_gete("$si"),
                    orig_uri=self._calling_uri(),
                    dest_uri=_gete("$tu"),
                )
                if obtained is not None:
                    KSR.pv.sets(AVP_IDENTITY, obtained.identity)
                    KSR.pv.sets(AVP_DATE, obtained.date)
                action = after_obtain(entry, obtained=obtained is not None)
            if action is not Action.SKIP:
                KSR.info(
                    f"stirshaken: to {_gete(ENTRY_URI_PV)} ({entry.policy.value}): "
                    f"{_describe_identity(action, obtained)} (Call-ID {call_id})\n"
                )
                self.plan = (call_id, action, obtained)
                KSR.tm.t_on_branch(BRANCH_ROUTE)
                KSR.tm.t_on_failure(FAILURE_ROUTE)
                KSR.tm.t_set_fr(s.int("vendor_ring_timeout_ms"), s.int("vendor_timeout_ms"))
                relayed = KSR.tm.t_relay() > 0
                self.plan = None
                if relayed:
                    return True
                KSR.warn(f"stirshaken: relay to {_gete(ENTRY_URI_PV)} failed (Call-ID {call_id})\n")
            else:
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
            if plan is None or plan[0] != _call_id():
                KSR.err(f"stirshaken: branch without a plan, stripping Identity (Call-ID {_call_id()})\n")
                KSR.hdr.remove("Identity")
                return 1
            _, action, obtained = plan
            if action is Action.SEND_WITH_IDENTITY and obtained is None:
                return 1  # the received, verified Identity goes on as it came
            if KSR.hdr.is_present("Identity") > 0:
                KSR.hdr.remove("Identity")
            if action is Action.SEND_WITH_IDENTITY and obtained is not None:
                if KSR.hdr.is_present("Date") > 0:
                    KSR.hdr.remove("Date")
                _append_header("Date", obtained.date)
                _append_header("Identity", obtained.identity)
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
            if not (KSR.tm.t_check_status(FAILOVER_STATUS) > 0 or KSR.tm.t_branch_timeout() > 0):
                return EXIT  # e.g. 486 Busy: the caller gets it
            s = self.settings()
            self.ksr_route_attempts(s, first=False)
            # nothing left: tm relays the best reply received
            return 1
        except Exception as exc:  # noqa: BLE001
            KSR.err(f"stirshaken: failure route failed (Call-ID {_call_id()}): {_describe(exc)}\n")
            return EXIT

    # -- helpers ---------------------------------------------------------------
    def _calling_uri(self) -> str:
        """Calling party: P-Asserted-Identity if present, else From (ATIS-1000074 §5.2)."""
        return _gete("$ai") or _gete("$fu")

    def _call_identity_obtained(self) -> Obtained | None:
        identity = KSR.pv.get(AVP_IDENTITY)
        if not identity:
            return None
        return Obtained(str(identity), _gete(AVP_DATE), "transaction")

    def _place_verstat(self, verstat: str, placement: str) -> None:
        pais = _header_values("P-Asserted-Identity")
        name, values = ("P-Asserted-Identity", pais) if pais else ("From", _header_values("From"))
        if not values or len(values) >= MAX_HEADER_VALUES:
            return  # nothing to mark, or too many lines to rewrite without losing one
        try:
            new_values = [with_verstat(v, verstat, placement) for v in values]
        except ValueError as exc:
            KSR.info(f"stirshaken: cannot place verstat on {name} (Call-ID {_call_id()}): {exc}\n")
            return
        if new_values == values:
            return
        KSR.hdr.remove(name)
        for value in new_values:
            _append_header(name, value)

    def _reply(self, code: int, reason: str) -> None:
        try:
            KSR.sl.send_reply(code, reason)
        except Exception:  # noqa: BLE001
            pass


def mod_init() -> kamailio:
    _setup_logging()
    return kamailio()
