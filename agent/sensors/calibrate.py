"""From a false-alarm budget to thresholds: tail calibration on held-out normal data.

Every detector produces a *raw* score (a CUSUM sum, a Q statistic, an
isolation depth...). Raw scores of different detectors mean different things,
so before the ensemble compares them each is mapped onto one scale:

    score = ln(1 / P(raw)) / ln(1 / p*)

where ``P(raw)`` is the probability that normal data scores at least ``raw``
and ``p*`` is the per-sample exceedance probability the machine's budget
allows this detector (``false_alarms_per_day`` spread over the samples of a day
and over the detectors and channels that share it: a Bonferroni split, so
adding a detector cannot raise the machine's false-alarm rate above the
budget). Score 1 is the alarm threshold; score 2 is a value as improbable as
two independent threshold crossings at once, and so on up the levels.

``P`` is estimated on normal rows the detector did *not* fit on (the last part
of the baseline, held back). A baseline of a few hundred rows cannot show a
one-in-a-million value, so the tail above the held-out 90th percentile is
extrapolated with an exponential (peaks over threshold, the generalised Pareto
with shape 0: Pickands-Balkema-de Haan; the streaming form is Siffer et al.,
"Anomaly detection in streams with extreme value theory", KDD 2017). The
scale is the upper 95 % confidence bound of the mean excess over the
threshold, so a short baseline widens the limits instead of lowering them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SECONDS_PER_DAY = 86400.0
TAIL_QUANTILE = 0.9  # the peaks-over-threshold threshold u (a common choice: 90-98 %)
MIN_EXCESSES = 5  # fewer points above u: fall back to the held-out spread for the scale


def per_sample_budget(false_alarms_per_day: float, rate_hz: float, shares: int) -> float:
    """Exceedance probability per sample for one of ``shares`` tests sharing the machine's budget."""
    samples_per_day = max(rate_hz, 1e-6) * SECONDS_PER_DAY
    p = false_alarms_per_day / samples_per_day / max(shares, 1)
    return float(min(max(p, 1e-15), 0.5))


@dataclass
class TailCalibrator:
    """Raw score -> budget scale (1.0 at the threshold) from an exponential tail fitted on held-out data."""

    p_star: float = 1e-6
    u: float = 0.0  # POT threshold (held-out 90th percentile)
    beta: float = 1.0  # tail scale (mean excess over u)
    p_u: float = 1.0 - TAIL_QUANTILE
    n: int = 0  # held-out samples the tail came from
    held_out_max: float = 0.0

    def fit(self, raw: np.ndarray, p_star: float) -> TailCalibrator:
        raw = np.asarray(raw, dtype=float)
        raw = raw[np.isfinite(raw)]
        self.p_star = p_star
        self.n = int(raw.size)
        if not raw.size:
            self.u, self.beta, self.p_u, self.held_out_max = 0.0, 1.0, 1.0 - TAIL_QUANTILE, 0.0
            return self
        self.u = float(np.quantile(raw, TAIL_QUANTILE))
        excess = raw[raw > self.u] - self.u
        self.p_u = max(excess.size / raw.size, 1.0 / raw.size)
        spread = float(np.quantile(raw, 0.75) - np.quantile(raw, 0.25))
        floor = max(1e-9 * max(abs(self.u), 1.0), 0.05 * spread)
        if excess.size >= MIN_EXCESSES:
            # the upper 95 % confidence bound of the exponential scale (2 m beta_hat / beta is
            # chi-square with 2 m degrees of freedom): a tail seen through a few dozen held-out
            # points is extrapolated on the safe side, not the likely one
            m = int(excess.size)
            self.beta = max(float(excess.mean()) * _chi2_upper_factor(2 * m, 0.95) ** 2, floor)
        else:  # a statistic that is nearly constant on normal data: any clear excess is news
            self.beta = max(float(excess.max()) if excess.size else 0.0, spread, floor, 1e-6)
        self.held_out_max = float(raw.max())
        return self

    @property
    def threshold(self) -> float:
        """The raw value whose estimated exceedance probability is ``p_star`` (score 1)."""
        return self.raw_at(1.0)

    def raw_at(self, score: float) -> float:
        return self.u + self.beta * (score * math.log(1.0 / self.p_star) - math.log(1.0 / self.p_u))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        # -ln P(raw) = ln(1/p_u) + (raw - u)/beta above u; below u the score is small and unused,
        # kept monotone and >= 0 by the same line clipped at 0
        logp = math.log(1.0 / self.p_u) + (np.asarray(raw, dtype=float) - self.u) / self.beta
        return np.maximum(logp, 0.0) / math.log(1.0 / self.p_star)

    def describe(self) -> dict[str, float | int]:
        return {
            "threshold": round(self.threshold, 6),
            "p_per_sample": float(f"{self.p_star:.3g}"),
            "tail_u": round(self.u, 6),
            "tail_scale": round(self.beta, 6),
            "held_out_rows": self.n,
            "held_out_max": round(self.held_out_max, 6),
        }


