"""Bus events of the sensor pipeline.

``sensor.reading`` is a *sample* (one per machine every ``reading_event_s``),
not every reading: the bus is for people watching and for other services,
and a 1 kHz stream must not flood every subscriber. Alerts get one event per
transition, carrying the alert as it was at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from agent.bus import Event


@dataclass(frozen=True, kw_only=True)
class SensorReading(Event):
    type: ClassVar[str] = "sensor.reading"
    machine: str
    reading_ts: float
    values: dict[str, float | None]
    phase: str = "detecting"
    score: float = 0.0


@dataclass(frozen=True, kw_only=True)
class AlertEvent(Event):
    """Base of the alert transitions; ``alert`` is the alert's JSON form (as /v1/alerts lists it)."""

    alert: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class AlertOpened(AlertEvent):
    type: ClassVar[str] = "alert.opened"


@dataclass(frozen=True, kw_only=True)
class AlertEscalated(AlertEvent):
    type: ClassVar[str] = "alert.escalated"


@dataclass(frozen=True, kw_only=True)
class AlertCleared(AlertEvent):
    type: ClassVar[str] = "alert.cleared"


@dataclass(frozen=True, kw_only=True)
class AlertAcked(AlertEvent):
    type: ClassVar[str] = "alert.acked"


EVENT_FOR = {
    "opened": AlertOpened,
    "escalated": AlertEscalated,
    "cleared": AlertCleared,
    "acked": AlertAcked,
}
