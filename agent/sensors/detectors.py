"""The statistical detectors: robust rolling z-score, CUSUM/EWMA, Hotelling T² / PCA-Q, data quality.

Every detector is fitted on part of the baseline and then produces *raw*
statistics for micro-batches: ``raw(R) -> (stats (n, K), share)``, one column
per sub-test (``columns`` says which channel each column belongs to, or -1 for
a whole-machine statistic, whose per-channel split is ``share`` (n, C)). The
engine maps each column onto the common budget scale with a
``calibrate.TailCalibrator`` fitted on held-out baseline rows, so the
detectors themselves hold no thresholds.

Input: the engine's residual view (``residuals.Residualizer``): per channel
standardised AR innovations around a slowly adapting level.

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

from agent.sensors.calibrate import (
    LinearCalibrator,
    TailCalibrator,
    gauss_upper,
    long_run_sigma,
    siegmund_h,
)
from agent.sensors.spec import ChannelSpec

MAD_TO_SIGMA = 1.4826
_EPS = 1e-12

#: CUSUM sums stop a little above their limit, so an alert clears in bounded time; the EWMA's score
#: stops there too (see Cusum): both open alerts, neither sets a level above Warning
CAP_SCORE = 1.5

#: per multivariate column: how its statistic splits over the channels (n, C)
Shares = dict[int, np.ndarray]


def robust_center_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column median and MAD-based sigma, with a floor so a constant column does not divide by 0."""
    med = np.median(X, axis=0)
    mad = np.median(np.abs(X - med), axis=0) * MAD_TO_SIGMA
    std = X.std(axis=0)
    floor = np.maximum(1e-6 * np.maximum(np.abs(med), 1.0), 0.05 * std)
    return med, np.maximum(mad, np.maximum(floor, _EPS))


