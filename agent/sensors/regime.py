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
  one baseline length: its level follows the window row by row (the residual
  models score it against that trailing mean) and its sums stay at rest, so
  the minutes a process takes to settle after a disturbance do not read as a
  fault; leaving the band around where it was re-anchored is a new excursion,
  held and judged as before (its sums start from zero then);
- a level held for as long as the baseline lasted accepts the state the
  channel is in as its regime (a standing alert would otherwise stand
  forever): re-anchored, recovering, and counted (``regimes_accepted``).

A small shift that never left the band (a slow drift, an early fault) is never
excused this way: the CUSUM keeps it until the level has been held a
baseline's length. The price, stated: while a channel recovers, only a
departure beyond its band alerts on it; a second small shift within a
baseline's length of the first waits for the recovery to end. While any
channel is held or recovering the engine scores in steps of the policy's
clearing hold (``clear_s``), so a return re-arms before the alert could clear
anyway, at any sample rate.
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
        self.pos = np.zeros(channels, dtype=int)  # each channel's next slot in the ring
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
        """Some channel is held or recovering: the engine scores in steps of a few seconds then."""
        return bool((self.phase != IDLE).any())

    @property
    def recovering(self) -> np.ndarray:
        """Per channel: recovering (its sums stay at rest; the engine gives them no input)."""
        return np.asarray(self.phase == RECOVERING)

    def trailing_means(self, X: np.ndarray) -> np.ndarray | None:
        """Per row, each recovering channel's window mean (the level it follows), NaN for the others."""
        resting = np.flatnonzero(self.phase == RECOVERING)
        if not resting.size or not len(X):
            return None
        out = np.full(X.shape, np.nan)
        size = len(self.buf)
        for c in resting:
            W, n, pos = int(self.W[c]), int(self.n[c]), int(self.pos[c])
            past = self.buf[(pos - n + np.arange(n)) % size, c]  # the window so far, oldest first
            seq = np.concatenate([past, X[:, c]])
            csum = np.concatenate([[0.0], np.cumsum(seq)])
            end = np.arange(n + 1, len(seq) + 1)  # each new row's end position in seq
            start = np.maximum(end - W, 0)
            out[:, c] = (csum[end] - csum[start]) / (end - start)
        return out

    def update(
        self, X: np.ndarray, held: np.ndarray, level: np.ndarray, sigma: np.ndarray
    ) -> dict[int, float]:
        """Feed rows ``X`` (n, C) with their per-channel ``held`` flags.

        Returns ``{channel: level to re-anchor at}`` for the channels that came back or are
        recovering; the engine moves their levels there and restarts their sums. Channels are
        independent, so each watched one runs its own scalar loop (most are idle, most of the time).
        """
        out: dict[int, float] = {}
        if not len(X):
            return out
        active = (self.phase != IDLE) | held.any(axis=0)
        for c in np.flatnonzero(active):
            v = self._channel(int(c), X[:, c].tolist(), held[:, c].tolist(), float(level[c]), float(sigma[c]))
            if v is not None:
                out[int(c)] = v
        return out

    def _channel(self, c: int, xs: list[float], hs: list[bool], level: float, sigma: float) -> float | None:
        """One channel's state machine over a batch; the level to re-anchor at, if it moved."""
        W, size = int(self.W[c]), len(self.buf)
        band, near, max_hold = float(self.band[c]), float(self.near[c]), self.max_hold
        phase, n, total = int(self.phase[c]), int(self.n[c]), float(self.sum[c])
        side, anchor, count = float(self.side[c]), float(self.anchor[c]), float(self.count[c])
        ring = self.buf[:, c].tolist()
        pos = int(self.pos[c])
        moved: float | None = None
        for x, h in zip(xs, hs, strict=True):
            if phase == IDLE and h:
                phase, n, total, count, side = HELD, 0, 0.0, 0.0, 0.0
            old = ring[(pos - W) % size]  # the mean of the last W readings (fewer just after it began)
            ring[pos] = x
            pos = (pos + 1) % size
            total += x - (old if n >= W else 0.0)
            n = min(n + 1, W)
            mean = total / n
            if phase == HELD:
                if not h and side == 0.0:  # never left the band and normal again: settled on its own
                    phase = IDLE
                    continue
                dev = (mean - level) / sigma
                if side == 0.0 and abs(dev) > band:
                    side = 1.0 if dev > 0 else -1.0
                # back: a full window no further out, in the excursion's direction, than a normal
                # window mean (settling past where it was, on the other side, counts)
                back = side != 0.0 and n >= W and dev * side <= near
                count += 1.0
                if back or count >= max_hold:  # re-anchor where it is, then recover
                    self.reanchors += int(back)
                    self.accepted += int(not back)
                    level = anchor = moved = mean
                    phase, count, side = RECOVERING, 0.0, 0.0
            elif phase == RECOVERING:
                if abs(mean - anchor) / sigma > band:  # a new excursion: held, its sums from zero
                    phase, count = HELD, 0.0
                    side = 1.0 if mean > anchor else -1.0
                    continue
                level = moved = mean  # the level follows it as it settles
                count += 1.0
                if count >= max_hold:  # recovered: the sums watch it again
                    phase = IDLE
        self.buf[:, c] = ring
        self.pos[c] = pos
        self.phase[c], self.n[c], self.sum[c] = phase, n, total
        self.side[c], self.anchor[c], self.count[c] = side, anchor, count
        return moved

    def describe(self) -> dict[str, int]:
        return {"returns_re_anchored": self.reanchors, "regimes_accepted": self.accepted}
