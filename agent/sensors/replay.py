"""Offline runs: a recorded or simulated stream through the engine and the alert policy.

Used by ``edge-agent sensors replay``, the tests and the benchmark, so all of
them exercise exactly the code the service runs (``MachineEngine`` +
``AlertPolicy``), only without queues and asyncio.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from agent.sensors.alerts import AlertPolicy, Transition, bind
from agent.sensors.engine import MachineEngine, Scores
from agent.sensors.spec import MachineSpec


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
