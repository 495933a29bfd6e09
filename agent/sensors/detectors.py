"""The statistical detectors: robust rolling z-score, EWMA/CUSUM, Hotelling T² / PCA-Q, data quality.

Every detector is fitted on the baseline (rows of one machine, shape (n, C))
and then scores micro-batches. Scores are *normalised*: 1.0 means "at this
detector's alarm threshold", so the ensemble and the alert levels compare
detectors on one scale. Each also returns per-channel contributions (n, C) on
the same scale, for the root-cause hint.

Speed: everything is vectorised with numpy over the micro-batch, or a tight
pure-Python loop with O(1) work per sample where the recursion is sequential
(CUSUM/EWMA, run lengths). Imported only when the sensor service starts.

Approximation, stated: the rolling median/MAD of ``RobustZ`` is recomputed once
every ``z_stride`` samples (default 8) over the ``z_window`` samples before that
point, so a sample is scored against a reference at most ``stride - 1``
samples old. ``stride = 1`` is the exact per-sample rolling statistic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from agent.sensors.spec import ChannelSpec

MAD_TO_SIGMA = 1.4826
_EPS = 1e-12


def robust_center_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column median and MAD-based sigma, with a floor so a constant column does not divide by 0."""
    med = np.median(X, axis=0)
    mad = np.median(np.abs(X - med), axis=0) * MAD_TO_SIGMA
    std = X.std(axis=0)
    floor = np.maximum(1e-6 * np.maximum(np.abs(med), 1.0), 0.05 * std)
    return med, np.maximum(mad, np.maximum(floor, _EPS))


class Calibrator:
    """Maps a raw score to the common scale from its distribution on held-out normal data.

    ``norm = (v - median) / (margin * (q - median))``: 0 at a typical value, 1 at
    ``margin`` times the distance to the baseline's ``quantile``. The margin
    absorbs what a short baseline did not see.
    """

    def __init__(self, quantile: float = 0.995, margin: float = 1.5) -> None:
        self.quantile = quantile
        self.margin = margin
        self.center = 0.0
        self.scale = 1.0

    def fit(self, raw: np.ndarray) -> Calibrator:
        raw = raw[np.isfinite(raw)]
        if raw.size:
            self.center = float(np.median(raw))
            spread = float(np.quantile(raw, self.quantile)) - self.center
            floor = 1e-9 * max(abs(self.center), 1.0)
            self.scale = max(spread * self.margin, floor)
        return self

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.maximum((raw - self.center) / self.scale, 0.0)


