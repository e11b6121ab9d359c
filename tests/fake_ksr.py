"""A stateful fake of the ``KSR`` module, for unit tests of ``kemi/``.

It covers only what the KEMI script calls, keeps the state Kamailio would
keep, and raises :class:`UnexpectedCall` on anything else (an unknown
function, an unknown pseudo-variable, a header appended without CRLF).

State model (what Kamailio does, reduced):

- A :class:`Message` has its received headers.  ``$hdr``/``$hdrc`` read the
  received headers only: header changes are lumps, invisible to PVs.
- Header changes go to the current *level*: the request route (applies to
  every branch), the failure route (applies to branches created in it) or
  the branch route (applies to that branch only).
- ``tm.t_relay`` runs the armed branch route by name on the handler, then
  records the :class:`Branch` as sent: destination and final header list.
- :meth:`FakeKSR.fail` plays a failed branch (status or timeout) and runs the
  armed failure route by name.
- AVPs and XAVPs belong to the transaction; ``$shv`` to the whole process set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


class UnexpectedCall(AssertionError):
    """The script used something this fake (and so the script's contract) does not cover."""


@dataclass
class Message:
    method: str = "INVITE"
    ruri_user: str = "+12155550131"
    headers: list[tuple[str, str]] = field(default_factory=list)
    source_ip: str = "127.0.0.1"
    call_id: str = "call-1@test"
    to_tag: str = ""

    def header_values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class Branch:
    destination: str
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class Entry:
    uri: str
    attrs: str = ""


class _Level:
    def __init__(self) -> None:
        self.removed: set[str] = set()
        self.appended: list[tuple[str, str]] = []


_URI_IN = re.compile(r"<([^>]*)>")


def _uri_of(value: str) -> str:
    match = _URI_IN.search(value)
    if match:
        return match.group(1)
    return value.split(";", 1)[0].strip()


class _Namespace:
    def __init__(self, owner: FakeKSR, name: str, functions: dict[str, Any]) -> None:
        self._owner = owner
        self._name = name
        self._functions = functions

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        try:
            return self._functions[attr]
        except KeyError:
            raise UnexpectedCall(f"KSR.{self._name}.{attr} is not covered by the fake") from None


class FakeKSR:
    """Install with ``sys.modules["KSR"] = fake`` before importing the KEMI script."""

    def __init__(self) -> None:
        self.handler: Any = None
        self.settings: dict[str, object] = {}
        self.shv: dict[str, object] = {}
        self.core_debug = 2  # Kamailio's debug level: 2 (info) shows KSR.info lines
        self.logs: list[tuple[str, str]] = []
        self.reset(Message())
        self.htables: dict[str, dict[str, str]] = {"ss_breaker": {}}
        self.pv = _Namespace(self, "pv", {"get": self._pv_get, "gete": self._pv_gete, "seti": self._pv_set,
                                          "sets": self._pv_set, "is_null": lambda n: self._pv_get(n) is None,
                                          "unset": self._pv_unset})
        self.hdr = _Namespace(self, "hdr", {"append": self._hdr_append, "remove": self._hdr_remove,
                                            "is_present": self._hdr_is_present,
                                            "append_to_reply": self._hdr_append_to_reply})
        self.htable = _Namespace(self, "htable", {"sht_get": self._sht_get, "sht_sets": self._sht_sets})
        self.sl = _Namespace(self, "sl", {"sl_send_reply": self._reply, "send_reply": self._reply})
        self.tm = _Namespace(self, "tm", {
            "t_check_trans": self._t_check_trans, "t_relay": self._t_relay, "t_on_branch": self._t_on_branch,
            "t_on_failure": self._t_on_failure, "t_set_fr": self._t_set_fr, "t_is_canceled": lambda: -1,
            "t_check_status": self._t_check_status, "t_branch_timeout": lambda: 1 if self._timeout else -1,
            "t_reply": self._reply, "t_newtran": lambda: 1,
        })
        self.rr = _Namespace(self, "rr", {"record_route": self._record_route, "loose_route": lambda: -1})
        self.maxfwd = _Namespace(self, "maxfwd", {"process_maxfwd": lambda limit: 1})
        self.sanity = _Namespace(self, "sanity", {"sanity_check": self._sanity_check})
        self.siputils = _Namespace(self, "siputils", {"has_totag": lambda: 1 if self.msg.to_tag else -1})
        self.dispatcher = _Namespace(self, "dispatcher", {"ds_select_dst": self._ds_select,
                                                          "ds_next_dst": self._ds_next})

    # -- test control ---------------------------------------------------------
    def reset(self, msg: Message, *, entries: list[Entry] | None = None) -> None:
        """A new incoming request (and a new transaction)."""
        self.msg = msg
        self.entries = entries if entries is not None else []
        self.avps: dict[str, object] = {}
        self.xavp_index: int | None = None
        self.replies: list[tuple[int, str]] = []
        self.branches: list[Branch] = []
        self.retransmission = False
        self.insane: tuple[int, str] | None = None  # sanity_check fails, answering this
        self.relay_fails: set[str] = set()
        self.on_branch: str | None = None
        self.on_failure: str | None = None
        self.fr: tuple[int, int] | None = None
        self.record_routed = False
        self._status: int | None = None
        self._timeout = False
        self._reply_headers: dict[str, str] = {}
        self.reply_headers: list[tuple[str, str]] = []
        self.du: str | None = None
        self.ruri_set: str | None = None  # $ru as set by the script (a 3xx reply's Contact)
        self._request = _Level()
        self._failure: _Level | None = None
        self._branch: _Level | None = None
        self._level = self._request

    def fail(self, status: int | None, headers: dict[str, str] | None = None) -> None:
        """The last branch failed with *status* (None: timeout); run the failure route.

        *headers* are those of the reply (``$T_rpl($hdr(NAME))``), e.g. a 302's Identity.
        """
        if self.on_failure is None:
            raise AssertionError("no failure route armed")
        self._status = 408 if status is None else status
        self._timeout = status is None
        self._reply_headers = {k.lower(): v for k, v in (headers or {}).items()}
        self._failure = _Level()
        self._level = self._failure
        route, self.on_failure = self.on_failure, None
        try:
            getattr(self.handler, route)(self.msg)
        finally:
            self._level = self._request
            self._failure = None

    def log_text(self) -> str:
        return "".join(text for _, text in self.logs)

    # -- logging --------------------------------------------------------------
    def _log(self, level: str) -> Any:
        def log(text: str) -> None:
            self.logs.append((level, text))
        return log

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)  # introspection (module scanners, copy, pickle)
        if attr in ("info", "warn", "err", "dbg", "notice", "crit"):
            return self._log(attr)
        if attr.startswith("is_") and attr[3:].isupper():
            return lambda: self.msg.method == attr[3:]
        raise UnexpectedCall(f"KSR.{attr} is not covered by the fake")

    # -- pseudo-variables -------------------------------------------------------
    def _first(self, name: str) -> str | None:
        values = self.msg.header_values(name)
        return values[0] if values else None

    def _pv_get(self, name: str) -> object:
        if name == "$ci":
            return self.msg.call_id
        if name == "$rm":
            return self.msg.method
        if name == "$sel(cfg_get.core.debug)":
            return self.core_debug
        if name == "$si":
            return self.msg.source_ip
        if name == "$rU":
            return self.msg.ruri_user or None
        if name == "$ru":
            return self.ruri_set or f"sip:{self.msg.ruri_user}@127.0.0.1"
        if name == "$fd":
            return "127.0.0.1"
        if name == "$du":
            return self.du
        if name == "$T_reply_code":
            if self._status is None:
                raise UnexpectedCall("$T_reply_code outside a failure route")
            return self._status
        m = re.fullmatch(r"\$T_rpl\(\$hdr\(([^)]+)\)\)", name)
        if m:
            if self._status is None:
                raise UnexpectedCall("$T_rpl outside a failure route")
            return self._reply_headers.get(m.group(1).lower())
        if name == "$fu":
            value = self._first("From")
            return _uri_of(value) if value else None
        if name == "$tu":
            value = self._first("To")
            return _uri_of(value) if value else None
        if name == "$ai":
            value = self._first("P-Asserted-Identity")
            return _uri_of(value) if value else None
        m = re.fullmatch(r"\$hdr\(([^)]+)\)", name)
        if m:
            return self._first(m.group(1))
        m = re.fullmatch(r"\$hdrc\(([^)]+)\)", name)
        if m:
            return len(self.msg.header_values(m.group(1)))
        m = re.fullmatch(r"\$\(hdr\(([^)]+)\)\[(\d+)\]\)", name)
        if m:
            values = self.msg.header_values(m.group(1))
            index = int(m.group(2))
            return values[index] if index < len(values) else None
        m = re.fullmatch(r"\$sel\(cfg_get\.stirshaken\.([a-z0-9_]+)\)", name)
        if m:
            return self.settings.get(m.group(1))
        m = re.fullmatch(r"\$avp\(([a-z_]+)\)", name)
        if m:
            return self.avps.get(m.group(1))
        m = re.fullmatch(r"\$shv\(([a-z_]+)\)", name)
        if m:
            return self.shv.get(m.group(1))
        m = re.fullmatch(r"\$xavp\(_dsdst_=>(uri|attrs)\)", name)
        if m:
            if self.xavp_index is None or self.xavp_index >= len(self.entries):
                return None
            entry = self.entries[self.xavp_index]
            return entry.uri if m.group(1) == "uri" else (entry.attrs or None)
        raise UnexpectedCall(f"pseudo-variable {name} is not covered by the fake")

    def _pv_gete(self, name: str) -> str:
        value = self._pv_get(name)
        return "" if value is None else str(value)

    def _pv_unset(self, name: str) -> int:
        m = re.fullmatch(r"\$avp\(([a-z_]+)\)", name)
        if not m:
            raise UnexpectedCall(f"cannot unset {name} in the fake")
        self.avps.pop(m.group(1), None)
        return 1

    def _sht_get(self, table: str, key: str) -> str | None:
        if table not in self.htables:
            raise UnexpectedCall(f"no htable {table!r} (kamailio.cfg declares ss_breaker)")
        return self.htables[table].get(key)

    def _sht_sets(self, table: str, key: str, value: str) -> int:
        if table not in self.htables or not isinstance(value, str):
            raise UnexpectedCall(f"sht_sets({table!r}, {key!r}, {value!r})")
        self.htables[table][key] = value
        return 1

    def _pv_set(self, name: str, value: object) -> int:
        if name == "$ru":
            self.ruri_set = str(value)
            return 1
        if name == "$du":
            self.du = str(value)
            return 1
        m = re.fullmatch(r"\$avp\(([a-z_]+)\)", name)
        if m:
            self.avps[m.group(1)] = value
            return 1
        m = re.fullmatch(r"\$shv\(([a-z_]+)\)", name)
        if m:
            self.shv[m.group(1)] = value
            return 1
        raise UnexpectedCall(f"cannot set {name} in the fake")

    # -- headers ------------------------------------------------------------------
    def _hdr_append(self, text: str) -> int:
        """Header lines, each ending in CRLF (Kamailio inserts the text as it is)."""
        if not text.endswith("\r\n"):
            raise UnexpectedCall(f"header lines must end in CRLF: {text!r}")
        for line in text[:-2].split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep or not name.strip() or "\n" in line or "\r" in line:
                raise UnexpectedCall(f"not a header line: {line!r} in {text!r}")
            self._level.appended.append((name.strip(), value.strip()))
        return 1

    def _hdr_remove(self, name: str) -> int:
        present = bool(self.msg.header_values(name))
        self._level.removed.add(name.lower())
        return 1 if present else -1

    def _hdr_append_to_reply(self, text: str) -> int:
        if not text.endswith("\r\n") or text.count("\r\n") != 1:
            raise UnexpectedCall(f"header must be one line ending in CRLF: {text!r}")
        name, _, value = text[:-2].partition(":")
        self.reply_headers.append((name.strip(), value.strip()))
        return 1

    def _hdr_is_present(self, name: str) -> int:
        return 1 if self.msg.header_values(name) else -1

    # -- replies, transactions ------------------------------------------------------
    def _reply(self, code: int, reason: str) -> int:
        if not isinstance(code, int):
            raise UnexpectedCall(f"reply code must be an int, got {code!r}")
        self.replies.append((code, reason))
        return 1

    def _sanity_check(self, checks: int, uri_checks: int) -> int:
        if not (isinstance(checks, int) and isinstance(uri_checks, int)):
            raise UnexpectedCall("sanity_check takes ints")
        if self.insane is not None:
            self.replies.append(self.insane)  # the module answers by itself
            return -1
        return 1

    def _t_check_trans(self) -> int:
        if self.msg.method == "INVITE" and self.retransmission:
            return 0
        return -1

    def _t_on_branch(self, name: str) -> int:
        self._callable(name)
        self.on_branch = name
        return 1

    def _t_on_failure(self, name: str) -> int:
        self._callable(name)
        self.on_failure = name
        return 1

    def _callable(self, name: str) -> None:
        if not callable(getattr(self.handler, name, None)):
            raise UnexpectedCall(f"route {name!r} is not a method of the handler")

    def _t_set_fr(self, fr_inv: int, fr: int) -> int:
        if not (isinstance(fr_inv, int) and isinstance(fr, int)):
            raise UnexpectedCall("t_set_fr takes ints")
        self.fr = (fr_inv, fr)
        return 1

    def _t_check_status(self, regexp: str) -> int:
        if self._status is None:
            raise UnexpectedCall("t_check_status outside a failure route")
        return 1 if re.fullmatch(regexp, str(self._status)) else -1

    def _record_route(self) -> int:
        self.record_routed = True
        return 1

    def _t_relay(self) -> int:
        if self.du is None:
            raise UnexpectedCall("t_relay without a destination")
        destination = self.du
        if destination in self.relay_fails:
            return -1
        levels = [self._request] + ([self._failure] if self._failure else [])
        if self.on_branch is not None:
            self._branch = _Level()
            saved, self._level = self._level, self._branch
            try:
                getattr(self.handler, self.on_branch)(self.msg)
            finally:
                self._level = saved
            levels.append(self._branch)
            self._branch = None
        removed = set().union(*(lv.removed for lv in levels))
        headers = [(n, v) for n, v in self.msg.headers if n.lower() not in removed]
        for level in levels:
            headers += level.appended
        self.branches.append(Branch(destination, headers))
        return 1

    # -- dispatcher -------------------------------------------------------------------
    def _ds_select(self, setid: int, alg: int) -> int:
        if not isinstance(setid, int) or alg != 8:
            raise UnexpectedCall(f"ds_select_dst({setid!r}, {alg!r})")
        if not self.entries:
            return -1
        self.xavp_index = 0
        self.du = self.entries[0].uri
        return 1

    def _ds_next(self) -> int:
        if self.xavp_index is None:
            return -1
        self.xavp_index += 1
        if self.xavp_index < len(self.entries):
            self.du = self.entries[self.xavp_index].uri
            return 1
        return -1
