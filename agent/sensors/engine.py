"""One machine's detection: baseline learning, the detectors, the ensemble, scheduled refits.

Synchronous and free of asyncio on purpose: the service, the CSV replay and
the benchmark all drive the same object with micro-batches ``(ts, X)``.

Missing values (NaN) are held at the channel's last valid value for the
model detectors (a multivariate model needs a full row), while the quality
checks see the raw NaN (that is what dropout means).

Calibration: the baseline is split; the detectors fit on its first part and
score the rest, which they never saw, and each of their statistics is mapped
onto the machine's false-alarm budget from that held-out tail
(``calibrate.TailCalibrator``). The ensemble score of a row is the largest
detector score; because every statistic only gets its share of the budget,
the largest of them still meets it. Nothing is scored, and nothing alerts,
before the baseline is learned. A level held through an excursion is
re-armed when the channel comes back (``regime.ReturnWatch``).

Alarm on-delay (ISA-18.2, ``on_delay_s``): the held-out ensemble score's
correlation time, how long one normal fluctuation of it lasts (alerts.py).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.sensors.calibrate import (
    LinearCalibrator,
    TailCalibrator,
    correlation_time,
    holdout_split,
    per_sample_budget,
)
from agent.sensors.detectors import Cusum, PcaT2Q, Quality, RobustZ, robust_center_scale
from agent.sensors.forecast import Forecast, LimitWatch
from agent.sensors.model_detectors import AeDetector, AePublisher, IForestDetector
from agent.sensors.regime import ReturnWatch
from agent.sensors.residuals import FREEZE_SCORE, Residualizer
from agent.sensors.spec import MachineSpec

CLEAR_MIN, CLEAR_MAX = 0.5, 0.9  # bounds of the clearing level, as a fraction of the Warning threshold

__all__ = ["AeDetector", "AePublisher", "IForestDetector", "MachineEngine", "Scores"]

log = logging.getLogger("edge_agent.sensors")


@dataclass
class Scores:
    """Everything the alert policy and the benchmark need about one micro-batch."""

    ts: np.ndarray  # (n,)
    values: np.ndarray  # (n, C) raw, NaN = missing
    combined: np.ndarray  # (n,) ensemble
    detectors: dict[str, np.ndarray]  # name -> (n,)
    contrib: np.ndarray  # (n, C) ensemble contribution per channel
    deviation: np.ndarray  # (n, C) robust z against the baseline (the hint's sigma)
    stuck: np.ndarray  # (n, C)
    dropout: np.ndarray  # (n, C)
    limit: np.ndarray  # (n, C) forecast / limit score
    forecasts: dict[int, Forecast] = field(default_factory=dict)


class Calibrated:
    """A fitted detector and one tail calibrator per statistic it reports."""

    def __init__(self, det: Any, cals: list[Any]) -> None:
        self.det = det
        self.cals = cals
        self.columns: list[int] = list(det.columns)

    def score(self, R: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray]:
        raw, shares = self.det.raw(R)
        n = len(R)
        best = np.zeros(n)
        contrib = np.zeros((n, C))
        for k, (cal, ch) in enumerate(zip(self.cals, self.columns, strict=True)):
            s = cal(raw[:, k])
            np.maximum(best, s, out=best)
            if ch >= 0:
                np.maximum(contrib[:, ch], s, out=contrib[:, ch])
            else:
                np.maximum(contrib, shares[k] * s[:, None], out=contrib)
        return best, contrib


class MachineEngine:
    def __init__(
        self,
        spec: MachineSpec,
        *,
        detectors: tuple[str, ...] | None = None,
        ae_publisher: AePublisher | None = None,
    ) -> None:
        self.spec = spec
        self.detector_names = tuple(detectors if detectors is not None else spec.detectors)
        if len(spec.channels) < 2:
            self.detector_names = tuple(d for d in self.detector_names if d != "pca")
        self.ae_publisher = ae_publisher
        self.C = len(spec.channels)
        self.weights = {d: float(spec.weights.get(d, 1.0)) for d in self.detector_names}
        self.quality = Quality(spec.channels, spec.rate_hz)
        self.limits = LimitWatch([c.limit for c in spec.channels], spec.forecast_horizon_s)
        self.detectors: dict[str, Calibrated] = {}
        self.resid = Residualizer(self.C)
        self.returns = ReturnWatch(self.C)
        # rows per scoring step while a channel is held: a return re-arms within the policy's clearing
        # hold (finer steps cannot clear an alert sooner), whatever the rate
        self.return_step = max(1, round(spec.clear_s * spec.rate_hz))
        self.calibration: dict[str, Any] = {}
        self.clear_level = CLEAR_MIN
        self.on_delay_s = 0.0
        self.level_views: list[int] = []
        self._baseline: list[np.ndarray] = []
        self._baseline_rows = 0
        self._recent: deque[np.ndarray] = deque()
        self._recent_rows = 0
        self.last_valid = np.full(self.C, np.nan)
        self.phase = "learning"
        self.fitted_at: float | None = None
        self.fit_data_ts: float | None = None
        self.fit_seconds = 0.0
        self.fits = 0
        self.errors: dict[str, str] = {}
        self.center = np.zeros(self.C)
        self.scale = np.ones(self.C)
        self._pending_fit: np.ndarray | None = None

    # ------------------------------------------------------------ learning

    @property
    def baseline_progress(self) -> float:
        return min(1.0, self._baseline_rows / self.spec.learn_rows) if self.phase == "learning" else 1.0

    @property
    def needs_fit(self) -> bool:
        return self._pending_fit is not None

    def _fill(self, X: np.ndarray) -> np.ndarray:
        """Hold each channel's last valid value over NaNs (vectorised forward fill)."""
        if not np.isnan(X).any():
            self.last_valid = X[-1].copy()
            return X
        Y = np.vstack([self.last_valid[None], X])
        valid = ~np.isnan(Y)
        idx = np.where(valid, np.arange(len(Y))[:, None], 0)
        np.maximum.accumulate(idx, axis=0, out=idx)
        filled = Y[idx, np.arange(self.C)]
        self.last_valid = filled[-1].copy()
        return filled[1:]

    def baseline_split(self, X: np.ndarray) -> int:
        """How many leading rows of ``X`` complete the baseline (``len(X)`` when it stays incomplete).

        A micro-batch can straddle the end of learning: a backlog (an HTTP upload
        after an outage, rows queued behind a slow fit) arrives as one batch. The
        caller processes those rows, fits, then scores the rest, so rows after the
        baseline are scored instead of being swallowed by it (which would learn the
        very fault they hold and silence it). Counts rows the way ``_learn`` does:
        complete after holding each channel's last valid value.
        """
        n = len(X)
        if self.phase != "learning" or self._pending_fit is not None or not n:
            return n
        need = self.spec.learn_rows - self._baseline_rows
        seen = np.logical_or.accumulate(~np.isnan(X), axis=0) | ~np.isnan(self.last_valid)
        done = np.cumsum(seen.all(axis=1))
        if done[-1] < need:
            return n
        return int(np.searchsorted(done, max(need, 1))) + 1

    def fit(self, X: np.ndarray | None = None) -> None:
        """Fit and calibrate on ``X`` (default: the pending baseline). Blocking: run it in an executor.

        The first part of the rows fits the residual model and the detectors;
        the rest, held out, is scored by them as live data would be, and each
        statistic's threshold comes from that held-out tail and the budget.
        """
        data = self._pending_fit if X is None else X
        if data is None:
            return
        started = time.perf_counter()
        self.center, self.scale = robust_center_scale(data)
        split = holdout_split(len(data))
        resid = Residualizer(self.C).fit(data[:split], data[split:])
        R_fit = resid.fit_residuals
        L_held = resid.levels(data[split:])
        R_held = resid.transform(data[split:])
        # CUSUM/EWMA also watch the level deviation of the channels modelled on their differences:
        # a slow drift of a channel that wanders is invisible in its step-to-step residual alone
        self.level_views = [int(c) for c in np.flatnonzero(resid.diff)]
        lv = self.level_views
        RL_fit, RL_held = np.hstack([R_fit, resid.fit_levels[:, lv]]), np.hstack([R_held, L_held[:, lv]])
        budget, rate = self.spec.false_alarms_per_day, self.spec.rate_hz
        made = {}
        for name in self.detector_names:
            det = self._make(name)
            try:
                det.fit(RL_fit if name == "cusum" else R_fit)
                made[name] = det
            except Exception as exc:  # one detector failing must not stop the machine
                log.warning("sensors: %s detector %s could not be fitted: %s", self.spec.name, name, exc)
                self.errors[name] = f"{type(exc).__name__}: {exc}"
        fitted: dict[str, Calibrated] = {}
        held_scores = [np.zeros(len(R_held))]
        for name, det in made.items():
            try:
                p = per_sample_budget(budget, rate, len(made) * len(det.columns))
                if hasattr(det, "calibrate"):  # limits from theory on held-out variance (CUSUM/EWMA)
                    cals = det.calibrate(RL_held, p)
                    raw, _ = det.raw(RL_held)  # warms the sums up to the present
                else:  # limits from the held-out tail
                    raw, _ = det.raw(R_held)
                    cals = [TailCalibrator().fit(raw[:, k], p) for k in range(raw.shape[1])]
            except Exception as exc:
                log.warning("sensors: %s detector %s could not be calibrated: %s", self.spec.name, name, exc)
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            self.errors.pop(name, None)
            fitted[name] = Calibrated(det, cals)
            held_scores += [cal(raw[:, k]) for k, cal in enumerate(cals)]
        # an alert clears once the score is back where held-out normal rows score (their 99th
        # percentile), not at a fixed fraction of the threshold: the max over many statistics
        # normally sits well above zero
        held_max = np.max(held_scores, axis=0)
        typical = float(np.quantile(held_max, 0.99)) if len(R_held) else 0.5
        self.clear_level = min(max(typical, CLEAR_MIN), CLEAR_MAX)
        # a Warning waits one correlation time of the held-out score (a normal fluctuation's length)
        auto = correlation_time(held_max) / rate if len(R_held) else 0.0
        self.on_delay_s = auto if self.spec.on_delay_s < 0 else self.spec.on_delay_s
        self.quality.fit(data, rate, per_sample_budget(budget, rate, 2 * self.C))
        self.resid = resid
        lam = np.array([c.params.ewma_lambda for c in self.spec.channels])
        # a level held as long as the baseline lasted accepts the state it is in (a new regime)
        self.returns = ReturnWatch(self.C).fit(
            (data[split:] - resid.level) / resid.level_sigma, lam, max_hold=float(len(data))
        )
        self.calibration = {
            "false_alarms_per_day": budget,
            "fit_rows": int(split),
            "held_out_rows": int(len(data) - split),
            "source": "held-out baseline rows" if self.fits == 0 else "held-out recent normal rows",
            "clear_level": round(self.clear_level, 3),
            "on_delay_s": round(self.on_delay_s, 3),
            "on_delay_source": "configured"
            if self.spec.on_delay_s >= 0
            else "held-out score's correlation time",
        }
        self.detectors = fitted
        self.phase = "detecting"
        self.fits += 1
        self.fitted_at = time.time()
        self.fit_seconds = time.perf_counter() - started
        self._pending_fit = None
        self._baseline = []

    def _make(self, name: str) -> Any:
        if name == "robust_z":
            return RobustZ(self.spec.channels)
        if name == "cusum":
            return Cusum(self.spec.channels, self.level_views)
        if name == "pca":
            return PcaT2Q(self.spec.pca_variance)
        if name == "iforest":
            return IForestDetector(self.spec)
        if name == "lstm_ae":
            return AeDetector(self.spec, self.ae_publisher)
        raise ValueError(name)

    # ------------------------------------------------------------ scoring

    def process(self, ts: np.ndarray, X: np.ndarray) -> Scores:
        """Score one micro-batch (rows in time order). During learning, scores are all zero."""
        n = len(ts)
        stuck, dropout = self.quality.score(ts, X)
        limit = self.limits.score(ts, X)
        filled = self._fill(X)
        complete = ~np.isnan(filled).any(axis=1)
        zeros = np.zeros(n)
        det_scores: dict[str, np.ndarray] = {}
        contrib = np.zeros((n, self.C))
        if self.phase == "learning" or self._pending_fit is not None:
            if self.phase == "learning" and self._pending_fit is None:
                self._learn(filled[complete], ts)
            return Scores(
                ts,
                X,
                zeros,
                det_scores,
                contrib,
                np.zeros((n, self.C)),
                stuck,
                dropout,
                limit,
                self.limits.forecasts(),
            )
        rows = filled if complete.all() else np.where(np.isnan(filled), self.center, filled)
        combined = np.zeros(n)
        pos = 0
        while pos < n:  # steps short enough for the levels to follow (and, while a channel is held,
            # for a return to re-arm it promptly)
            step = min(self.resid.step_rows, self.return_step if self.returns.watching else n)
            end = min(n, pos + step)
            part = self._score(rows[pos:end], complete[pos:end], contrib[pos:end])
            combined[pos:end] = part[0]
            for name, s in part[1].items():
                det_scores.setdefault(name, np.zeros(n))[pos:end] = s
            pos = end
        normal = complete & (combined < FREEZE_SCORE)
        deviation = (rows - self.center) / self.scale
        self._keep_recent(filled[normal], ts)
        return Scores(
            ts, X, combined, det_scores, contrib, deviation, stuck, dropout, limit, self.limits.forecasts()
        )

    def _score(
        self, rows: np.ndarray, complete: np.ndarray, contrib: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Detector scores of complete-or-filled ``rows``; fills ``contrib``; adapts the levels."""
        L = self.resid.levels(rows)
        R = self.resid.transform(rows, self.returns.trailing_means(rows))
        RL = np.hstack([R, L[:, self.level_views]]) if "cusum" in self.detectors else R
        resting = self.returns.recovering
        if resting.any() and RL is not R:  # a recovering channel's sums stay at rest (regime.py)
            rest = np.concatenate([resting, resting[self.level_views]])
            RL[:, rest] = self.detectors["cusum"].det.center[rest]
        det_scores: dict[str, np.ndarray] = {}
        for name, cd in list(self.detectors.items()):
            try:
                s, per = cd.score(RL if name == "cusum" else R, self.C)
            except Exception as exc:  # scored as 0 and reported; the stream goes on
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                log.warning("sensors: %s detector %s failed: %s", self.spec.name, name, exc)
                del self.detectors[name]
                continue
            w = self.weights.get(name, 1.0)
            det_scores[name] = s * w
            np.maximum(contrib, per * w, out=contrib)
        combined = np.max(np.vstack(list(det_scores.values())), axis=0) if det_scores else np.zeros(len(rows))
        # each channel's level follows only its own rows that scored normal: a fault is never learned
        normal = (contrib < FREEZE_SCORE) & complete[:, None]
        self.resid.adapt(rows, normal)
        # watched: the level each channel's sums are taken around (the slow level of a channel modelled
        # on its differences); a relation to the other channels has no level of its own to re-anchor
        mode = self.resid.mode
        held = ~normal & (mode != 2)
        ref = np.where(mode == 1, self.resid.slow_level, self.resid.level)
        back = self.returns.update(rows, held, ref, self.resid.level_sigma)
        if back:  # came back inside the normal band after an excursion: re-anchored, sums restarted
            self.resid.reanchor(back)
            cusum = self.detectors.get("cusum")
            if cusum is not None:
                cusum.det.reset(list(back))
        return combined, det_scores

    def _learn(self, rows: np.ndarray, ts: np.ndarray) -> None:
        if rows.size:
            self._baseline.append(rows)
            self._baseline_rows += len(rows)
        if self._baseline_rows >= self.spec.learn_rows:
            self._pending_fit = np.concatenate(self._baseline)[-self.spec.learn_rows :]
            self.fit_data_ts = float(ts[-1])

    def _keep_recent(self, rows: np.ndarray, ts: np.ndarray) -> None:
        """Normal-looking rows, the data of the next scheduled refit."""
        if self.spec.refit_s <= 0 or not len(ts):
            return
        if rows.size:
            self._recent.append(rows)
            self._recent_rows += len(rows)
            while self._recent_rows - len(self._recent[0]) >= self.spec.learn_rows:
                self._recent_rows -= len(self._recent.popleft())
        if (
            self.fit_data_ts is not None
            and ts[-1] - self.fit_data_ts >= self.spec.refit_s
            and self._recent_rows >= self.spec.learn_rows
        ):
            self._pending_fit = np.concatenate(list(self._recent))[-self.spec.learn_rows :]
            self.fit_data_ts = float(ts[-1])

    def staleness(self, now: float) -> list[float]:
        return self.quality.staleness(now)

    def status(self) -> dict[str, Any]:
        fitted = self.phase == "detecting" and self.fits > 0
        return {
            "machine": self.spec.name,
            "phase": self.phase,
            "baseline_progress": round(self.baseline_progress, 3),
            "detectors": sorted(self.detectors) if self.phase == "detecting" else list(self.detector_names),
            "detector_errors": dict(self.errors),
            "fits": self.fits,
            "fitted_at": self.fitted_at,
            "fit_seconds": round(self.fit_seconds, 3),
            "false_alarms_per_day": self.spec.false_alarms_per_day,
            "calibration": {**self.calibration, **self.returns.describe()},
            "thresholds": {name: self._thresholds(cd) for name, cd in self.detectors.items()},
            "channels": [
                {
                    "name": c.name,
                    "unit": c.unit,
                    "center": float(self.center[i]) if self.fits else None,
                    "sigma": float(self.scale[i]) if self.fits else None,
                    "limit": c.limit,
                    **({"model": self.resid.describe()[i], **self.quality.describe(i)} if fitted else {}),
                }
                for i, c in enumerate(self.spec.channels)
            ],
        }

    def _thresholds(self, cd: Calibrated) -> list[dict[str, Any]]:
        """One entry per statistic: what it watches, its threshold, and where the threshold came from."""
        names = self.spec.channel_names
        out = []
        for cal, ch, kind in zip(cd.cals, cd.columns, cd.det.kinds, strict=True):
            source = (
                "run-length theory on held-out variance"
                if isinstance(cal, LinearCalibrator)
                else "exponential tail of held-out scores"
            )
            out.append(
                {
                    "statistic": kind,
                    "channel": names[ch] if ch >= 0 else None,
                    "source": source,
                    **cal.describe(),
                }
            )
        return out