class RobustZ:
    """Per stream: |r - rolling median| / rolling MAD of the residual: spikes, and noise that grows.

    (A separate statistic for the rolling MAD itself was dropped: it moves so
    slowly that a held-out stretch shows too few of its excursions to
    calibrate it, and the growing noise it was for already crosses the |z|
    limit, PCA's Q and the forest's isolation depth.)"""

    name = "robust_z"

    def __init__(self, channels: Sequence[ChannelSpec]) -> None:
        p = [c.params for c in channels]
        self.C = len(p)
        self.window = max(x.z_window for x in p)
        self.stride = min(x.z_stride for x in p)
        self.columns = list(range(self.C))  # |z| per channel
        self.kinds = ["robust z"] * self.C
        self.hist: np.ndarray | None = None
        self.base_scale: np.ndarray | None = None
        self.floor: np.ndarray | None = None
        self.pos = 0  # samples scored since the last reference, in [0, stride)
        self.ref_med: np.ndarray | None = None
        self.ref_scale: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> None:
        _, self.base_scale = robust_center_scale(X)
        # quantized residuals have a MAD of 0 most of the time: never divide by less than a
        # quarter of the channel's overall spread
        self.floor = np.maximum(0.25 * X.std(axis=0), 0.05 * self.base_scale)
        self.base_scale = np.maximum(self.base_scale, self.floor)
        self.window = max(8, min(self.window, X.shape[0] // 2))
        self.hist = X[-self.window :].copy()
        self.pos = 0
        self.ref_med = self.ref_scale = None

    def raw(self, X: np.ndarray) -> tuple[np.ndarray, Shares]:
        assert self.hist is not None and self.base_scale is not None
        n, s = X.shape[0], self.stride
        H = np.concatenate([self.hist, X])
        # reference points: X indices where (pos + j) % stride == 0; the reference at j
        # is the median/MAD of the W rows before it, i.e. H[j : j + W]
        starts = np.arange((s - self.pos) % s, n, s)
        med, scale = self._refs_at(H, starts)
        if self.ref_med is not None and self.ref_scale is not None:  # rows before the first new reference
            med = np.concatenate([self.ref_med[None], med])
            scale = np.concatenate([self.ref_scale[None], scale])
            ref_of_row = np.searchsorted(starts, np.arange(n), side="right")
        else:  # fresh after fit: pos == 0, so row 0 is a reference point
            ref_of_row = np.searchsorted(starts, np.arange(n), side="right") - 1
        m, sc = med[ref_of_row], scale[ref_of_row]
        z = np.abs(X - m) / sc
        self.ref_med, self.ref_scale = med[-1], scale[-1]
        self.pos = (self.pos + n) % s
        self.hist = H[-self.window :]
        return z, {}

    def _refs_at(self, H: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        win = sliding_window_view(H, self.window, axis=0)[idx]  # (k, C, W)
        med = np.median(win, axis=2)
        mad = np.median(np.abs(win - med[:, :, None]), axis=2) * MAD_TO_SIGMA
        assert self.floor is not None  # set by fit(), which every caller runs first
        return med, np.maximum(mad, self.floor)


class Cusum:
    """Per stream: two-sided CUSUM and an EWMA of the residual, for shifts and slow drift.

    The allowance ``k`` (in long-run sigmas; textbook: half the smallest shift
    worth finding) is a parameter; the decision limits are not: ``calibrate``
    derives them from the budget with Siegmund's run-length approximation
    (CUSUM) and the stationary EWMA variance, on the residuals' long-run sigma.
    The sums are capped a little above their limit (``cap``, set by the
    engine) so an alert clears in bounded time once the shift is gone.

    The EWMA's *score* is capped at the same height (its state is not, so it
    forgets at its own pace). Both statistics are evidence that a mean moved:
    they open an alert. Their limits come from theory (run lengths, the
    stationary Gaussian EWMA variance) on a long-run sigma estimated from a
    few hundred rows, not from a tail fitted on held-out rows, so they are no
    measure of how improbable a large value is: read linearly above the limit
    they called a lasting 6 % step of a vibration RMS in a fault-free
    recording "Minor". The levels above Warning are set by the statistics
    whose scale comes from held-out rows (level deviation, PCA T²/Q, the
    isolation forest, the autoencoder).
    """

    name = "cusum"

    def __init__(self, channels: Sequence[ChannelSpec], levels_of: Sequence[int] = ()) -> None:
        # inputs: every channel's residual, then the level deviation of the channels in ``levels_of``
        chan = list(range(len(channels))) + list(levels_of)
        self.C = len(chan)
        self.n_levels = len(levels_of)
        self.k = [channels[c].params.cusum_k for c in chan]
        self.lam = [channels[c].params.ewma_lambda for c in chan]
        # CUSUM sum per input, |EWMA| per input, then the size of each level deviation itself (how
        # far a drift has gone: it sets the alert's level while the sums only say "it moved")
        self.columns = chan * 2 + list(levels_of)
        self.kinds = ["CUSUM"] * self.C + ["EWMA"] * self.C + ["level deviation"] * self.n_levels
        self.center = np.zeros(self.C)
        self.scale = np.ones(self.C)
        self.cap = [math.inf] * self.C
        self.ecap = [math.inf] * self.C  # the EWMA's score stops here (its state does not)
        self.state = [[0.0, 0.0, 0.0] for _ in range(self.C)]
        self._fit_rows = np.zeros((0, self.C))

    def fit(self, X: np.ndarray) -> None:
        self.center = X.mean(axis=0)
        self._fit_rows = X
        self.scale = np.array([max(long_run_sigma(X[:, c] - self.center[c]), _EPS) for c in range(self.C)])
        self.state = [[0.0, 0.0, 0.0] for _ in range(X.shape[1])]

    def calibrate(self, held: np.ndarray, p_star: float) -> list[LinearCalibrator | TailCalibrator]:
        """Limits for the budget ``p_star`` per statistic; the long-run sigma over all baseline rows."""
        rows = np.vstack([self._fit_rows, held]) - self.center
        self.scale = np.array([max(long_run_sigma(rows[:, c]), _EPS) for c in range(self.C)])
        self._fit_rows = np.zeros((0, self.C))
        n = len(held)
        sums = [LinearCalibrator(siegmund_h(k, 1.0 / p_star), p_star, n) for k in self.k]
        z = gauss_upper(p_star)
        ewmas = [LinearCalibrator(z * math.sqrt(lam / (2.0 - lam)), p_star, n) for lam in self.lam]
        for c, (cal, ewma) in enumerate(zip(sums, ewmas, strict=True)):
            self.cap[c] = cal.raw_at(CAP_SCORE)
            self.ecap[c] = ewma.raw_at(CAP_SCORE)
        self.state = [[0.0, 0.0, 0.0] for _ in range(self.C)]
        first = self.C - self.n_levels
        size = np.abs((held - self.center) / self.scale)[:, first:]
        sizes = [TailCalibrator().fit(size[:, j], p_star) for j in range(self.n_levels)]
        return [*sums, *ewmas, *sizes]

    def reset(self, channels: Sequence[int]) -> None:
        """Restart the sums and EWMAs of these channels' inputs (a re-anchored level)."""
        chan = self.columns[: self.C]
        for j, c in enumerate(chan):
            if c in channels:
                self.state[j] = [0.0, 0.0, 0.0]

    def raw(self, X: np.ndarray) -> tuple[np.ndarray, Shares]:
        Z = (X - self.center) / self.scale
        n, C = Z.shape
        out = np.empty((n, 2 * C))
        for c in range(C):
            sp, sn, e = self.state[c]
            k, lam, cap, ecap = self.k[c], self.lam[c], self.cap[c], self.ecap[c]
            s_out = [0.0] * n
            e_out = [0.0] * n
            for i, z in enumerate(Z[:, c].tolist()):
                sp += z - k
                sp = 0.0 if sp < 0.0 else (cap if sp > cap else sp)
                sn += -z - k
                sn = 0.0 if sn < 0.0 else (cap if sn > cap else sn)
                e += lam * (z - e)
                s_out[i] = sp if sp > sn else sn
                ae = e if e > 0 else -e
                e_out[i] = ae if ae < ecap else ecap
            self.state[c] = [sp, sn, e]
            out[:, c] = s_out
            out[:, C + c] = e_out
        return np.hstack([out, np.abs(Z[:, C - self.n_levels :])]), {}


class PcaT2Q:
    """Per machine: Hotelling T² on the principal components and Q (SPE) on the residual.

    T² flags rows unusually far along the directions the channels normally move
    together; Q flags rows that leave that subspace: the broken-correlation fault.
    """

    name = "pca"
    columns = [-1, -1]
    kinds = ["Hotelling T²", "Q (SPE)"]

    def __init__(self, variance: float = 0.9) -> None:
        self.variance = variance

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
        _, _, R = self._stats(X)
        self.res_scale = np.maximum(R.std(axis=0), 0.1)  # floor: a channel the PCs fit exactly

    def _stats(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        Z = (X - self.mean) / self.std
        T = Z @ self.P
        t2 = (T**2 / self.lam).sum(axis=1)
        R = (Z - T @ self.P.T) / self.res_scale
        return t2, (R**2).sum(axis=1), R

    def raw(self, X: np.ndarray) -> tuple[np.ndarray, Shares]:
        t2, q, R = self._stats(X)
        Z2 = ((X - self.mean) / self.std) ** 2
        share_t = Z2 / np.maximum(Z2.sum(axis=1), _EPS)[:, None]
        share_q = R**2 / np.maximum(q, _EPS)[:, None]
        return np.column_stack([t2, q]), {0: share_t, 1: share_q}


class Quality:
    """Per stream data quality: stuck (a frozen value) and dropout (no valid value).

    Stuck: how long the value has repeated exactly, against a limit learned
    from the baseline's own runs of repeated values. Quantized and
    sample-and-hold channels repeat all the time; a channel is called stuck
    only when it holds far longer than it ever did: the limit is the largest
    of ``stuck_s``, three times the longest baseline run, and the run length
    whose extrapolated frequency (an exponential tail over the baseline's run
    lengths) fits the false-alarm budget. Dropout: time since the last valid
    value over ``dropout_s`` (at least 5 sample periods). Both are time-based,
    from row timestamps, so replays and live streams agree.
    """

    def __init__(self, channels: Sequence[ChannelSpec], rate_hz: float) -> None:
        period = 1.0 / rate_hz
        self.stuck_thr = [c.params.stuck_s for c in channels]
        self.dropout_thr = [max(c.params.dropout_s, 5 * period) for c in channels]
        self.period = period
        n = len(channels)
        self.longest_run = [0] * n
        self.resolution = [0.0] * n
        self.last_value = [math.nan] * n
        self.run_start = [math.nan] * n
        self.last_valid_ts = [math.nan] * n
        self.active = False  # nothing is judged before the baseline is learned

    def fit(self, X: np.ndarray, rate_hz: float, p_star: float = 1e-6) -> None:
        n = len(X)
        for c in range(X.shape[1]):
            col = X[:, c]
            steps = np.abs(np.diff(col))
            moved = steps[steps > 0]
            self.resolution[c] = float(moved.min()) if moved.size else 0.0
            runs = _run_lengths(col)  # samples per run of equal values
            longest = int(runs.max()) if runs.size else 1
            self.longest_run[c] = longest
            limit = 3.0 * longest
            held = runs[runs >= 2]
            if held.size >= 5:  # runs per sample, and the tail of their length, from the baseline
                beta = max(float((held - 2).mean()), 1.0)
                runs_per_sample = held.size / max(n, 1)
                limit = max(limit, 2.0 + beta * math.log(max(runs_per_sample / p_star, 1.0)))
            base = self.stuck_thr[c]
            self.stuck_thr[c] = max(base, limit / rate_hz)
        self.active = True

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
            if self.active:
                stuck[:, c] = s_out
                drop[:, c] = d_out
        return stuck, drop

    def staleness(self, now: float) -> list[float]:
        """Dropout scores at ``now`` for a stream that sends nothing at all (checked on a timer)."""
        if not self.active:
            return [0.0] * len(self.last_valid_ts)
        return [
            0.0 if t != t else max(0.0, (now - t) / thr)
            for t, thr in zip(self.last_valid_ts, self.dropout_thr, strict=True)
        ]

    def describe(self, c: int) -> dict[str, float]:
        return {
            "stuck_after_s": round(self.stuck_thr[c], 3),
            "longest_baseline_run": self.longest_run[c],
            "resolution": self.resolution[c],
            "dropout_after_s": round(self.dropout_thr[c], 3),
        }


def _run_lengths(col: np.ndarray) -> np.ndarray:
    """Lengths (in samples) of the runs of exactly repeated values in ``col``."""
    if not col.size:
        return np.zeros(0, dtype=int)
    change = np.flatnonzero(np.concatenate([[True], col[1:] != col[:-1], [True]]))
    return np.diff(change)
