"""One machine's detection: baseline learning, the detectors, the ensemble, scheduled refits.

Synchronous and free of asyncio on purpose: the service, the CSV replay and
the benchmark all drive the same object with micro-batches ``(ts, X)``.

Missing values (NaN) are held at the channel's last valid value for the
model detectors (a multivariate model needs a full row), while the quality
checks see the raw NaN (that is what dropout means). The ensemble score of a
row is the largest weighted detector score: each detector is calibrated to
reach 1.0 at its own alarm threshold, and the alert policy's durations,
rather than a vote, keep one detector's stray exceedances from raising alerts.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.sensors.detectors import Calibrator, Cusum, PcaT2Q, Quality, RobustZ, robust_center_scale
from agent.sensors.forecast import Forecast, TrendForecaster
from agent.sensors.spec import MachineSpec

log = logging.getLogger("edge_agent.sensors")

#: publishes a trained autoencoder and returns the ONNX file to load (the service: the model store)
AePublisher = Callable[[Any, dict[str, float], MachineSpec], Path]


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


class AeDetector:
    """The LSTM autoencoder as a detector: an ONNX session from runtimes/ scoring windows in batches."""

    name = "lstm_ae"

    def __init__(self, spec: MachineSpec, publish: AePublisher | None) -> None:
        self.spec = spec
        self.publish = publish
        self.session: Any = None
        self.window = spec.ae_window
        self.hist: np.ndarray | None = None
        self.calib = Calibrator(quantile=0.995, margin=1.5)
        self.model_path: Path | None = None

    def fit(self, X: np.ndarray) -> None:
        from agent.sensors.lstm_ae import LstmAutoencoder
        from runtimes.base import LoadOptions
        from runtimes.registry import get_runtime

        split = int(len(X) * 0.8)
        ae = LstmAutoencoder(X.shape[1], self.spec.ae_hidden, self.window, seed=self.spec.seed)
        ae.fit(X[:split], epochs=self.spec.ae_epochs, seed=self.spec.seed)
        self.mean, self.std = ae.mean, ae.std
        held = ae.windows((X[split - self.window + 1 :] - ae.mean) / ae.std)
        err = ((ae.reconstruct(held) - held) ** 2).mean(axis=(1, 2))
        self.calib.fit(err)
        calibration = {"center": self.calib.center, "scale": self.calib.scale}
        if self.publish is not None:
            path = self.publish(ae, calibration, self.spec)
        else:
            import tempfile

            from agent.sensors.lstm_ae import save_bundle

            tmp = Path(tempfile.mkdtemp(prefix="edge-ae-"))
            save_bundle(ae, tmp, calibration)
            path = tmp / "model.onnx"
        if self.session is not None:
            self.session.close()
        self.session = get_runtime("onnxruntime").load(path, "CPU", LoadOptions(threads=1))
        self.model_path = path
        self.hist = (X[-(self.window - 1) :] - self.mean) / self.std

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from numpy.lib.stride_tricks import sliding_window_view

        assert self.hist is not None
        Z = np.concatenate([self.hist, (X - self.mean) / self.std])
        win = np.transpose(sliding_window_view(Z, self.window, axis=0), (0, 2, 1))
        recon = self.session.run({"x": np.ascontiguousarray(win, dtype=np.float32)})["recon"]
        per = ((recon - win) ** 2).mean(axis=1)  # (n, C)
        score = self.calib(per.mean(axis=1))
        self.hist = Z[-(self.window - 1) :]
        share = per / np.maximum(per.sum(axis=1, keepdims=True), 1e-12)
        return score, share * score[:, None]


class IForestDetector:
    name = "iforest"

    def __init__(self, spec: MachineSpec) -> None:
        self.spec = spec
        # margin 1.5: at 1.0 it caught nothing the ensemble missed and added a false alarm (bench)
        self.calib = Calibrator(quantile=0.999, margin=1.5)

    def fit(self, X: np.ndarray) -> None:
        from agent.sensors.iforest import IsolationForestModel

        self.mean = X.mean(axis=0)
        self.std = np.maximum(X.std(axis=0), 1e-9)
        Z = (X - self.mean) / self.std
        self.model = IsolationForestModel.fit(
            Z, n_trees=self.spec.iforest_trees, max_samples=self.spec.iforest_sample, seed=self.spec.seed
        )
        self.calib.fit(self.model.anomaly_score(Z))

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Z = (X - self.mean) / self.std
        score = self.calib(self.model.anomaly_score(Z))
        share = Z**2 / np.maximum((Z**2).sum(axis=1, keepdims=True), 1e-12)
        return score, share * score[:, None]


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
        self.forecasters = {
            i: TrendForecaster(c.limit) for i, c in enumerate(spec.channels) if c.limit is not None
        }
        self.limit_state = np.zeros(self.C)
        self.detectors: dict[str, Any] = {}
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
        """Fit every detector on ``X`` (default: the pending baseline). Blocking: run it in an executor."""
        data = self._pending_fit if X is None else X
        if data is None:
            return
        started = time.perf_counter()
        self.center, self.scale = robust_center_scale(data)
        fitted: dict[str, Any] = {}
        for name in self.detector_names:
            det = self._make(name)
            try:
                det.fit(data)
            except Exception as exc:  # one detector failing must not stop the machine
                log.warning("sensors: %s detector %s could not be fitted: %s", self.spec.name, name, exc)
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            self.errors.pop(name, None)
            fitted[name] = det
        self.quality.fit(data, self.spec.rate_hz)
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
            return Cusum(self.spec.channels, self.spec.rate_hz)
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
        limit = self._limits(ts, X)
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
                self._forecasts(),
            )
        rows = filled if complete.all() else np.where(np.isnan(filled), self.center, filled)
        for name, det in list(self.detectors.items()):
            try:
                s, per = det.score(rows)
            except Exception as exc:  # scored as 0 and reported; the stream goes on
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                log.warning("sensors: %s detector %s failed: %s", self.spec.name, name, exc)
                del self.detectors[name]
                continue
            w = self.weights.get(name, 1.0)
            det_scores[name] = s * w
            np.maximum(contrib, per * w, out=contrib)
        combined = np.max(np.vstack(list(det_scores.values())), axis=0) if det_scores else zeros
        deviation = (rows - self.center) / self.scale
        self._keep_recent(filled[complete & (combined < 0.5)], ts)
        return Scores(
            ts, X, combined, det_scores, contrib, deviation, stuck, dropout, limit, self._forecasts()
        )

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

    def _limits(self, ts: np.ndarray, X: np.ndarray) -> np.ndarray:
        out = np.zeros(X.shape)
        if not self.forecasters:
            return out
        horizon = self.spec.forecast_horizon_s
        tl = ts.tolist()
        for c, fc in self.forecasters.items():
            state = self.limit_state[c]
            col = X[:, c].tolist()
            res = [0.0] * len(col)
            for i, v in enumerate(col):
                if v == v:
                    f = fc.add(tl[i], v)
                    if f is not None:
                        if f.crossed:
                            state = 4.0
                        elif f.eta_s is not None and f.eta_s <= horizon:
                            state = 1.0 + max(0.0, 1.0 - f.eta_s / horizon)
                        else:
                            state = 0.0
                res[i] = state
            self.limit_state[c] = state
            out[:, c] = res
        return out

    def _forecasts(self) -> dict[int, Forecast]:
        return {c: f.last for c, f in self.forecasters.items() if f.last is not None}

    def staleness(self, now: float) -> list[float]:
        return self.quality.staleness(now)

    def status(self) -> dict[str, Any]:
        return {
            "machine": self.spec.name,
            "phase": self.phase,
            "baseline_progress": round(self.baseline_progress, 3),
            "detectors": sorted(self.detectors) if self.phase == "detecting" else list(self.detector_names),
            "detector_errors": dict(self.errors),
            "fits": self.fits,
            "fitted_at": self.fitted_at,
            "fit_seconds": round(self.fit_seconds, 3),
            "channels": [
                {
                    "name": c.name,
                    "unit": c.unit,
                    "center": float(self.center[i]) if self.fits else None,
                    "sigma": float(self.scale[i]) if self.fits else None,
                    "limit": c.limit,
                }
                for i, c in enumerate(self.spec.channels)
            ],
        }
