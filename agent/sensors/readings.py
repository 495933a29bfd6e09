"""Readings as they enter the pipeline, and the checks every source's data goes through.

A source hands in ``(machine, ts, {channel: value})`` rows. ``Validator``
turns them into ``Row``s aligned to the machine's channel order, or rejects
them, and counts every rejection by reason (the metric labels):

- ``unknown_machine`` / ``unknown_channel``: not configured; dropped (a typo
  in another device's topic must not create streams nobody watches).
- ``not_a_number``: a value that is not a number, NaN or ±inf: kept as a
  *missing* value (NaN) so dropout detection sees it, never fed to a detector.
- ``out_of_range``: outside the channel's physical [min, max]: missing as well.
- ``future``: a timestamp beyond now + max_future_s: the row is dropped.
- ``out_of_order``: not after the machine's previous row: dropped (detectors
  are sequential; a late row cannot be scored in place).
- ``bad_timestamp``: not a finite number: dropped.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.sensors.spec import MachineSpec

NAN = float("nan")


@dataclass(slots=True)
class Row:
    """One machine's channel values at one time; NaN marks a missing value."""

    machine: str
    ts: float
    values: list[float]
    #: perf_counter() when the row entered the pipeline: ingest-to-alert latency
    received: float = 0.0
    source: str = ""


@dataclass
class Validator:
    machines: Mapping[str, MachineSpec]
    max_future_s: float = 5.0
    clock: Any = time.time
    counts: Counter[str] = field(default_factory=Counter)
    per_machine: dict[str, Counter[str]] = field(default_factory=dict)
    _last_ts: dict[str, float] = field(default_factory=dict)
    _index: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {m.name: {c.name: i for i, c in enumerate(m.channels)} for m in self.machines.values()}
        self.per_machine = {name: Counter() for name in self.machines}

    def _count(self, machine: str, reason: str, n: int = 1) -> None:
        self.counts[reason] += n
        if machine in self.per_machine:
            self.per_machine[machine][reason] += n

    def row(
        self, machine: str, ts: Any, values: Mapping[str, Any], *, source: str = "", received: float = 0.0
    ) -> Row | None:
        """Validate one row; None when it is dropped (the reason is counted)."""
        spec = self.machines.get(machine)
        if spec is None:
            self._count(machine, "unknown_machine")
            return None
        try:
            t = float(ts)
        except (TypeError, ValueError):
            t = NAN
        if not math.isfinite(t):
            self._count(machine, "bad_timestamp")
            return None
        if t > self.clock() + self.max_future_s:
            self._count(machine, "future")
            return None
        last = self._last_ts.get(machine)
        if last is not None and t <= last:
            self._count(machine, "out_of_order")
            return None
        index = self._index[machine]
        out = [NAN] * len(spec.channels)
        seen = 0
        for name, raw in values.items():
            i = index.get(name)
            if i is None:
                self._count(machine, "unknown_channel")
                continue
            seen += 1
            v = _number(raw)
            if v is None:
                self._count(machine, "not_a_number")
                continue
            ch = spec.channels[i]
            if not ch.valid_min <= v <= ch.valid_max:
                self._count(machine, "out_of_range")
                continue
            out[i] = v
        if not seen:
            self._count(machine, "empty")
            return None
        self._last_ts[machine] = t
        self._count(machine, "accepted")
        return Row(machine, t, out, received, source)

    def rows(
        self, machine: str, items: Iterable[tuple[Any, Mapping[str, Any]]], *, source: str = ""
    ) -> list[Row]:
        received = time.perf_counter()
        out = []
        for ts, values in items:
            row = self.row(machine, ts, values, source=source, received=received)
            if row is not None:
                out.append(row)
        return out

    def reset(self, machine: str) -> None:
        """Forget a machine's last timestamp (its node restarted; its clock started over)."""
        self._last_ts.pop(machine, None)


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        v = float(raw)
    elif isinstance(raw, str):
        try:
            v = float(raw)
        except ValueError:
            return None
    else:
        return None
    return v if math.isfinite(v) else None
