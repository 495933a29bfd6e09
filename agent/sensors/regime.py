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
  same for a short EWMA of the readings (the channel's own EWMA weight);
- while the level is held, that EWMA follows where the channel actually is;
  the excursion has *left* once it went outside the band, and it is *back*
  once it stayed no further out, in the excursion's direction, than *near*
  for one EWMA memory (``1 / lambda`` samples); settling past where it was,
  on the other side, counts as back;
- a back channel is re-anchored at the mean of those samples and then
  *recovers* for one baseline length: its level follows the EWMA and its
  sums restart at every step, so the few minutes a process takes to settle
  after a disturbance do not read as a fault; leaving the band again during
  recovery is a new excursion, held and judged as before;
- a level held for as long as the baseline lasted accepts the state the
  channel is in as its regime (a standing alert would otherwise stand
  forever): re-anchored, recovering, and counted (``accepted``).

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
        self.near = np.full(channels, 1.0)  # the short EWMA's normal range: "back where it was"
        self.lam = np.full(channels, 0.1)
        self.phase = np.zeros(channels, dtype=int)  # IDLE, HELD or RECOVERING
        self.fast = np.zeros(channels)  # EWMA of the readings while held or recovering
        self.count = np.zeros(channels)  # samples recovering
        self.side = np.zeros(channels)  # the excursion's direction once it left the band (0: it has not)
        self.inside = np.zeros(channels)  # samples back since the excursion ended
        self.total = np.zeros(channels)  # their sum: the level the channel settled at
        self.reanchors = 0  # excursions that came back
        self.max_hold = np.inf  # samples a level may stay held before the new state is accepted
        self.held_for = np.zeros(channels)
        self.accepted = 0  # regimes accepted after standing max_hold

    def fit(self, held_dev: np.ndarray, lam: np.ndarray, max_hold: float = np.inf) -> ReturnWatch:
        """``held_dev``: held-out rows' deviation from the level in level sigmas; ``lam``: EWMA weights;
        ``max_hold``: samples after which a level still held accepts where the channel is."""
        self.max_hold = max_hold
        self.held_for[:] = 0.0
        self.lam = np.clip(np.asarray(lam, dtype=float), 1e-4, 1.0)
        if len(held_dev):
            q = np.quantile(np.abs(held_dev), BAND_QUANTILE, axis=0)
            self.band = np.maximum(np.nan_to_num(q, nan=GAUSS_99), GAUSS_99)
            e = np.zeros_like(held_dev)
            acc = held_dev[0].copy()
            for i, row in enumerate(held_dev):
                acc += self.lam * (row - acc)
                e[i] = acc
            self.near = np.minimum(np.quantile(np.abs(e), BAND_QUANTILE, axis=0), self.band)
        self.phase[:] = IDLE
        self.side[:] = 0.0
        self.inside[:] = 0.0
        self.total[:] = 0.0
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
        settling; the engine moves their levels there and restarts their sums.
        """
        out: dict[int, float] = {}
        if not len(X) or not (held.any() or self.watching):
            return out
        settle = 1.0 / self.lam
        level = level.copy()
        for i in range(len(X)):
            x, h = X[i], held[i]
            start = (self.phase == IDLE) & h
            self.fast = np.where(start, x, self.fast + self.lam * (x - self.fast))
            self.phase = np.where(start, HELD, self.phase)
            # a level held that never left the band and scores normal again settled on its own; one that
            # left it stays watched until it is back (its sums may dip below the limit on the way)
            self.phase = np.where((self.phase == HELD) & ~h & (self.side == 0), IDLE, self.phase)
            dev = (self.fast - level) / sigma
            watch = self.phase == HELD
            left = watch & (self.side == 0) & (np.abs(dev) > self.band)
            self.side = np.where(left, np.sign(dev), np.where(watch, self.side, 0.0))
            # back: no further out, in the excursion's direction, than the EWMA's normal range
            # (crossing to the other side counts: the process settled past where it was)
            back = watch & (self.side != 0) & (dev * self.side <= self.near)
            self.inside = np.where(back, self.inside + 1.0, 0.0)
            self.total = np.where(back, self.total + x, 0.0)
            self.held_for = np.where(self.phase == HELD, self.held_for + 1.0, 0.0)
            standing = np.flatnonzero(self.held_for >= self.max_hold)
            for c in standing:  # held as long as the baseline was: the state it is in is the regime now
                self.total[c], self.inside[c] = self.fast[c], 1.0
                self.accepted += 1
                self.reanchors -= 1  # counted below as a return; it is not one
            for c in np.union1d(np.flatnonzero(self.inside >= settle), standing):  # back: re-anchor, settle
                self.held_for[c] = 0.0
                level[c] = out[int(c)] = float(self.total[c] / self.inside[c])
                self.phase[c], self.count[c] = RECOVERING, 0.0
                self.side[c] = self.inside[c] = self.total[c] = 0.0
                self.reanchors += 1
            settling = self.phase == RECOVERING
            if settling.any():
                for c in np.flatnonzero(settling):
                    if abs(self.fast[c] - level[c]) / sigma[c] > self.band[c]:  # a new excursion
                        self.phase[c], self.side[c] = HELD, np.sign(self.fast[c] - level[c])
                        continue
                    level[c] = out[int(c)] = float(self.fast[c])  # the level follows it as it settles
                    self.count[c] += 1.0
                    if self.count[c] >= self.max_hold:  # recovered: the sums watch it again
                        self.phase[c] = IDLE
        return out

    def describe(self) -> dict[str, int]:
        return {"returns_re_anchored": self.reanchors, "regimes_accepted": self.accepted}
