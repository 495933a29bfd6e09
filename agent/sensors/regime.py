"""Re-arming: a channel whose level was held through an excursion and has come back is re-anchored.

While a channel scores abnormal its level is held (``Residualizer.adapt``): an
open fault is never learned as normal. The cost is the other side of the
excursion: when the fault is over the process often settles a little away
from where it was before (a valve reopened, a flow that finds a new level), and
against the held level the CUSUM sees that small offset as a fault of its own,
forever: the alert never clears.

Alarm management's answer is the deadband (ISA-18.2): an alarm returns to
normal when the process variable is back inside its normal operating band, not
when its cumulative evidence has drained. Here, per channel judged around a
level (the level itself, or the slow level of a channel modelled on its
differences; a relation to the other channels has no level of its own):

- the *band* is the range of single normal readings around the level: the
  99th percentile of ``|x - level|`` over the held-out baseline rows, in the
  channel's level sigmas (at least the Gaussian 99 % point); *near* is the
  same for the mean of a window of ``W = 1 / lambda`` readings (one memory of
  the channel's EWMA);
- while the level is held, the window mean follows where the channel is (a
  window, not an EWMA: it has no tail, so a return shows W readings after it
  happened); the excursion has *left* once that mean went outside the band,
  and it is *back* once a full window is no further out, in the excursion's
  direction, than *near*; settling past where it was, on the other side,
  counts as back;
- a back channel is re-anchored at the window mean and then *recovers* for
  one baseline length: its level follows the window and its sums restart at
  every step, so the minutes a process takes to settle after a disturbance do
  not read as a fault; leaving the band around where it was re-anchored is a
  new excursion, held and judged as before (its sums start from zero then);
- a level held for as long as the baseline lasted accepts the state the
  channel is in as its regime (a standing alert would otherwise stand
  forever): re-anchored, recovering, and counted (``regimes_accepted``).

The price, stated: while a channel recovers, only a departure beyond its band
alerts on it; a second small shift within a baseline's length of the first
waits for the recovery to end.
A small shift that never left the band (a slow drift, an early fault) is never
excused this way: the CUSUM keeps it until the level has been held a
baseline's length. The engine scores in short steps while any channel is
held or recovering, so a return re-arms within a few samples.
"""

from __future__ import annotations

import numpy as np

BAND_QUANTILE = 0.99
GAUSS_99 = 2.576  # the two-sided 99 % point of a normal reading: the band's floor
IDLE, HELD, RECOVERING = 0, 1, 2


