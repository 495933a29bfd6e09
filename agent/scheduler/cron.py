"""Plain cron expressions evaluated without croniter, so the idle daemon does not import it.

croniter (with dateutil, zoneinfo and ctypes behind it) costs the daemon about
1.2 MiB of resident memory, only to find the next fire of a few daily jobs.
The expressions the built-in jobs and most people write -- five fields of
numbers, ``*``, ranges, steps and lists, with the day of month or the day of
week left ``*`` (no other star in those two) -- are evaluated here in the zone's wall-clock time. Anything
else (names, ``L``, ``W``, ``#``, ``?``, ``H``, a sixth field, both day fields
restricted: croniter's "either day" rule) and any answer that would cross a
change of the zone's UTC offset (DST) or lie more than a week ahead are left
to croniter (``None`` here), so every answer is croniter's; the tests compare
the two over many expressions and instants.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

#: minute, hour, day of month, month, day of week (0 = Sunday)
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_ITEM = re.compile(r"(\*|\d{1,2}(?:-\d{1,2})?)(?:/(\d{1,2}))?")
#: how far ahead the plain evaluation looks before it leaves the answer to croniter
HORIZON = timedelta(days=7)


@dataclass(frozen=True)
class PlainCron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]


def _field(text: str, lo: int, hi: int) -> list[int] | None:
    out: set[int] = set()
    for item in text.split(","):
        m = _ITEM.fullmatch(item)
        if m is None:
            return None
        span, step_text = m.group(1), m.group(2)
        if span == "*":
            first, last = lo, hi
        elif "-" in span:
            first, last = (int(x) for x in span.split("-"))
            if first == last:  # croniter reads "12-12/5" its own way
                return None
        elif step_text is not None:  # "5/15": left to croniter's reading
            return None
        else:
            first = last = int(span)
        step = int(step_text) if step_text is not None else 1
        if not (lo <= first <= last <= hi and 1 <= step <= hi - lo):
            return None
        out.update(range(first, last + 1, step))
    return sorted(out)


@functools.lru_cache(maxsize=256)
def parse(expr: str) -> PlainCron | None:
    """The expression's fields when it is plain (see the module's doc), else None."""
    parts = expr.split()
    if len(parts) != 5 or (parts[2] != "*" and parts[4] != "*"):
        return None
    if any("*" in parts[i] and parts[i] != "*" for i in (2, 4)):
        return None  # croniter reads a star inside a day field ("*/2") as "every day" in places
    fields = [_field(text, lo, hi) for text, (lo, hi) in zip(parts, _BOUNDS, strict=True)]
    minutes, hours, days, months, weekdays = fields
    if minutes is None or hours is None or days is None or months is None or weekdays is None:
        return None
    return PlainCron(tuple(minutes), tuple(hours), frozenset(days), frozenset(months), frozenset(weekdays))


def next_fire(cron: PlainCron, t: float, tz: tzinfo) -> float | None:
    """The first matching minute strictly after ``t``; None where croniter must answer."""
    now = datetime.fromtimestamp(t, tz)
    wall = now.replace(tzinfo=None)
    first = wall.replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = first.replace(hour=0, minute=0)
    while day - wall <= HORIZON:
        if day.month in cron.months and day.day in cron.days and (day.weekday() + 1) % 7 in cron.weekdays:
            for hour in cron.hours:
                for minute in cron.minutes:
                    found = day.replace(hour=hour, minute=minute)
                    if found >= first:
                        return _same_offset(found, now, tz) if found - wall <= HORIZON else None
        day += timedelta(days=1)
    return None


def _same_offset(found: datetime, now: datetime, tz: tzinfo) -> float | None:
    """``found`` as a timestamp, or None when the zone's offset changes on the way (DST: croniter's rules)."""
    early, late = found.replace(tzinfo=tz), found.replace(tzinfo=tz, fold=1)
    offset = now.utcoffset()
    if early.utcoffset() != offset or late.utcoffset() != offset:
        return None
    return early.timestamp()


def fires_between(cron: PlainCron, since: float, until: float, tz: tzinfo, limit: int) -> list[float] | None:
    """Every fire in ``(since, until]``, the newest ``limit`` kept; None where croniter must answer."""
    out: list[float] = []
    t = since
    while True:
        nxt = next_fire(cron, t, tz)
        if nxt is None:
            return None
        if nxt > until:
            return out
        out.append(nxt)
        if len(out) > limit:
            out.pop(0)
        t = nxt
