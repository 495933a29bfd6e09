"""Trend forecasting: when will a channel reach its alarm limit?

Rows are folded into one-second means (so a 1 kHz stream costs the same as a
1 Hz one), and a least-squares line is kept over the last ``window_s`` of
those means with running sums (O(1) per bucket). A forecast is made only when
the slope is significant (t-statistic above ``min_t``), so the ordinary ups and
downs of a load cycle do not predict a crossing; the time to the limit is then
``(limit - level) / slope``. Holt's smoothing is a close cousin; a line over a
fixed window was chosen because its significance test is exact and cheap.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Forecast:
    level: float
    slope_per_s: float
    eta_s: float | None  # seconds until the limit, None when not heading there
    crossed: bool


class TrendForecaster:
    def __init__(
        self, limit: float, *, window_s: float = 300.0, bucket_s: float = 1.0, min_t: float = 6.0
    ) -> None:
        self.limit = limit
        self.bucket_s = bucket_s
        self.window = max(8, int(window_s / bucket_s))
        self.min_t = min_t
        # a line through less than two minutes of a machine's ups and downs predicts nothing
        self.min_points = min(self.window, max(8, int(120.0 / bucket_s)))
        self.points: deque[tuple[float, float]] = deque()
        self._bucket: int | None = None
        self._sum = 0.0
        self._n = 0
        self.sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # n, t, y, tt, ty (t relative to t0)
        self.t0: float | None = None
        self.last: Forecast | None = None

    def add(self, ts: float, value: float) -> Forecast | None:
        """Feed one valid value; returns a new forecast when a bucket closed, else None."""
        b = int(ts // self.bucket_s)
        out = None
        if self._bucket is not None and b != self._bucket and self._n:
            out = self._close((self._bucket + 0.5) * self.bucket_s, self._sum / self._n)
            self._sum, self._n = 0.0, 0
        self._bucket = b
        self._sum += value
        self._n += 1
        return out

    def _close(self, t: float, y: float) -> Forecast:
        if self.t0 is None:
            self.t0 = t
        t -= self.t0
        s = self.sums
        self.points.append((t, y))
        s[0] += 1
        s[1] += t
        s[2] += y
        s[3] += t * t
        s[4] += t * y
        if len(self.points) > self.window:
            ot, oy = self.points.popleft()
            s[0] -= 1
            s[1] -= ot
            s[2] -= oy
            s[3] -= ot * ot
            s[4] -= ot * oy
        self.last = self._estimate(t, y)
        return self.last

    def _estimate(self, t_now: float, y_now: float) -> Forecast:
        n, st, sy, stt, sty = self.sums
        crossed = y_now >= self.limit
        if n < self.min_points:
            return Forecast(y_now, 0.0, None, crossed)
        var_t = stt - st * st / n
        if var_t <= 0:
            return Forecast(y_now, 0.0, None, crossed)
        slope = (sty - st * sy / n) / var_t
        intercept = (sy - slope * st) / n
        level = intercept + slope * t_now
        # residual variance from the sums would lose precision; use the points (window <= a few hundred)
        rss = sum((y - intercept - slope * t) ** 2 for t, y in self.points)
        se = math.sqrt(rss / max(n - 2, 1) / var_t) if rss > 0 else 0.0
        significant = slope > 0 and (se == 0.0 or slope / se >= self.min_t)
        eta = None
        if significant and level < self.limit:
            eta = (self.limit - level) / slope
        return Forecast(level, slope, eta, crossed)


class LimitWatch:
    """Per channel with an alarm limit: 4 once crossed, 1..2 while a forecast crossing is within
    ``horizon_s`` (2 when it is imminent), 0 otherwise; held between forecasts."""

    def __init__(self, limits: Sequence[float | None], horizon_s: float) -> None:
        self.forecasters = {i: TrendForecaster(v) for i, v in enumerate(limits) if v is not None}
        self.state = np.zeros(len(limits))
        self.horizon = horizon_s

    def score(self, ts: np.ndarray, X: np.ndarray) -> np.ndarray:
        out = np.zeros(X.shape)
        tl = ts.tolist()
        for c, fc in self.forecasters.items():
            state = float(self.state[c])
            res = [0.0] * len(tl)
            for i, v in enumerate(X[:, c].tolist()):
                if v == v:
                    f = fc.add(tl[i], v)
                    if f is not None:
                        if f.crossed:
                            state = 4.0
                        elif f.eta_s is not None and f.eta_s <= self.horizon:
                            state = 1.0 + max(0.0, 1.0 - f.eta_s / self.horizon)
                        else:
                            state = 0.0
                res[i] = state
            self.state[c] = state
            out[:, c] = res
        return out

    def forecasts(self) -> dict[int, Forecast]:
        return {c: f.last for c, f in self.forecasters.items() if f.last is not None}


def describe_eta(seconds: float) -> str:
    """'about 12 min', 'about 40 s', 'about 2.5 h'."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 5400:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
