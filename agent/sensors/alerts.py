"""Alert policy: four levels from score thresholds and durations, hysteresis, one alert per condition.

A *condition* is one thing that can be wrong on a machine: ``anomaly`` (the
ensemble), ``stuck:CH``, ``dropout:CH`` and ``limit:CH`` (forecast and alarm
limit). Each has at most one open alert (de-duplication); while it persists
it can only escalate.

Levels: each level has a score threshold and a duration. Time spent at or
above the threshold accumulates; time below drains the accumulator twice as
fast (a leak), so a score that flickers around the threshold, as a rising
noise does, still opens an alert, while a single stray sample never does. A
level is reached when its accumulator holds its duration. An open alert also
escalates one level every ``escalate_after_s`` it persists at the same level
with the score at or above the Warning threshold.

On-delay (ISA-18.2): for the ``anomaly`` condition the Warning duration is at
least the engine's ``on_delay_s``, the correlation time of its held-out score
(``bind``): a fluctuation shorter than the score's own memory is not an alarm.
Minor and above keep their durations, so strong evidence opens at once.

Hysteresis: an open alert clears only after the score stayed below its
clearing level (``clear_ratio`` x the Warning threshold, raised by the engine
to where held-out normal rows score) for ``clear_s`` seconds. All times are
the readings' own timestamps, so a replay and a live stream behave alike.

Alarm-flood protection (ISA-18.2 / EEMUA 191):

- chattering: a condition that opens again within ``CHATTER_S`` of clearing
  is chattering; each such re-open doubles how long it must stay quiet before
  it clears (up to 16x ``clear_s``), so it settles into one long alert instead
  of a stream of short ones. A quiet ``CHATTER_S`` resets it.
- incidents: alerts that open on a machine while another is open there join
  its incident (``incident`` = the first alert's id), so an operator sees one
  event with its channels, not a burst of separate alarms.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agent.sensors.engine import Scores
from agent.sensors.forecast import describe_eta
from agent.sensors.spec import LEVELS, MachineSpec

LEVEL_RANK = {name: i for i, name in enumerate(LEVELS)}
_LEAK = 2.0
CHATTER_S = 60.0  # ISA-18.2's chattering window: re-opened within a minute of clearing
CHATTER_MAX = 16.0


def _new_id() -> str:
    try:
        from sync.envelope import new_id

        return new_id()
    except ImportError:  # pragma: no cover - sync/ is part of the product; a fallback for partial installs
        return uuid.uuid4().hex


@dataclass
class Alert:
    id: str
    machine: str
    condition: str
    level: str
    state: str  # open | cleared
    title: str
    score: float  # peak
    opened_at: float
    updated_at: float
    cleared_at: float | None = None
    acked_at: float | None = None
    acked_by: str = ""
    channels: list[dict[str, Any]] = field(default_factory=list)
    hint: str = ""
    detectors: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    incident: str = ""
    #: shelved (by an operator, e.g. from the hub's `edge-hub alerts shelve`) until this time
    shelved_until: float | None = None
    shelved_by: str = ""

    @property
    def source(self) -> str:
        return f"sensors/{self.machine}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "machine": self.machine,
            "source": self.source,
            "condition": self.condition,
            "level": self.level,
            "state": self.state,
            "title": self.title,
            "score": round(self.score, 4),
            "start": self.opened_at,
            "end": self.cleared_at,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "cleared_at": self.cleared_at,
            "acked_at": self.acked_at,
            "acked_by": self.acked_by,
            "channels": self.channels,
            "hint": self.hint,
            "detectors": {k: round(v, 4) for k, v in self.detectors.items()},
            "history": self.history,
            "incident": self.incident or self.id,
            "shelved_until": self.shelved_until,
            "shelved_by": self.shelved_by,
        }


@dataclass
class Transition:
    kind: str  # opened | escalated | cleared | acked
    alert: Alert
    #: perf_counter() when the reading that caused it entered the pipeline (ingest-to-alert latency)
    received: float = 0.0
    #: the alert as it was at this transition (``alert`` goes on changing)
    snapshot: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.snapshot:
            self.snapshot = self.alert.to_dict()
            self.snapshot["history"] = list(self.alert.history)


@dataclass
class _Cond:
    acc: list[float]
    alert: Alert | None = None
    last_ts: float | None = None
    below_since: float | None = None
    level_since: float = 0.0
    episode_start: float | None = None
    cleared_at: float | None = None  # when its last alert cleared (chattering)
    hold: float = 1.0  # clear_s multiplier, doubled by each chattering re-open


class AlertPolicy:
    """Turns one machine's scores into alert transitions."""

    def __init__(self, spec: MachineSpec, *, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.clock = clock
        self.rules = spec.levels
        self.anomaly_rules = spec.levels
        self.warn = self.rules[0].threshold
        self.clear_below = spec.clear_ratio * self.warn
        self.period = 1.0 / spec.rate_hz
        self.conds: dict[str, _Cond] = {}

    def restore(self, alert: Alert) -> None:
        """Adopt an alert still open in the store (daemon restart): it stays the one open alert."""
        cond = self._cond(alert.condition)
        cond.alert = alert
        cond.level_since = alert.updated_at
        cond.episode_start = alert.opened_at

    def _cond(self, name: str) -> _Cond:
        cond = self.conds.get(name)
        if cond is None:
            cond = self.conds[name] = _Cond(acc=[0.0] * len(self.rules))
        return cond

    @property
    def open_alerts(self) -> list[Alert]:
        return [c.alert for c in self.conds.values() if c.alert is not None]

    # ------------------------------------------------------------ feeding

    def update(self, scores: Scores, received: float | np.ndarray = 0.0) -> list[Transition]:
        """``received``: when each row (an array) or the whole batch (a number) entered the pipeline."""
        out: list[Transition] = []
        self._feed("anomaly", scores.ts, scores.combined, scores, None, out, received)
        for c, ch in enumerate(self.spec.channels):
            self._feed(f"stuck:{ch.name}", scores.ts, scores.stuck[:, c], scores, c, out, received)
            self._feed(f"dropout:{ch.name}", scores.ts, scores.dropout[:, c], scores, c, out, received)
            if ch.limit is not None:
                self._feed(f"limit:{ch.name}", scores.ts, scores.limit[:, c], scores, c, out, received)
        return out

    def update_staleness(self, now: float, stale: list[float], received: float = 0.0) -> list[Transition]:
        """Dropout of a stream that sends nothing at all, checked on the box's clock."""
        out: list[Transition] = []
        ts = np.array([now])
        for c, ch in enumerate(self.spec.channels):
            cond = self.conds.get(f"dropout:{ch.name}")
            if stale[c] <= 0 or (cond is not None and cond.last_ts is not None and now <= cond.last_ts):
                continue
            self._feed(f"dropout:{ch.name}", ts, np.array([stale[c]]), None, c, out, received)
        return out

    def _feed(
        self,
        name: str,
        ts: np.ndarray,
        score: np.ndarray,
        scores: Scores | None,
        channel: int | None,
        out: list[Transition],
        received: float | np.ndarray,
    ) -> None:
        cond = self.conds.get(name)
        if cond is None:
            if not len(score) or float(score.max()) < self.warn:
                return  # the common case: nothing happening, nothing to track
            cond = self._cond(name)
        elif cond.alert is None and not any(cond.acc) and float(score.max()) < self.warn:
            cond.last_ts = float(ts[-1])
            return
        rules = self.anomaly_rules if name == "anomaly" else self.rules
        tl, sl = ts.tolist(), score.tolist()
        for i, (t, s) in enumerate(zip(tl, sl, strict=True)):
            dt = self.period if cond.last_ts is None else min(max(t - cond.last_ts, 0.0), 5 * self.period)
            cond.last_ts = t
            reached = -1
            for k, rule in enumerate(rules):
                if s >= rule.threshold:
                    cond.acc[k] += dt
                else:
                    cond.acc[k] = max(0.0, cond.acc[k] - _LEAK * dt)
                if cond.acc[k] > 0.0 and cond.acc[k] >= rule.duration_s - 1e-9:
                    reached = k
            if s >= self.warn and cond.episode_start is None:
                cond.episode_start = t
            alert = cond.alert
            if alert is None:
                if reached >= 0:
                    if cond.cleared_at is not None and t - cond.cleared_at <= CHATTER_S:
                        cond.hold = min(cond.hold * 2.0, CHATTER_MAX)
                    else:
                        cond.hold = 1.0
                    cond.alert = self._open(name, channel, rules[reached].level, t, s, scores, i, cond)
                    cond.level_since = t
                    out.append(Transition("opened", cond.alert, _at(received, i)))
                elif not any(cond.acc):
                    cond.episode_start = None
                continue
            if s > alert.score:
                alert.score = s
            alert.updated_at = t
            rank = LEVEL_RANK[alert.level]
            target = rank
            if reached > rank:
                target = reached
            elif (
                self.spec.escalate_after_s > 0
                and s >= self.warn
                and t - cond.level_since >= self.spec.escalate_after_s
                and rank < len(rules) - 1
            ):
                target = rank + 1
            if target > rank:
                alert.level = rules[target].level
                cond.level_since = t
                self._describe(alert, name, channel, t, s, scores, i)
                alert.history.append(
                    {"ts": t, "level": alert.level, "score": round(s, 4), "transition": "escalated"}
                )
                out.append(Transition("escalated", alert, _at(received, i)))
            if s < self.clear_below:
                if cond.below_since is None:
                    cond.below_since = t
                if t - cond.below_since >= self.spec.clear_s * cond.hold:
                    alert.state = "cleared"
                    alert.cleared_at = t
                    alert.history.append(
                        {"ts": t, "level": alert.level, "score": round(s, 4), "transition": "cleared"}
                    )
                    out.append(Transition("cleared", alert, _at(received, i)))
                    cond.alert = None
                    cond.acc = [0.0] * len(rules)
                    cond.below_since = None
                    cond.episode_start = None
                    cond.cleared_at = t
            else:
                cond.below_since = None

    # ------------------------------------------------------------ describing

    def _open(
        self,
        name: str,
        channel: int | None,
        level: str,
        t: float,
        s: float,
        scores: Scores | None,
        i: int,
        cond: _Cond,
    ) -> Alert:
        start = cond.episode_start if cond.episode_start is not None else t
        alert = Alert(
            id=_new_id(),
            machine=self.spec.name,
            condition=name,
            level=level,
            state="open",
            title="",
            score=s,
            opened_at=start,
            updated_at=t,
        )
        others = [a for a in self.open_alerts if a.machine == alert.machine]
        alert.incident = (others[0].incident or others[0].id) if others else alert.id
        self._describe(alert, name, channel, t, s, scores, i)
        alert.history.append({"ts": t, "level": level, "score": round(s, 4), "transition": "opened"})
        return alert

    def _describe(
        self, alert: Alert, name: str, channel: int | None, t: float, s: float, scores: Scores | None, i: int
    ) -> None:
        kind = name.split(":", 1)[0]
        chans = self.spec.channels
        if kind == "anomaly" and scores is not None:
            contrib = scores.contrib[i]
            order = np.argsort(-contrib)[:3]
            top = [int(c) for c in order if contrib[c] > 0.05 * max(float(contrib.max()), 1e-9)] or [
                int(order[0])
            ]
            alert.channels = [self._channel_info(c, scores, i) for c in top]
            alert.detectors = {k: float(v[i]) for k, v in scores.detectors.items()}
            parts = [
                f"{ch['label']} {ch['deviation']:+.1f}σ ({_fmt(ch['value'])}{ch['unit_sep']}{ch['unit']}, "
                f"usual {_fmt(ch['usual'])})"
                for ch in alert.channels
            ]
            alert.hint = "; ".join(parts)
            lead = alert.channels[0]["label"] if alert.channels else "machine"
            alert.title = f"{self.spec.name}: unusual {lead} ({alert.level})"
            return
        assert channel is not None
        ch = chans[channel]
        info = (
            self._channel_info(channel, scores, i)
            if scores is not None
            else {"channel": ch.name, "label": ch.title}
        )
        alert.channels = [info]
        unit = f" {ch.unit}" if ch.unit else ""
        if kind == "stuck":
            value = scores.values[i, channel] if scores is not None else float("nan")
            secs = s * self._stuck_thr(channel)
            alert.hint = f"{ch.title} stuck at {_fmt(value)}{unit} for {describe_eta(secs)[6:]}"
            alert.title = f"{self.spec.name}: {ch.title} sensor stuck ({alert.level})"
        elif kind == "dropout":
            alert.hint = (
                f"{ch.title}: no valid value for about {max(1, round(s * self._dropout_thr(channel)))} s"
            )
            alert.title = f"{self.spec.name}: {ch.title} readings missing ({alert.level})"
        elif kind == "limit":
            fc = scores.forecasts.get(channel) if scores is not None else None
            if fc is not None and fc.crossed:
                alert.hint = f"{ch.title} at {_fmt(fc.level)}{unit}, above its {_fmt(ch.limit)}{unit} limit"
            elif fc is not None and fc.eta_s is not None:
                alert.hint = f"{ch.title} reaches {_fmt(ch.limit)}{unit} in {describe_eta(fc.eta_s)}"
            else:
                alert.hint = f"{ch.title} heading for its {_fmt(ch.limit)}{unit} limit"
            alert.title = f"{self.spec.name}: {alert.hint} ({alert.level})"
        alert.detectors = {kind: s}

    def _channel_info(self, c: int, scores: Scores | None, i: int) -> dict[str, Any]:
        ch = self.spec.channels[c]
        info: dict[str, Any] = {
            "channel": ch.name,
            "label": ch.title,
            "unit": ch.unit,
            "unit_sep": " " if ch.unit else "",
        }
        if scores is not None:
            dev = float(scores.deviation[i, c])
            value = float(scores.values[i, c])
            info.update(
                value=None if value != value else round(value, 4),
                deviation=round(dev, 2),
                usual=round(value - dev * self._sigma(c), 4) if value == value else None,
                contribution=round(float(scores.contrib[i, c]), 4),
            )
        return info

    # the engine's baseline statistics, injected by the service (they change at each refit)
    sigma: Any = None
    stuck_thr: Any = None
    dropout_thr: Any = None

    def _sigma(self, c: int) -> float:
        return float(self.sigma[c]) if self.sigma is not None else 1.0

    def _stuck_thr(self, c: int) -> float:
        return float(self.stuck_thr[c]) if self.stuck_thr is not None else 1.0

    def _dropout_thr(self, c: int) -> float:
        return float(self.dropout_thr[c]) if self.dropout_thr is not None else 1.0


def _at(received: float | np.ndarray, i: int) -> float:
    return float(received[i]) if isinstance(received, np.ndarray) else received


def _fmt(v: Any) -> str:
    if v is None or v != v:
        return "missing"
    v = float(v)
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def bind(policy: AlertPolicy, engine: Any) -> None:
    """Give the policy the engine's current baseline statistics for its hints."""
    policy.sigma = engine.scale
    policy.clear_below = max(policy.spec.clear_ratio, engine.clear_level) * policy.warn
    first = policy.rules[0]
    policy.anomaly_rules = (
        replace(first, duration_s=max(first.duration_s, engine.on_delay_s)),
        *policy.rules[1:],
    )
    policy.stuck_thr = engine.quality.stuck_thr
    policy.dropout_thr = engine.quality.dropout_thr