class ReturnWatch:
    """Per channel: has a held level's excursion left the normal band and come back to where it was?"""

    def __init__(self, channels: int) -> None:
        self.C = channels
        self.band = np.full(channels, GAUSS_99)  # single readings' normal range (level sigmas)
        self.near = np.full(channels, 1.0)  # a window mean's normal range: "back where it was"
        self.W = np.full(channels, 10)  # the window: one EWMA memory of the channel (1 / lambda)
        self.phase = np.zeros(channels, dtype=int)  # IDLE, HELD or RECOVERING
        self.buf = np.zeros((10, channels))  # the last readings (a ring)
        self.pos = 0
        self.n = np.zeros(channels, dtype=int)  # readings in the window since the watch began
        self.sum = np.zeros(channels)
        self.side = np.zeros(channels)  # the excursion's direction once it left the band (0: it has not)
        self.anchor = np.zeros(channels)  # where a recovering channel was re-anchored
        self.count = np.zeros(channels)  # samples held, or recovering
        self.max_hold = np.inf  # samples a level may stay held before the new state is accepted
        self.reanchors = 0  # excursions that came back
        self.accepted = 0  # regimes accepted after standing max_hold

    def fit(self, held_dev: np.ndarray, lam: np.ndarray, max_hold: float = np.inf) -> ReturnWatch:
        """``held_dev``: held-out rows' deviation from the level in level sigmas; ``lam``: the channels'
        EWMA weights (window ``1 / lambda``); ``max_hold``: samples after which a level still held
        accepts where the channel is."""
        self.max_hold = max_hold
        self.W = np.maximum(np.round(1.0 / np.clip(np.asarray(lam, dtype=float), 1e-3, 1.0)), 1).astype(int)
        self.buf = np.zeros((int(self.W.max()), self.C))
        if len(held_dev):
            q = np.quantile(np.abs(held_dev), BAND_QUANTILE, axis=0)
            self.band = np.maximum(np.nan_to_num(q, nan=GAUSS_99), GAUSS_99)
            near = []
            for c in range(self.C):
                w = min(int(self.W[c]), len(held_dev))
                means = np.convolve(held_dev[:, c], np.ones(w) / w, mode="valid")
                near.append(float(np.quantile(np.abs(means), BAND_QUANTILE)))
            self.near = np.minimum(np.nan_to_num(np.array(near), nan=1.0), self.band)
        self.phase[:] = IDLE
        self.n[:] = 0
        self.sum[:] = self.side[:] = self.count[:] = 0.0
        return self

    @property
    def watching(self) -> bool:
        """Some channel is held or recovering: the engine then scores in short steps."""
        return bool((self.phase != IDLE).any())

    def update(
        self, X: np.ndarray, held: np.ndarray, level: np.ndarray, sigma: np.ndarray
    ) -> dict[int, float]:
        """Feed rows ``X`` (n, C) with their per-channel ``held`` flags.

        Returns ``{channel: level to re-anchor at}`` for the channels that came back or are
        recovering; the engine moves their levels there and restarts their sums.
        """
        out: dict[int, float] = {}
        if not len(X) or not (held.any() or self.watching):
            return out
        level = level.copy()
        cols = np.arange(self.C)
        size = len(self.buf)
        for i in range(len(X)):
            x, h = X[i], held[i]
            start = (self.phase == IDLE) & h
            self.phase = np.where(start, HELD, self.phase)
            self.n = np.where(start, 0, self.n)
            self.sum = np.where(start, 0.0, self.sum)
            self.count = np.where(start, 0.0, self.count)
            # the mean of the last W readings (fewer just after the watch began)
            old = self.buf[(self.pos - self.W) % size, cols]
            self.buf[self.pos] = x
            self.pos = (self.pos + 1) % size
            full = self.n >= self.W
            self.sum += x - np.where(full, old, 0.0)
            self.n = np.minimum(self.n + 1, self.W)
            mean = self.sum / np.maximum(self.n, 1)
            # a level held that never left the band and scores normal again settled on its own; one that
            # left it stays watched until it is back (its sums may dip below the limit on the way)
            self.phase = np.where((self.phase == HELD) & ~h & (self.side == 0), IDLE, self.phase)
            watch = self.phase == HELD
            dev = (mean - level) / sigma
            left = watch & (self.side == 0) & (np.abs(dev) > self.band)
            self.side = np.where(left, np.sign(dev), np.where(watch, self.side, 0.0))
            # back: a full window no further out, in the excursion's direction, than a normal window
            # mean (settling past where it was, on the other side, counts)
            back = watch & (self.side != 0) & (self.n >= self.W) & (dev * self.side <= self.near)
            self.count = np.where(watch, self.count + 1.0, self.count)
            standing = watch & (self.count >= self.max_hold)
            for c in np.flatnonzero(back | standing):  # re-anchor where it is, then recover
                self.accepted += int(standing[c] and not back[c])
                self.reanchors += int(back[c])
                level[c] = out[int(c)] = self.anchor[c] = float(mean[c])
                self.phase[c], self.count[c], self.side[c] = RECOVERING, 0.0, 0.0
            for c in np.flatnonzero((self.phase == RECOVERING) & ~(back | standing)):
                if abs(mean[c] - self.anchor[c]) / sigma[c] > self.band[c]:  # a new excursion: held
                    self.phase[c], self.side[c], self.count[c] = HELD, np.sign(mean[c] - self.anchor[c]), 0.0
                    continue
                level[c] = out[int(c)] = float(mean[c])  # the level follows it as it settles
                self.count[c] += 1.0
                if self.count[c] >= self.max_hold:  # recovered: the sums watch it again
                    self.phase[c] = IDLE
        return out

    def describe(self) -> dict[str, int]:
        return {"returns_re_anchored": self.reanchors, "regimes_accepted": self.accepted}