class RobustZ:
    """Per stream: |x - rolling median| / rolling MAD, and the rolling MAD against the baseline's (noise)."""

    name = "robust_z"

    def __init__(self, channels: Sequence[ChannelSpec]) -> None:
        p = [c.params for c in channels]
        self.window = max(x.z_window for x in p)
        self.stride = min(x.z_stride for x in p)
        self.z_thr = np.array([x.z_threshold for x in p])
        self.noise_thr = np.array([x.noise_threshold for x in p])
        self.hist: np.ndarray | None = None
        self.base_scale: np.ndarray | None = None
        self.floor: np.ndarray | None = None
        self.pos = 0  # samples scored since the last reference, in [0, stride)
        self.ref_med: np.ndarray | None = None
        self.ref_scale: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> None:
        _, self.base_scale = robust_center_scale(X)
        self.floor = 0.05 * self.base_scale
        self.window = min(self.window, X.shape[0])
        self.hist = X[-self.window :].copy()
        self.pos = 0
        self.ref_med = self.ref_scale = None

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.hist is not None and self.base_scale is not None
        n, s = X.shape[0], self.stride
        H = np.concatenate([self.hist, X])
        # reference points: X indices where (pos + j) % stride == 0; the reference at j
        # is the median/MAD of the W rows before it, i.e. H[j : j + W]
        starts = np.arange((s - self.pos) % s, n, s)
        med, scale = self._refs_at(H, starts)
        if self.ref_med is not None:  # rows before the first new reference use the previous one
            med = np.concatenate([self.ref_med[None], med])
            scale = np.concatenate([self.ref_scale[None], scale])  # type: ignore[index]
            ref_of_row = np.searchsorted(starts, np.arange(n), side="right")
        else:  # fresh after fit: pos == 0, so row 0 is a reference point
            ref_of_row = np.searchsorted(starts, np.arange(n), side="right") - 1
        m, sc = med[ref_of_row], scale[ref_of_row]
        z = (X - m) / sc
        per = np.maximum(np.abs(z) / self.z_thr, (sc / self.base_scale - 1.0) / (self.noise_thr - 1.0))
        self.ref_med, self.ref_scale = med[-1], scale[-1]
        self.pos = (self.pos + n) % s
        self.hist = H[-self.window :]
        return per.max(axis=1), per

    def _refs_at(self, H: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        win = sliding_window_view(H, self.window, axis=0)[idx]  # (k, C, W)
        med = np.median(win, axis=2)
        mad = np.median(np.abs(win - med[:, :, None]), axis=2) * MAD_TO_SIGMA
        return med, np.maximum(mad, self.floor)


class Cusum:
    """Per stream: two-sided CUSUM and EWMA of the deviation from the baseline, for slow drift.

    Thresholds are calibrated on the baseline itself (the largest CUSUM sum and
    EWMA excursion it produced, times a margin) rather than from textbook
    average-run-lengths, because real channels are autocorrelated (a load
    cycle) and the textbook h would alarm every minute. The sums are capped at
    1.5h so an alert clears in bounded time once the drift is gone.
    """

    name = "cusum"
    margin = 3.0

    def __init__(self, channels: Sequence[ChannelSpec], rate_hz: float = 10.0) -> None:
        self.rate = rate_hz
        self.k_min = [c.params.cusum_k for c in channels]
        self.k = list(self.k_min)
        self.lam = [c.params.ewma_lambda for c in channels]
        self.center = np.zeros(len(channels))
        self.scale = np.ones(len(channels))
        self.h = [5.0] * len(channels)
        self.limit = [1.0] * len(channels)
        self.state = [[0.0, 0.0, 0.0] for _ in channels]

    def fit(self, X: np.ndarray) -> None:
        self.center, self.scale = robust_center_scale(X)
        Z = (X - self.center) / self.scale
        for c in range(X.shape[1]):
            lam = self.lam[c]
            sp = sn = e = 0.0
            max_s = max_e = 0.0
            k = self.k[c]
            for z in Z[:, c].tolist():
                sp = max(0.0, sp + z - k)
                sn = max(0.0, sn - z - k)
                e += lam * (z - e)
                max_s = max(max_s, sp, sn)
                max_e = max(max_e, abs(e))
            # floor: a shift of 2k held for 20 s. A short baseline under-samples a slowly wandering
            # channel's extremes, and an h from it alone alarms every hour or two
            self.h[c] = max(20.0 * self.rate * max(k, 0.25), self.margin * max_s)
            self.limit[c] = max(3.0 * math.sqrt(lam / (2 - lam)), self.margin * max_e)
        self.state = [[0.0, 0.0, 0.0] for _ in range(X.shape[1])]

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Z = (X - self.center) / self.scale
        n, C = Z.shape
        per = np.empty((n, C))
        for c in range(C):
            sp, sn, e = self.state[c]
            k, lam, h, lim = self.k[c], self.lam[c], self.h[c], self.limit[c]
            cap = 1.5 * h
            out = [0.0] * n
            for i, z in enumerate(Z[:, c].tolist()):
                sp += z - k
                sp = 0.0 if sp < 0.0 else (cap if sp > cap else sp)
                sn += -z - k
                sn = 0.0 if sn < 0.0 else (cap if sn > cap else sn)
                e += lam * (z - e)
                a = (sp if sp > sn else sn) / h
                b = (e if e > 0 else -e) / lim
                out[i] = a if a > b else b
            self.state[c] = [sp, sn, e]
            per[:, c] = out
        return per.max(axis=1), per


class PcaT2Q:
    """Per machine: Hotelling T² on the principal components and Q (SPE) on the residual.

    T² flags rows unusually far along the directions the channels normally move
    together; Q flags rows that leave that subspace: the broken-correlation fault.
    """

    name = "pca"

    def __init__(self, variance: float = 0.9) -> None:
        self.variance = variance
        self.t2 = Calibrator(quantile=0.999, margin=2.0)
        self.q = Calibrator(quantile=0.999, margin=2.0)

    def fit(self, X: np.ndarray) -> None:
        self.mean = X.mean(axis=0)
        self.std = np.maximum(X.std(axis=0), 1e-9)
        Z = (X - self.mean) / self.std
        _, s, vt = np.linalg.svd(Z, full_matrices=False)
        var = s**2 / max(len(Z) - 1, 1)
        share = np.cumsum(var) / max(var.sum(), _EPS)
        k = int(np.searchsorted(share, self.variance) + 1)
        self.k = max(1, min(k, Z.shape[1] - 1)) if Z.shape[1] > 1 else 1
        self.P = vt[: self.k].T  # (C, k)
        self.lam = np.maximum(var[: self.k], 1e-9)
        # Q is summed over residuals scaled by each channel's own baseline residual spread, so a
        # channel that the model normally predicts well (small residual) counts as much as one it
        # predicts poorly (a lagged temperature): a broken relation shows wherever it happens
        self.res_scale = np.ones(Z.shape[1])
        _, _, R = self._raw(X)
        self.res_scale = np.maximum(R.std(axis=0), 0.1)  # floor: a channel the PCs fit exactly
        t2, q, _ = self._raw(X)
        self.t2.fit(t2)
        self.q.fit(q)

    def _raw(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        Z = (X - self.mean) / self.std
        T = Z @ self.P
        t2 = (T**2 / self.lam).sum(axis=1)
        R = (Z - T @ self.P.T) / self.res_scale
        return t2, (R**2).sum(axis=1), R

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t2, q, R = self._raw(X)
        a, b = self.t2(t2), self.q(q)
        score = np.maximum(a, b)
        # contributions: the residual's share when Q dominates, the standardised deviation's otherwise
        Z2 = ((X - self.mean) / self.std) ** 2
        share_q = R**2 / np.maximum(q, _EPS)[:, None]
        share_t = Z2 / np.maximum(Z2.sum(axis=1), _EPS)[:, None]
        share = np.where((b >= a)[:, None], share_q, share_t)
        return score, share * score[:, None]


class Quality:
    """Per stream data quality: stuck (a frozen value) and dropout (no valid value).

    Stuck: how long the value has repeated exactly, over ``stuck_s`` (at least
    twice the longest repeat run the baseline showed, so a coarse ADC that
    legitimately repeats is not "stuck"). Dropout: time since the last valid
    value over ``dropout_s`` (at least 5 sample periods). Both are time-based,
    from row timestamps, so replays and live streams agree.
    """

    def __init__(self, channels: Sequence[ChannelSpec], rate_hz: float) -> None:
        period = 1.0 / rate_hz
        self.stuck_thr = [c.params.stuck_s for c in channels]
        self.dropout_thr = [max(c.params.dropout_s, 5 * period) for c in channels]
        self.period = period
        n = len(channels)
        self.last_value = [math.nan] * n
        self.run_start = [math.nan] * n
        self.last_valid_ts = [math.nan] * n

    def fit(self, X: np.ndarray, rate_hz: float) -> None:
        for c in range(X.shape[1]):
            col = X[:, c]
            same = np.concatenate([[False], col[1:] == col[:-1]])
            longest = _longest_run(same)
            self.stuck_thr[c] = max(self.stuck_thr[c], 2.0 * (longest + 1) / rate_hz)

    def score(self, ts: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, C = X.shape
        stuck = np.zeros((n, C))
        drop = np.zeros((n, C))
        tl = ts.tolist()
        for c in range(C):
            last, start, valid_ts = self.last_value[c], self.run_start[c], self.last_valid_ts[c]
            s_thr, d_thr = self.stuck_thr[c], self.dropout_thr[c]
            s_out = [0.0] * n
            d_out = [0.0] * n
            for i, v in enumerate(X[:, c].tolist()):
                t = tl[i]
                if v != v:  # NaN: missing
                    if valid_ts == valid_ts:
                        d_out[i] = (t - valid_ts) / d_thr
                    continue
                valid_ts = t
                if v == last:
                    s_out[i] = (t - start + self.period) / s_thr
                else:
                    last, start = v, t
            self.last_value[c], self.run_start[c], self.last_valid_ts[c] = last, start, valid_ts
            stuck[:, c] = s_out
            drop[:, c] = d_out
        return stuck, drop

    def staleness(self, now: float) -> list[float]:
        """Dropout scores at ``now`` for a stream that sends nothing at all (checked on a timer)."""
        return [
            0.0 if t != t else max(0.0, (now - t) / thr)
            for t, thr in zip(self.last_valid_ts, self.dropout_thr, strict=True)
        ]


def _longest_run(flags: np.ndarray) -> int:
    if not flags.any():
        return 0
    padded = np.concatenate([[0], flags.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max())