def holdout_split(n: int) -> int:
    """Rows of a baseline of ``n`` used to fit; the rest (at least 30 %, at least 20 rows) calibrate."""
    hold = max(round(0.3 * n), min(20, n // 2))
    return max(n - hold, 1)


@dataclass
class LinearCalibrator:
    """Raw / threshold, for statistics whose threshold comes from theory rather than a fitted tail.

    Used by CUSUM and EWMA, whose sums remember tens of samples: a held-out
    stretch of a few hundred rows holds too few independent excursions to fit
    their tail, so their limits come from the classical run-length results
    (Siegmund's approximation for CUSUM; the stationary EWMA variance) applied
    to the held-out residuals' *long-run* variance (batch means), which is
    what makes those results hold for autocorrelated signals.
    """

    limit: float = 1.0
    p_star: float = 1e-6
    n: int = 0

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, dtype=float) / self.limit

    @property
    def threshold(self) -> float:
        return self.limit

    def raw_at(self, score: float) -> float:
        return score * self.limit

    def describe(self) -> dict[str, float | int]:
        return {
            "threshold": round(self.limit, 6),
            "p_per_sample": float(f"{self.p_star:.3g}"),
            "held_out_rows": self.n,
        }


def long_run_sigma(x: np.ndarray, confidence: float = 0.95) -> float:
    """Long-run standard deviation of ``x`` (batch means), at the upper end of its confidence interval.

    Batch means of ``b`` samples capture the slow wander that a per-sample
    standard deviation misses. A baseline of a few hundred rows yields only a
    few dozen batches, so the variance estimate itself is uncertain (chi-square
    with m - 1 degrees of freedom); thresholds use its upper ``confidence``
    bound, so a short baseline gives wider limits rather than false alarms.
    """
    x = np.asarray(x, dtype=float)
    n = len(x)
    sd = float(x.std()) if n else 1.0
    b = max(5, round(math.sqrt(n)))
    m = n // b
    if m < 4:
        return sd * _chi2_upper_factor(max(n - 1, 1), confidence)
    means = x[: m * b].reshape(m, b).mean(axis=1)
    est = max(sd, float(math.sqrt(b) * means.std(ddof=1)))
    return est * _chi2_upper_factor(m - 1, confidence)


def _chi2_upper_factor(dof: int, confidence: float) -> float:
    """sqrt(dof / chi2_{1-confidence}(dof)): the upper confidence bound of a sigma over its estimate."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1.0 - confidence)  # lower quantile (negative)
    v = float(dof)
    q = v * (1.0 - 2.0 / (9.0 * v) + z * math.sqrt(2.0 / (9.0 * v))) ** 3  # Wilson-Hilferty
    return math.sqrt(v / max(q, 1e-9))


def siegmund_h(k: float, arl: float) -> float:
    """Two-sided CUSUM decision interval h (in sigmas) with in-control average run length ``arl``."""
    target = 2.0 * arl  # two one-sided charts: ARL2 ~ ARL1 / 2
    k = max(k, 0.05)

    def arl1(h: float) -> float:
        b = 2.0 * k * (h + 1.166)
        return (math.exp(min(b, 700.0)) - b - 1.0) / (2.0 * k * k)

    lo, hi = 0.0, 1.0
    while arl1(hi) < target and hi < 1e6:
        hi *= 2.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if arl1(mid) < target else (lo, mid)
    return hi


def correlation_time(x: np.ndarray) -> float:
    """Integrated autocorrelation time of ``x`` in samples: 1 + 2 sum of its autocorrelations, summed
    up to the first lag where the autocorrelation is no longer positive (the initial positive sequence
    estimator; Geyer 1992). 1 for white noise; (2 - lambda) / lambda for an EWMA of white noise.

    Corrected for the bias of a short record: autocorrelations taken around the record's own mean
    are each too low by about Var(mean) / Var(x) = tau / n (the mean has soaked up that much of every
    lag's covariance), so summed over the M lags of the window the estimate reads tau (1 - 2 M / n)
    instead of tau. On the ~120 held-out rows of a baseline a score that remembers tens of samples
    (a CUSUM's) was read at half its correlation time or less; dividing by (1 - 2 M / n) removes that
    first-order bias (capped at the record's length: a memory longer than the record is not measured).
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)] - (x[np.isfinite(x)].mean() if np.isfinite(x).any() else 0.0)
    v = float((x * x).mean()) if x.size else 0.0
    if v <= 0.0:
        return 1.0
    n = len(x)
    total, window = 0.0, 0
    for k in range(1, n // 2):
        r = float((x[:-k] * x[k:]).mean()) / v
        if r <= 0.0:
            break
        total += r
        window = k
    return min((1.0 + 2.0 * total) / (1.0 - 2.0 * window / n), float(n))


def gauss_upper(p: float) -> float:
    """z with P(|Z| > z) = p for a standard normal Z."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(1.0 - max(min(p, 0.5), 1e-15) / 2.0)
