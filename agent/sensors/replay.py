"""Offline runs: a recorded or simulated stream through the engine and the alert policy.

Used by ``edge-agent sensors replay`` and ``sensors evaluate``, the tests and
the benchmark, so all of them exercise exactly the code the service runs
(``MachineEngine`` + ``AlertPolicy``), only without queues and asyncio.

When an alert counts as open (``open_spans``): from the reading at which its
``opened`` transition fired (not the episode start the alert reports as
``opened_at``, which is back-dated to the first reading over the threshold)
until the reading at which its ``cleared`` transition fired, exclusive; an
alert never cleared stays open to the end. That is what an operator watching
``replay`` (or the live API) would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from agent.sensors.alerts import LEVEL_RANK, AlertPolicy, Transition, bind
from agent.sensors.engine import MachineEngine, Scores
from agent.sensors.spec import MachineSpec

if TYPE_CHECKING:
    from agent.sensors.csvfile import CsvData


@dataclass
class ReplayResult:
    transitions: list[Transition] = field(default_factory=list)
    rows: int = 0
    scored_rows: int = 0
    #: per-row ensemble and detector scores when ``keep_scores`` (the benchmark)
    combined: list[np.ndarray] = field(default_factory=list)
    detectors: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def opened(self) -> list[Transition]:
        return [t for t in self.transitions if t.kind == "opened"]


class OfflineRunner:
    def __init__(
        self, spec: MachineSpec, *, detectors: tuple[str, ...] | None = None, keep_scores: bool = False
    ) -> None:
        self.spec = spec
        self.engine = MachineEngine(spec, detectors=detectors)
        self.policy = AlertPolicy(spec)
        self.keep_scores = keep_scores
        self.result = ReplayResult()

    def feed(self, ts: np.ndarray, X: np.ndarray) -> list[Transition]:
        out: list[Transition] = []
        pos = 0
        while pos < len(ts):  # a batch that ends the baseline: learn, fit, then score the rest
            end = pos + self.engine.baseline_split(X[pos:])
            detecting = self.engine.phase == "detecting" and not self.engine.needs_fit
            scores = self.engine.process(ts[pos:end], X[pos:end])
            if self.engine.needs_fit:
                self.engine.fit()
                bind(self.policy, self.engine)
            out += self.policy.update(scores)
            self.result.rows += end - pos
            if detecting:
                self.result.scored_rows += end - pos
            if self.keep_scores:
                self._keep(scores)
            pos = end
        self.result.transitions.extend(out)
        return out

    def _keep(self, scores: Scores) -> None:
        self.result.combined.append(scores.combined)
        names = set(self.engine.detector_names) | set(self.result.detectors)
        for name in names:
            self.result.detectors.setdefault(name, []).append(
                scores.detectors.get(name, np.zeros(len(scores.ts)))
            )
        for kind in ("stuck", "dropout", "limit"):
            self.result.detectors.setdefault(kind, []).append(getattr(scores, kind).max(axis=1))

    def run(self, ts: np.ndarray, X: np.ndarray, batch: int = 64) -> ReplayResult:
        for start in range(0, len(ts), batch):
            self.feed(ts[start : start + batch], X[start : start + batch])
        return self.result


def batches(ts: np.ndarray, X: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(ts), size):
        yield ts[start : start + size], X[start : start + size]


# ---------------------------------------------------------------- recordings

#: rows per micro-batch when a recording is replayed (``sensors replay`` and ``sensors evaluate`` alike)
REPLAY_BATCH = 256


@dataclass
class Recording:
    """A CSV in the engine's terms: rows in time order, one per timestamp, labels aligned."""

    ts: np.ndarray  # (n,)
    X: np.ndarray  # (n, C)
    channels: list[str]
    labels: dict[str, np.ndarray]  # label column -> (n,) values
    rate_hz: float
    rows_read: int
    out_of_order_rows: int
    duplicate_rows: int


def prepare(data: CsvData) -> Recording:
    """Sort by time (stable) and keep the first row of a repeated timestamp; estimate the rate."""
    ts = np.asarray(data.ts, dtype=np.float64)
    X = np.asarray(data.rows, dtype=np.float64).reshape(len(ts), len(data.channels))
    labels = {k: np.asarray(v, dtype=np.float64) for k, v in data.labels.items()}
    out_of_order = int((np.diff(ts) < 0).sum())
    order = np.argsort(ts, kind="stable")
    ts, X = ts[order], X[order]
    keep = np.concatenate([[True], np.diff(ts) > 0])  # duplicates of a timestamp: the first wins
    ts, X = ts[keep], X[keep]
    labels = {k: v[order][keep] for k, v in labels.items()}
    dts = np.diff(ts[: min(len(ts), 10000)])
    rate = 1.0 / float(np.median(dts)) if len(dts) and np.median(dts) > 0 else 1.0
    return Recording(ts, X, list(data.channels), labels, rate, len(data.ts), out_of_order, int((~keep).sum()))


def default_learn_rows(n: int) -> int:
    """Baseline rows when none are asked for: a fifth of the file, at least 32, at most 3000."""
    return max(32, min(3000, n // 5))


@dataclass
class Span:
    """One alert as open on the readings' clock: [start, end) with end = inf when never cleared."""

    condition: str
    start: float
    end: float
    level: str


def open_spans(transitions: list[Transition], keep: Callable[[str], bool] = lambda c: True) -> list[Span]:
    """The alerts' open intervals (see the module docstring), for conditions ``keep`` accepts."""
    spans: dict[str, Span] = {}
    for t in transitions:
        s = t.snapshot
        if not keep(s["condition"]):
            continue
        if t.kind == "opened":
            spans[s["id"]] = Span(s["condition"], float(s["updated_at"]), math.inf, s["level"])
        elif s["id"] in spans:
            span = spans[s["id"]]
            if LEVEL_RANK.get(s["level"], -1) > LEVEL_RANK.get(span.level, -1):
                span.level = s["level"]
            if t.kind == "cleared":
                span.end = float(s["cleared_at"] if s.get("cleared_at") is not None else s["updated_at"])
    return list(spans.values())


def flagged(ts: np.ndarray, spans: list[Span]) -> np.ndarray:
    """Per reading: is some alert open at it (after that reading was processed)?"""
    out = np.zeros(len(ts), dtype=bool)
    for span in spans:
        a = int(np.searchsorted(ts, span.start, side="left"))
        b = len(ts) if math.isinf(span.end) else int(np.searchsorted(ts, span.end, side="left"))
        out[a:b] = True
    return out
