"""LSTM autoencoder: trained in numpy on the baseline, exported as an ONNX graph, run through runtimes/.

No deep-learning framework is needed on the box: the network is small (one
encoder LSTM, one decoder LSTM, a linear read-out), so its forward and
backward passes (BPTT) are written out in numpy and trained with Adam. The
weights are laid out in ONNX's gate order (input, output, forget, cell) from
the start, so the export is a copy into ONNX ``LSTM`` nodes, and the test
checks that onnxruntime's output matches the numpy forward pass.

Architecture (window of T rows x C channels, standardised)::

    x[B,T,C] -> LSTM(C->H) -> h_T -> repeat T times -> LSTM(H->H) -> Linear(H->C) -> x'[B,T,C]

The anomaly score of a window is its mean squared reconstruction error; the
per-channel error is the root-cause hint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class _Lstm:
    """One LSTM layer, ONNX gate order i, o, f, c; bias is folded into ``b`` (ONNX's Wb; Rb = 0)."""

    def __init__(self, n_in: int, hidden: int, rng: np.random.Generator) -> None:
        k = 1.0 / np.sqrt(hidden)
        self.H = hidden
        self.W = rng.uniform(-k, k, (4 * hidden, n_in))
        self.R = rng.uniform(-k, k, (4 * hidden, hidden))
        self.b = np.zeros(4 * hidden)
        self.b[2 * hidden : 3 * hidden] = 1.0  # forget-gate bias 1: remember by default

    def params(self) -> list[np.ndarray]:
        return [self.W, self.R, self.b]

    def forward(self, xs: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]]]:
        """xs (T, B, in) -> hs (T, B, H) and the cache for backward."""
        T, B, _ = xs.shape
        H = self.H
        h = np.zeros((B, H))
        c = np.zeros((B, H))
        hs = np.empty((T, B, H))
        cache: list[tuple[np.ndarray, ...]] = []
        for t in range(T):
            z = xs[t] @ self.W.T + h @ self.R.T + self.b
            i = _sigmoid(z[:, :H])
            o = _sigmoid(z[:, H : 2 * H])
            f = _sigmoid(z[:, 2 * H : 3 * H])
            g = np.tanh(z[:, 3 * H :])
            c_prev, h_prev = c, h
            c = f * c_prev + i * g
            tc = np.tanh(c)
            h = o * tc
            hs[t] = h
            cache.append((xs[t], h_prev, c_prev, i, o, f, g, tc))
        return hs, cache

    def backward(
        self, dhs: np.ndarray, cache: list[tuple[np.ndarray, ...]]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """dhs (T, B, H): gradient on each step's output -> (param grads, dxs (T, B, in))."""
        dW, dR, db = np.zeros_like(self.W), np.zeros_like(self.R), np.zeros_like(self.b)
        T = len(cache)
        dxs = np.empty((T, *cache[0][0].shape))
        dh_next = np.zeros_like(dhs[0])
        dc_next = np.zeros_like(dhs[0])
        for t in reversed(range(T)):
            x, h_prev, c_prev, i, o, f, g, tc = cache[t]
            dh = dhs[t] + dh_next
            dc = dh * o * (1.0 - tc * tc) + dc_next
            dz = np.concatenate(
                [
                    dc * g * i * (1.0 - i),
                    dh * tc * o * (1.0 - o),
                    dc * c_prev * f * (1.0 - f),
                    dc * i * (1.0 - g * g),
                ],
                axis=1,
            )
            dW += dz.T @ x
            dR += dz.T @ h_prev
            db += dz.sum(axis=0)
            dxs[t] = dz @ self.W
            dh_next = dz @ self.R
            dc_next = dc * f
        return [dW, dR, db], dxs


@dataclass
class TrainReport:
    epochs: int
    windows: int
    final_loss: float
    seconds: float


class LstmAutoencoder:
    def __init__(self, channels: int, hidden: int = 8, window: int = 16, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.C, self.H, self.T = channels, hidden, window
        self.enc = _Lstm(channels, hidden, rng)
        self.dec = _Lstm(hidden, hidden, rng)
        k = 1.0 / np.sqrt(hidden)
        self.Wo = rng.uniform(-k, k, (channels, hidden))
        self.bo = np.zeros(channels)
        self.mean = np.zeros(channels)
        self.std = np.ones(channels)

    def params(self) -> list[np.ndarray]:
        return [*self.enc.params(), *self.dec.params(), self.Wo, self.bo]

    # ------------------------------------------------------------ numpy forward / training

    def reconstruct(self, windows: np.ndarray) -> np.ndarray:
        """windows (B, T, C) standardised -> reconstruction (B, T, C)."""
        return self._forward(windows)[0]

    def _forward(self, windows: np.ndarray) -> tuple[np.ndarray, Any]:
        xs = np.transpose(windows, (1, 0, 2))
        hs_enc, c_enc = self.enc.forward(xs)
        rep = np.broadcast_to(hs_enc[-1], (xs.shape[0], *hs_enc[-1].shape))
        hs_dec, c_dec = self.dec.forward(rep)
        out = hs_dec @ self.Wo.T + self.bo
        return np.transpose(out, (1, 0, 2)), (xs, hs_enc, c_enc, hs_dec, c_dec, out)

    def _loss_and_grads(self, windows: np.ndarray) -> tuple[float, list[np.ndarray]]:
        _, (xs, hs_enc, c_enc, hs_dec, c_dec, out) = self._forward(windows)
        diff = out - xs
        loss = float(np.mean(diff * diff))
        dout = 2.0 * diff / diff.size
        dWo = np.einsum("tbc,tbh->ch", dout, hs_dec)
        dbo = dout.sum(axis=(0, 1))
        dhs_dec = dout @ self.Wo
        g_dec, dxs_dec = self.dec.backward(dhs_dec, c_dec)
        dhs_enc = np.zeros_like(hs_enc)
        dhs_enc[-1] = dxs_dec.sum(axis=0)  # the repeated code feeds every decoder step
        g_enc, _ = self.enc.backward(dhs_enc, c_enc)
        return loss, [*g_enc, *g_dec, dWo, dbo]

    def fit(
        self, X: np.ndarray, *, epochs: int = 40, batch: int = 64, lr: float = 0.01, seed: int = 0
    ) -> TrainReport:
        """Train on rows X (n, C) of normal data; windows of T consecutive rows."""
        import time

        started = time.perf_counter()
        self.mean = X.mean(axis=0)
        self.std = np.maximum(X.std(axis=0), 1e-9)
        W = self.windows((X - self.mean) / self.std)
        rng = np.random.default_rng(seed)
        params = self.params()
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        step = 0
        loss = float("nan")
        for _ in range(epochs):
            order = rng.permutation(len(W))
            losses = []
            for start in range(0, len(W), batch):
                loss_b, grads = self._loss_and_grads(W[order[start : start + batch]])
                losses.append(loss_b)
                norm = np.sqrt(sum(float((g * g).sum()) for g in grads))
                if norm > 5.0:  # clip: an exploding BPTT step must not wreck the weights
                    grads = [g * (5.0 / norm) for g in grads]
                step += 1
                for p, g, mi, vi in zip(params, grads, m, v, strict=True):
                    mi *= 0.9
                    mi += 0.1 * g
                    vi *= 0.999
                    vi += 0.001 * g * g
                    p -= lr * (mi / (1 - 0.9**step)) / (np.sqrt(vi / (1 - 0.999**step)) + 1e-8)
            loss = float(np.mean(losses))
        return TrainReport(epochs, len(W), loss, time.perf_counter() - started)

    def windows(self, Z: np.ndarray) -> np.ndarray:
        """Every window of T consecutive rows, (n - T + 1, T, C)."""
        from numpy.lib.stride_tricks import sliding_window_view

        return np.ascontiguousarray(np.transpose(sliding_window_view(Z, self.T, axis=0), (0, 2, 1)))

    # ------------------------------------------------------------ ONNX export

    def to_onnx(self) -> bytes:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        H, C = self.H, self.C

        def init(name: str, arr: np.ndarray) -> Any:
            return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)

        def lstm_b(b: np.ndarray) -> np.ndarray:
            return np.concatenate([b, np.zeros_like(b)])[None]

        inits = [
            init("W_enc", self.enc.W[None]),
            init("R_enc", self.enc.R[None]),
            init("B_enc", lstm_b(self.enc.b)),
            init("W_dec", self.dec.W[None]),
            init("R_dec", self.dec.R[None]),
            init("B_dec", lstm_b(self.dec.b)),
            init("Wo_t", self.Wo.T),
            init("bo", self.bo),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
            numpy_helper.from_array(np.array([H], dtype=np.int64), "hidden"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ]
        nodes = [
            helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
            helper.make_node("LSTM", ["xt", "W_enc", "R_enc", "B_enc"], ["", "h_enc"], hidden_size=H),
            helper.make_node("Shape", ["xt"], ["shape_x"]),
            helper.make_node("Slice", ["shape_x", "zero", "two"], ["tb"]),
            helper.make_node("Concat", ["tb", "hidden"], ["rep_shape"], axis=0),
            helper.make_node("Expand", ["h_enc", "rep_shape"], ["rep"]),
            helper.make_node("LSTM", ["rep", "W_dec", "R_dec", "B_dec"], ["y_dec"], hidden_size=H),
            helper.make_node("Squeeze", ["y_dec", "axis1"], ["y"]),
            helper.make_node("MatMul", ["y", "Wo_t"], ["out_lin"]),
            helper.make_node("Add", ["out_lin", "bo"], ["out_t"]),
            helper.make_node("Transpose", ["out_t"], ["recon"], perm=[1, 0, 2]),
        ]
        graph = helper.make_graph(
            nodes,
            "lstm_autoencoder",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", C])],
            [helper.make_tensor_value_info("recon", TensorProto.FLOAT, ["batch", "time", C])],
            inits,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-agent"
        )
        model.ir_version = 8  # readable by onnxruntime >= 1.14
        onnx.checker.check_model(model)
        return model.SerializeToString()

    def meta(self) -> dict[str, Any]:
        """What scoring needs beside the graph: the standardisation and the window length."""
        return {"window": self.T, "hidden": self.H, "mean": self.mean.tolist(), "std": self.std.tolist()}


def save_bundle(ae: LstmAutoencoder, directory: Path, calibration: dict[str, float]) -> list[str]:
    """Write model.onnx and scaler.json into ``directory``; returns the file names."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(ae.to_onnx())
    (directory / "scaler.json").write_text(json.dumps({**ae.meta(), "calibration": calibration}, indent=2))
    return ["model.onnx", "scaler.json"]
