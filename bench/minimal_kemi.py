"""bench/kamailio-baseline.cfg's relay written in Python KEMI, and nothing else.

bench_sip.py's case (k) runs kamailio.cfg with this script instead of
kemi/kamailio_stirshaken.py: what any Python KEMI routing costs over the
native cfg, before a single STIR decision.
"""

from __future__ import annotations

import KSR  # provided by app_python3

EXIT = -255
FAILURE_ROUTE = "ksr_failure_manage"


class kamailio:  # noqa: N801 - the name app_python3 looks for
    def child_init(self, rank: int) -> int:
        return 0

    def ksr_request_route(self, msg: object) -> int:
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return EXIT
        if KSR.sanity.sanity_check(17895, 7) < 0:
            return EXIT
        if KSR.siputils.has_totag() > 0:
            if KSR.rr.loose_route() > 0:
                KSR.tm.t_relay()
            elif KSR.is_ACK():
                if KSR.tm.t_check_trans() > 0:
                    KSR.tm.t_relay()
            else:
                KSR.sl.sl_send_reply(404, "Not Here")
            return EXIT
        if KSR.is_CANCEL():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return EXIT
        if KSR.is_ACK():
            KSR.tm.t_check_trans()
            return EXIT
        if not KSR.is_INVITE():
            KSR.sl.sl_send_reply(405, "Method Not Allowed")
            return EXIT
        KSR.tm.t_check_trans()
        KSR.rr.record_route()
        if KSR.dispatcher.ds_select_dst(1, 8) < 0:
            KSR.sl.sl_send_reply(503, "No Usable Route")
            return EXIT
        KSR.tm.t_on_failure(FAILURE_ROUTE)
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()
        return EXIT

    def ksr_failure_manage(self, msg: object) -> int:
        if KSR.tm.t_is_canceled() > 0:
            return EXIT
        if KSR.tm.t_check_status("408|5[0-9][0-9]|6[0-9][0-9]") > 0 or KSR.tm.t_branch_timeout() > 0:
            if KSR.dispatcher.ds_next_dst() > 0:
                KSR.tm.t_on_failure(FAILURE_ROUTE)
                KSR.tm.t_relay()
        return 1


def mod_init() -> kamailio:
    return kamailio()
