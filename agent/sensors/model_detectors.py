"""The model detectors: Isolation Forest (numpy) and the LSTM autoencoder (ONNX through runtimes/).

Same interface as the statistical detectors (``fit``, ``raw`` -> one
whole-machine column and its split over the channels); the engine calibrates
their raw scores on held-out baseline rows like every other detector's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent.sensors.detectors import Shares
from agent.sensors.spec import MachineSpec

#: publishes a trained autoencoder and returns the ONNX file to load (the service: the model store)
AePublisher = Callable[[Any, dict[str, float], MachineSpec], Path]


class AeDetector:
    """The LSTM autoencoder as a detector: an ONNX session from runtimes/ scoring windows in batches."""

    name = "lstm_ae"
    columns = [-1]
    kinds = ["reconstruction error"]

    def __init__(self, spec: MachineSpec, publish: AePublisher | None) -> None:
        self.spec = spec
        self.publish = publish
        self.session: Any = None
        self.window = spec.ae_window
        self.hist: np.ndarray | None = None
        self.model_path: Path | None = None
        self.calibration: dict[str, float] = {}

    def fit(self, X: np.ndarray) -> None:
        from agent.sensors.lstm_ae import LstmAutoencoder
        from runtimes.base import LoadOptions
        from runtimes.registry import get_runtime

        split = max(int(len(X) * 0.8), min(len(X), 2 * self.window))
        ae = LstmAutoencoder(X.shape[1], self.spec.ae_hidden, self.window, seed=self.spec.seed)
        ae.fit(X[:split], epochs=self.spec.ae_epochs, seed=self.spec.seed)
        self.mean, self.std = ae.mean, ae.std
        held = ae.windows((X[max(split - self.window + 1, 0) :] - ae.mean) / ae.std)
        err = ((ae.reconstruct(held) - held) ** 2).mean(axis=(1, 2)) if len(held) else np.zeros(1)
        # recorded with the model for people reading the bundle; the engine calibrates on its own
        self.calibration = {
            "held_out_error_median": float(np.median(err)),
            "held_out_error_q99": float(np.quantile(err, 0.99)),
        }
        if self.publish is not None:
            path = self.publish(ae, self.calibration, self.spec)
        else:
            from agent.sensors.lstm_ae import save_bundle

            tmp = Path(tempfile.mkdtemp(prefix="edge-ae-"))
            save_bundle(ae, tmp, self.calibration)
            path = tmp / "model.onnx"
        if self.session is not None:
            self.session.close()
        self.session = get_runtime("onnxruntime").load(path, "CPU", LoadOptions(threads=1))
        self.model_path = path
        self.hist = (X[-(self.window - 1) :] - self.mean) / self.std

    def raw(self, X: np.ndarray) -> tuple[np.ndarray, Shares]:
        from numpy.lib.stride_tricks import sliding_window_view

        assert self.hist is not None
        Z = np.concatenate([self.hist, (X - self.mean) / self.std])
        win = np.transpose(sliding_window_view(Z, self.window, axis=0), (0, 2, 1))
        recon = self.session.run({"x": np.ascontiguousarray(win, dtype=np.float32)})["recon"]
        per = ((recon - win) ** 2).mean(axis=1)  # (n, C)
        self.hist = Z[-(self.window - 1) :]
        share = per / np.maximum(per.sum(axis=1, keepdims=True), 1e-12)
        return per.mean(axis=1)[:, None], {0: share}


class IForestDetector:
    name = "iforest"
    columns = [-1]
    kinds = ["isolation depth"]

    def __init__(self, spec: MachineSpec) -> None:
        self.spec = spec

    def fit(self, X: np.ndarray) -> None:
        from agent.sensors.iforest import IsolationForestModel

        self.mean = X.mean(axis=0)
        self.std = np.maximum(X.std(axis=0), 1e-9)
        Z = (X - self.mean) / self.std
        self.model = IsolationForestModel.fit(
            Z, n_trees=self.spec.iforest_trees, max_samples=self.spec.iforest_sample, seed=self.spec.seed
        )

    def raw(self, X: np.ndarray) -> tuple[np.ndarray, Shares]:
        Z = (X - self.mean) / self.std
        share = Z**2 / np.maximum((Z**2).sum(axis=1, keepdims=True), 1e-12)
        return self.model.anomaly_score(Z)[:, None], {0: share}
