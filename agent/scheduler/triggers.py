"""When a job fires: cron, interval, one-off, bus event, or after its dependencies.

A trigger is written as one short string, the same in ``jobs.toml``, the API
and the CLI: ``cron:*/15 * * * *``, ``every:10m``, ``at:2026-12-05T20:00``,
``on:alert.major``, ``after`` (runs when every job it depends on has
succeeded) or ``manual`` (only ``jobs run``).

Cron expressions are evaluated in the box's local time zone unless one is
given: plain ones by ``agent.scheduler.cron`` (so the idle daemon does not
load croniter), everything else by croniter (a maintained parser, DST handled
through an aware datetime), which has the last word on both.
``fires_between`` is what the missed-run policy needs: every scheduled time in
``(since, until]``, bounded, so a box that was off for a month does not build
a list of 40,000 fires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any

from agent.errors import BadRequestError
from agent.scheduler import cron

KINDS = ("cron", "every", "at", "on", "after", "manual")

#: bus-event triggers: the name a job uses -> (bus event types, a test on the event's dict form)
EVENT_TRIGGERS: dict[str, tuple[frozenset[str], str]] = {
    "alert.major": (frozenset({"alert.opened", "alert.escalated"}), "an alert reached Major or Critical"),
    "model.installed": (frozenset({"models.installed"}), "a model was installed or activated"),
    "hub.connected": (frozenset({"sync.connected"}), "the hub connection came up"),
}
_MAJOR = {"major", "critical"}
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_interval(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``7d`` or plain seconds (at least one second)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m:
        raise BadRequestError(f"interval {text!r}: use a number with s, m, h, d or w (e.g. 30s, 15m, 1h)")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if value < 1:
        raise BadRequestError(f"interval {text!r} is under one second; the scheduler's grain is 1 s")
    return value


def local_tz() -> tzinfo:
    return datetime.now().astimezone().tzinfo or timezone.utc


@dataclass(frozen=True)
class Trigger:
    kind: str
    expr: str = ""
    #: interval seconds (every), or the fire time (at)
    seconds: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Trigger:
        text = (text or "").strip()
        kind, _, expr = text.partition(":")
        kind, expr = kind.strip().lower(), expr.strip()
        if kind not in KINDS:
            raise BadRequestError(
                f"trigger {text!r}: start with one of {', '.join(k + ':' for k in KINDS[:4])} "
                "or write after / manual (e.g. cron:0 6 * * *, every:15m)"
            )
        if kind == "cron":
            if cron.parse(expr) is None and not _croniter_valid(expr):
                raise BadRequestError(
                    f"cron expression {expr!r} is not valid: five fields, minute hour day month weekday "
                    "(e.g. 0 6 * * * for 06:00 every day)"
                )
            return cls("cron", expr)
        if kind == "every":
            return cls("every", expr, parse_interval(expr))
        if kind == "at":
            return cls("at", expr, _parse_time(expr))
        if kind == "on":
            if expr not in EVENT_TRIGGERS:
                raise BadRequestError(f"event trigger {expr!r}: use one of {', '.join(EVENT_TRIGGERS)}")
            return cls("on", expr)
        if expr:
            raise BadRequestError(f"trigger {kind!r} takes no value")
        return cls(kind)

    def __str__(self) -> str:
        return f"{self.kind}:{self.expr}" if self.expr else self.kind

    @property
    def timed(self) -> bool:
        return self.kind in ("cron", "every", "at")

    def next_after(self, t: float, tz: tzinfo | None = None) -> float | None:
        """The first fire strictly after ``t`` (None: never, or not a timed trigger)."""
        if self.kind == "every":
            return t + self.seconds
        if self.kind == "at":
            return self.seconds if self.seconds > t else None
        if self.kind == "cron":
            tz = tz or local_tz()
            plain = cron.parse(self.expr)
            found = cron.next_fire(plain, t, tz) if plain is not None else None
            if found is not None:
                return found
            from croniter import croniter

            return float(croniter(self.expr, datetime.fromtimestamp(t, tz)).get_next(float))
        return None

    def fires_between(
        self, since: float, until: float, tz: tzinfo | None = None, limit: int = 1000
    ) -> list[float]:
        """Scheduled times in ``(since, until]``, oldest first, at most ``limit`` (the newest kept)."""
        if not self.timed or until <= since:
            return []
        if self.kind == "every":
            n = int((until - since) // self.seconds)
            first = max(1, n - limit + 1)
            return [since + k * self.seconds for k in range(first, n + 1)]
        if self.kind == "at":
            return [self.seconds] if since < self.seconds <= until else []
        tz = tz or local_tz()
        plain = cron.parse(self.expr)
        fires = cron.fires_between(plain, since, until, tz, limit) if plain is not None else None
        if fires is not None:
            return fires
        from croniter import croniter

        it = croniter(self.expr, datetime.fromtimestamp(since, tz))
        out: list[float] = []
        while True:
            nxt = float(it.get_next(float))
            if nxt > until:
                return out
            out.append(nxt)
            if len(out) > limit:
                out.pop(0)

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether a bus event (its dict form) fires this ``on:`` trigger."""
        if self.kind != "on":
            return False
        types, _ = EVENT_TRIGGERS[self.expr]
        if event.get("type") not in types:
            return False
        if self.expr == "alert.major":
            alert = event.get("alert") or {}
            return str(alert.get("level", "")).lower() in _MAJOR
        return True


def event_types() -> frozenset[str]:
    """Every bus event type some ``on:`` trigger listens to."""
    return frozenset().union(*(types for types, _ in EVENT_TRIGGERS.values()))


def _croniter_valid(expr: str) -> bool:
    """croniter's verdict on what ``cron.parse`` leaves to it (names, L, W, #, both day fields...)."""
    from croniter import croniter

    return bool(croniter.is_valid(expr))


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequestError(
            f"time {text!r}: use ISO 8601 (2026-12-05T20:00, 2026-12-05T20:00Z) or Unix seconds"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=local_tz())
    return dt.timestamp()
