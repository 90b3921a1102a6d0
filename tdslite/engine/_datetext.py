"""Date and time strings in the formats SQL Server accepts (language us_english, DATEFORMAT mdy).

A string is an optional date, an optional time and an optional offset:

- date, numeric: ``2011-12-04``, ``2011-12-4``, ``2011/12/4``, ``2011.12.04`` (year first),
  ``12/4/2011``, ``12-04-11``, ``12.4.2011`` (month first, as DATEFORMAT mdy; a 2-digit year is
  1950-2049), unseparated ``20111204``;
- date, alphabetic: ``Dec 4 2011``, ``December 4, 2011``, ``4 Dec 2011``, ``04-Dec-2011``,
  ``2011 December 4`` (spaces, ``-`` or ``/`` between the parts);
- time: ``10:04``, ``10:04:23``, ``10:04:23.1234567`` (up to 7 digits; ``10:04:23:997`` takes
  milliseconds after a colon), ``10AM``, ``10:04 PM``; separated from the date by spaces or ``T``;
- offset (datetimeoffset): ``Z``, ``+05:30``, ``-14:00``.
An empty string is 1900-01-01 00:00:00. Anything else without a date or a time part, or with a
field out of range, is not a date.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["ParsedTemporal", "parse_temporal_text"]

#: (naive datetime without fraction, 100 ns ticks of the fraction, offset or None, has a time)
ParsedTemporal = tuple[dt.datetime, int, dt.tzinfo | None, bool]

_MONTHS = {
    name: i
    for i, names in enumerate(
        (
            ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
            ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
            ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}  # fmt: skip
_MONTH = r"(?P<mon>[a-z]{3,9})\.?"
_DATES = [
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"(?P<y>\d{4})(?P<s>[-/.])(?P<m>\d{1,2})(?P=s)(?P<d>\d{1,2})",
        r"(?P<m>\d{1,2})(?P<s>[-/.])(?P<d>\d{1,2})(?P=s)(?P<y>\d{4}|\d{2})",
        r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})(?![\d:])",
        _MONTH + r"[\s/-]+(?P<d>\d{1,2}),?[\s/-]+(?P<y>\d{4})",
        r"(?P<d>\d{1,2})[\s/-]+" + _MONTH + r",?[\s/-]+(?P<y>\d{4})",
        r"(?P<y>\d{4})[\s/-]+" + _MONTH + r"[\s/-]+(?P<d>\d{1,2})",
    )
]
_TIME = re.compile(
    r"(?P<h>\d{1,2})(?::(?P<mi>\d{1,2})(?::(?P<sec>\d{1,2})"
    r"(?:(?P<sep>[.:])(?P<frac>\d{1,7}))?)?)?\s*(?P<ampm>[ap]m)?",
    re.IGNORECASE,
)
_ZONE = re.compile(r"\s*(?P<zone>z|[+-]\d{1,2}:\d{2})\s*$", re.IGNORECASE)


def _year(text: str) -> int:
    year = int(text)
    if len(text) == 2:  # the two digit year cutoff: 1950-2049
        year += 2000 if year < 50 else 1900
    return year


def _date(text: str) -> tuple[dt.date | None, str]:
    """A date at the start of `text` (None if there is none) and the rest of the text."""
    for pattern in _DATES:
        m = pattern.match(text)
        if m is None:
            continue
        groups = m.groupdict()
        if "mon" in groups:
            month = _MONTHS.get(groups["mon"].lower())
            if month is None:
                return None, text
        else:
            month = int(groups["m"])
        return dt.date(_year(groups["y"]), month, int(groups["d"])), text[m.end() :]
    return None, text


def _time(text: str) -> tuple[int, int, int, int] | None:
    """(hour, minute, second, ticks) of a whole time string, or None."""
    m = _TIME.fullmatch(text)
    if m is None or (m["mi"] is None and m["ampm"] is None):
        return None
    hour, minute, second = int(m["h"]), int(m["mi"] or 0), int(m["sec"] or 0)
    frac = m["frac"] or ""
    if m["sep"] == ":":  # 10:04:23:997 is milliseconds
        ticks = int(frac) * 10_000 if len(frac) <= 3 else -1
    else:
        ticks = int(frac.ljust(7, "0"))
    if m["ampm"] is not None:
        if not 1 <= hour <= 12 and not (hour == 0 and m["ampm"].lower() == "am"):
            return None
        hour = hour % 12 + (12 if m["ampm"].lower() == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59 or ticks < 0:
        return None
    return hour, minute, second, ticks


def parse_temporal_text(text: str) -> ParsedTemporal | None:
    """Parse a date/time string; None when SQL Server would refuse it (error 241)."""
    body = text.strip()
    if not body:  # '' is 1900-01-01 00:00:00, as in SQL Server
        return dt.datetime(1900, 1, 1), 0, None, False
    tz: dt.tzinfo | None = None
    zone = _ZONE.search(body)
    if zone is not None and not _TIME.fullmatch(body):
        z = zone["zone"]
        if z.upper() == "Z":
            tz = dt.UTC
        else:
            sign = -1 if z[0] == "-" else 1
            hours, minutes = z[1:].split(":")
            tz = dt.timezone(sign * dt.timedelta(hours=int(hours), minutes=int(minutes)))
        body = body[: zone.start()]
    try:
        day, rest = _date(body)
    except ValueError:  # month 13, February 30...
        return None
    rest = rest.strip()
    if day is not None and rest[:1] in ("T", "t") and rest[1:2].isdigit():
        rest = rest[1:]
    clock = _time(rest) if rest else None
    if (rest and clock is None) or (day is None and clock is None):
        return None
    hour, minute, second, ticks = clock or (0, 0, 0, 0)
    base_day = day or dt.date(1900, 1, 1)
    base = dt.datetime(base_day.year, base_day.month, base_day.day, hour, minute, second)
    return base, ticks, tz, clock is not None
