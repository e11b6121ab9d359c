"""The SIP Date header (RFC 3261 §20.17: rfc1123-date, always "GMT").

RFC 8225 §5.1.1: the PASSporT ``iat`` is the Date header in seconds since
the epoch, so the signer formats Date from ``iat`` and the verifier parses
it back. Formatting is locale-independent (never ``strftime("%a")``).
"""

from __future__ import annotations

import calendar
import re
import time

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name.lower(): number for number, name in enumerate(_MONTHS, start=1)}

# rfc1123-date = wkday "," SP date1 SP time SP "GMT"; tolerate a missing
# weekday and one-digit days, which some peers send, but nothing else.
_RFC1123 = re.compile(
    r"\s*(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+"
    r"(\d{2}):(\d{2}):(\d{2})\s+GMT\s*"
)


def format_sip_date(epoch_seconds: int) -> str:
    """``Tue, 15 Nov 1994 08:12:31 GMT`` for the given second."""
    t = time.gmtime(epoch_seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def parse_sip_date(value: str) -> int | None:
    """Seconds since the epoch, or None when the value is not an rfc1123-date."""
    match = _RFC1123.fullmatch(value)
    if match is None:
        return None
    day, month_name, year, hour, minute, second = match.groups()
    month = _MONTH_NUMBER.get(month_name.lower())
    y, d, h, mi, s = int(year), int(day), int(hour), int(minute), int(second)
    if month is None or y < 1970 or not (1 <= d <= calendar.monthrange(y, month)[1]):
        return None
    if h > 23 or mi > 59 or s > 60:  # 60: a leap second
        return None
    return calendar.timegm((y, month, d, h, mi, s, 0, 0, 0))
