"""Residuals the model detectors score: per channel AR(2) innovations around an adapting level.

The model detectors score *innovations*, not raw values.
Each channel gets an AR(2) model fitted on the baseline; a persistent channel
(a temperature that wanders by degrees over minutes) is then judged on how
surprising each step is, not on where it has wandered to, while a channel
that is noise around a level (a flow rate) keeps its level in the residual,
so a shift of that level stays visible for as long as it lasts. The level
itself follows slow plant drift with an exponential moving average whose time
constant is a quarter of the baseline, fed only the rows the machine scored
as normal, so an open fault is never learned as normal.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

AR_ORDER = 2
FREEZE_SCORE = 1.0  # rows scoring this high are not normal: no level adaptation, no refit data


MODELS = ("AR(2) around an adapting level", "AR(2) on differences", "AR(2) on what the other channels leave")


class Residualizer:
    """Per channel AR(2) innovations, in units of the innovation sigma.

    Three models per channel, and the held-out rows choose between them:

    - AR(2) around a slowly adapting level: for a channel that is noise
      around a level (a flow rate), whose shifts stay in the residual for as
      long as they last;
    - AR(2) on the first differences: for a channel that wanders on its own
      (a room temperature), judged on how surprising each step is rather than
      on where it has wandered to;
    - AR(2) on what a regression on the other channels leaves: for a channel
      that follows the others (a bearing temperature that follows the motor's
      load), whose drift away from that relation is the fault.

    Whichever predicts the held-out rows one step ahead with the smallest
    error is kept; nothing about the channel is assumed.
    """

    def __init__(self, channels: int) -> None:
        self.C = channels
        self.level = np.zeros(channels)
        self.mode = np.zeros(channels, dtype=int)
        self.B = np.zeros((channels, channels))  # cross-channel regression, rows of mode-2 channels
        self.coef = np.zeros((channels, AR_ORDER))
        self.sigma = np.ones(channels)
        self.prev = np.zeros((AR_ORDER, channels))  # last AR_ORDER deviations, newest last
        self.last_x = np.zeros(channels)
        self.alpha = 0.01
        self.fit_residuals = np.zeros((0, channels))
        self.level_sigma = np.ones(channels)
        self.slow_level = np.zeros(channels)
        self.base_level = np.zeros(channels)
        self.fit_levels = np.zeros((0, channels))

    @property
    def diff(self) -> np.ndarray:
        return self.mode == 1

    @staticmethod
    def _ar(D: np.ndarray) -> np.ndarray:
        n = len(D)
        if n <= 4 * AR_ORDER + 4:
            return np.zeros(AR_ORDER)
        A = np.column_stack([D[AR_ORDER - k - 1 : n - k - 1] for k in range(AR_ORDER)])
        coef, *_ = np.linalg.lstsq(A, D[AR_ORDER:], rcond=None)
        if not np.all(np.isfinite(coef)) or abs(coef.sum()) >= 1.0:  # keep it stationary
            return np.zeros(AR_ORDER)
        return np.asarray(coef, dtype=float)

    @staticmethod
    def _pred_err(D: np.ndarray, coef: np.ndarray, warm: np.ndarray) -> np.ndarray:
        full = np.concatenate([warm, D])
        pred = np.zeros(len(D))
        for k in range(AR_ORDER):
            pred += full[AR_ORDER - k - 1 : AR_ORDER - k - 1 + len(D)] * coef[k]
        return D - pred

    @staticmethod
    def _regress(y: np.ndarray, others: np.ndarray) -> np.ndarray:
        """Ridge regression of ``y`` on the columns of ``O`` (standardised; a light ridge for stability)."""
        scale = np.maximum(others.std(axis=0), 1e-12)
        Z = others / scale
        lam = 1e-3 * len(Z)
        b = np.linalg.solve(Z.T @ Z + lam * np.eye(Z.shape[1]), Z.T @ y)
        return np.asarray(b / scale, dtype=float)

    def _base(self, X: np.ndarray, before: np.ndarray, level: np.ndarray | None = None) -> np.ndarray:
        """Deviations each channel's AR model runs on: from the level, the previous row, or the others.
        ``level``: per-row levels (n, C), NaN where the channel's own level holds."""
        dev = X - (self.level if level is None else np.where(np.isnan(level), self.level, level))
        cross = dev - dev @ self.B.T
        return np.where(self.mode == 1, X - before, np.where(self.mode == 2, cross, dev))

    def fit(self, X: np.ndarray, held: np.ndarray | None = None) -> Residualizer:
        n, C = X.shape
        self.level = X.mean(axis=0)
        self.coef = np.zeros((C, AR_ORDER))
        self.mode = np.zeros(C, dtype=int)
        self.B = np.zeros((C, C))
        dev = X - self.level
        for c in range(C):
            x = X[:, c]
            others = [j for j in range(C) if j != c]
            series = [dev[:, c], np.diff(x, prepend=x[0])]
            b = None
            if others and n > 4 * C:
                b = self._regress(dev[:, c], dev[:, others])
                series.append(dev[:, c] - dev[:, others] @ b)
            coefs = [self._ar(d) for d in series]
            if held is not None and len(held) > 2 * AR_ORDER and n > AR_ORDER + 1:
                h = held[:, c]
                hdev = held - self.level
                cands = [hdev[:, c], np.diff(h, prepend=x[-1])]
                if b is not None:
                    cands.append(hdev[:, c] - hdev[:, others] @ b)
                errs = [
                    float(np.mean(self._pred_err(cand, coefs[m], series[m][-AR_ORDER:]) ** 2))
                    for m, cand in enumerate(cands)
                ]
                # the plain level model stands unless another predicts significantly better (an F test
                # on the held-out errors at 95 %: ln F ~ N(0, 4 / n) for two equal-sized samples)
                margin = math.exp(1.645 * math.sqrt(4.0 / len(h)))
                best = int(np.argmin(errs))
                self.mode[c] = best if errs[best] * margin < errs[0] else 0
            if self.mode[c] == 2 and b is not None:
                self.B[c, others] = b
            self.coef[c] = coefs[self.mode[c]]
        D = self._base(X, np.vstack([X[:1], X[:-1]]))
        E = self._innovations(D, np.zeros((AR_ORDER, C)))
        spread = E.std(axis=0)
        mad = np.median(np.abs(E - np.median(E, axis=0)), axis=0) * 1.4826
        # quantized channels have MAD 0 (most steps repeat the level); the std then carries the scale
        floor = np.maximum(1e-9 * np.maximum(np.abs(self.level), 1.0), 1e-12)
        self.sigma = np.maximum(np.maximum(mad, 0.5 * spread), floor)
        self.fit_residuals = E / self.sigma
        self.level_sigma = np.maximum(dev.std(axis=0), floor)
        self.slow_level = self.level.copy()
        self.base_level = self.level.copy()
        self.fit_levels = dev / self.level_sigma
        self.prev = D[-AR_ORDER:].copy() if n >= AR_ORDER else np.zeros((AR_ORDER, C))
        self.last_x = X[-1].copy()
        # the level's time constant: a quarter of the baseline (slow plant drift, not a fault's step)
        self.alpha = 1.0 / max(n / 4.0, 10.0)
        return self

    @property
    def step_rows(self) -> int:
        """The most rows scored against one set of levels: a tenth of the level's time constant.

        The levels move between micro-batches, not inside one; a batch as long as the time constant
        (a replay's, a backlog's) would judge its last rows against a level that many rows stale, so
        a drifting channel would read as shifted. The engine splits longer batches."""
        return max(1, int(0.1 / self.alpha))

    def _innovations(self, D: np.ndarray, prev: np.ndarray) -> np.ndarray:
        full = np.vstack([prev, D])
        pred = np.zeros_like(D)
        n = len(D)
        for k in range(AR_ORDER):
            pred += full[AR_ORDER - k - 1 : AR_ORDER - k - 1 + n] * self.coef[:, k]
        return D - pred

    def transform(self, X: np.ndarray, level: np.ndarray | None = None) -> np.ndarray:
        """Standardised innovations of a micro-batch; advances the AR state (not the level).
        ``level``: per-row levels of channels whose level moves row by row (``regime``), else NaN."""
        if not len(X):
            return np.zeros((0, self.C))
        D = self._base(X, np.vstack([self.last_x[None], X[:-1]]), level)
        E = self._innovations(D, self.prev)
        self.prev = np.vstack([self.prev, D])[-AR_ORDER:]
        self.last_x = X[-1].copy()
        return E / self.sigma

    def levels(self, X: np.ndarray) -> np.ndarray:
        """Deviation of each row from the channel's slow level (a whole baseline's time constant), in
        baseline sigmas: the view in which a slow drift of a wandering channel shows."""
        return (X - self.slow_level) / self.level_sigma

    def adapt(self, X: np.ndarray, normal: np.ndarray) -> None:
        """Let each level follow the rows scored normal (an EWMA, in closed form); other rows hold it.

        ``normal`` (n, C): per channel, so a fault on one channel holds that
        channel's level while the others go on following the plant's drift.
        """
        if not len(X):
            return
        # a channel modelled on the others keeps its baseline level: the relation already follows
        # the plant, and mixing one held level with the others' moving ones would break it
        moving = self._ewma(self.level, X, normal, self.alpha)
        # a held level that learned part of a slow fault's onset would keep the alert open after the
        # fault is gone: when rows that are not normal sit closer to the fitted level than to the
        # held one, the held level was the stale one, and the fitted level comes back
        held = ~normal.any(axis=0)
        if held.any():
            mean = X.mean(axis=0)
            stale = held & (np.abs(mean - self.base_level) < np.abs(mean - moving))
            moving = np.where(stale, self.base_level, moving)
        self._move_level(np.where(self.mode == 2, self.level, moving))
        self.slow_level = self._ewma(self.slow_level, X, normal, self.alpha / 4.0)

    def _move_level(self, level: np.ndarray) -> None:
        """Move the levels, and the AR state with them: the last deviations are re-expressed around
        the new level, so the next innovation sees only what the channel did, not the level's step
        (the level moves once per micro-batch; left in the state, that step read as a one-row
        spike at every batch boundary, a 'transient' with the batch's period)."""
        step = level - self.level
        base_step = step - step @ self.B.T  # what a level step does to each channel's modelled deviation
        self.prev -= np.where(self.mode == 1, 0.0, np.where(self.mode == 2, base_step, step))
        self.level = level

    def reanchor(self, levels: dict[int, float]) -> None:
        """Move channels' levels to where they settled after an excursion (``regime.ReturnWatch``)."""
        for c, v in levels.items():
            self.level[c] = self.slow_level[c] = v
            if self.mode[c] == 0:  # the AR state restarts at the new level
                self.prev[:, c] = self.last_x[c] - v

    @staticmethod
    def _ewma(level: np.ndarray, X: np.ndarray, normal: np.ndarray, alpha: float) -> np.ndarray:
        a = np.where(normal, alpha, 0.0)  # (n, C)
        keep = np.log1p(-a)
        after = np.cumsum(keep[::-1], axis=0)[::-1] - keep  # sum of log(1 - a_j) for j > i
        w = a * np.exp(after)
        return np.asarray(np.exp(keep.sum(axis=0)) * level + (w * X).sum(axis=0))

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "model": MODELS[int(self.mode[c])],
                "level": float(self.level[c]),
                "ar": [round(float(v), 4) for v in self.coef[c]],
                "innovation_sigma": float(self.sigma[c]),
            }
            for c in range(self.C)
        ]
