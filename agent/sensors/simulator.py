"""A simulated machine with injectable faults, for demos, tests and the labelled benchmark.

The channels are driven by one latent *load* (a 30 s duty cycle plus an AR(1)
wander), so they are correlated the way a motor's current, vibration,
pressure and (lagged, through a thermal time constant) bearing temperature
are; each has its own measurement noise. Faults act on one channel:

- ``spike``: a short burst far above normal (an impact, a transient)
- ``drift``: a slow ramp away from normal (wear, fouling, a heating bearing)
- ``stuck``: the value freezes (a dead sensor, a hung ADC)
- ``noise``: the noise grows steadily (a loose connector, a failing bearing)
- ``decorrelate``: the channel stops following the load (broken coupling):
  every value stays within its normal range, only the relation breaks
- ``dropout``: no valid value (NaN) (a cut cable)

Generation is deterministic for a seed, vectorised in chunks, and labelled:
``generate`` returns which fault (if any) is active on each row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.sensors.spec import MachineSpec

FAULT_KINDS = ("spike", "drift", "stuck", "noise", "decorrelate", "dropout")

# (base, gain on load, noise sigma, thermal time constant s) by channel-name keyword
_PROFILES: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("vib", (3.0, 4.0, 0.25, 0.0)),
    ("current", (30.0, 40.0, 1.5, 0.0)),
    ("temp", (62.0, 16.0, 0.3, 20.0)),
    ("press", (9.0, 8.0, 0.3, 0.0)),
)
_DEFAULT_PROFILE = (10.0, 6.0, 0.4, 0.0)
_LOAD_SD = 0.22  # rough marginal sd of the load process


@dataclass(frozen=True)
class Fault:
    kind: str
    channel: str
    start_s: float  # seconds after the simulation start
    duration_s: float
    #: size in units of the channel's normal spread (spike height, drift end, noise factor)
    magnitude: float = 0.0

    def size(self) -> float:
        return self.magnitude or {"spike": 8.0, "drift": 5.0, "noise": 5.0}.get(self.kind, 0.0)


class MachineSimulator:
    def __init__(
        self,
        spec: MachineSpec,
        *,
        rate_hz: float | None = None,
        seed: int = 0,
        start_ts: float = 1_700_000_000.0,
        faults: Sequence[Fault] = (),
    ) -> None:
        self.spec = spec
        self.rate = rate_hz or spec.rate_hz
        self.rng = np.random.default_rng(seed)
        self.start_ts = start_ts
        self.faults = list(faults)
        channels = []
        for f in self.faults:
            if f.kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {f.kind!r}; known: {', '.join(FAULT_KINDS)}")
            c = spec.index(f.channel)
            if c is None:
                raise ValueError(f"fault on unknown channel {f.channel!r}")
            channels.append(c)
        # as arrays, so a chunk finds the few faults it overlaps in two numpy calls: the live
        # simulator generates a few rows twice a second against a schedule of a thousand faults
        self._fault_channel = np.asarray(channels, dtype=np.int64)
        self._fault_start = np.asarray([f.start_s for f in self.faults], dtype=np.float64)
        self._fault_end = self._fault_start + np.asarray(
            [f.duration_s for f in self.faults], dtype=np.float64
        )
        self.profiles = [self._profile(c.name) for c in spec.channels]
        self.i = 0  # rows generated so far
        self.ar = 0.0
        self.ar2 = 0.0
        self.thermal = [0.5] * len(spec.channels)
        self.thermal2 = [0.5] * len(spec.channels)
        self.frozen: dict[int, float] = {}  # stuck fault index -> the value it holds
        self.last_row: np.ndarray | None = None  # the previous chunk's last row, as generated
        self.phase2 = math.pi  # the decoupled channel follows a load cycle of its own, out of step

    @staticmethod
    def _profile(name: str) -> tuple[float, float, float, float]:
        low = name.lower()
        for key, prof in _PROFILES:
            if key in low:
                return prof
        return _DEFAULT_PROFILE

    def spread(self, c: int) -> float:
        """A channel's normal spread (sd), the unit of fault magnitudes."""
        _, gain, noise, _ = self.profiles[c]
        return math.sqrt((gain * _LOAD_SD) ** 2 + noise**2)

    def _load(self, t: np.ndarray, second: bool) -> np.ndarray:
        """Duty cycle + AR(1) wander; ``second`` is an independent copy (the decorrelated channel)."""
        n = len(t)
        dt = 1.0 / self.rate
        a = math.exp(-dt / 1.5)
        sd = 0.1 * math.sqrt(1 - a * a)
        eps = (self.rng.standard_normal(n) * sd).tolist()
        out = [0.0] * n
        x = self.ar2 if second else self.ar
        for i in range(n):
            x = a * x + eps[i]
            out[i] = x
        if second:
            self.ar2 = x
        else:
            self.ar = x
        phase = self.phase2 if second else 0.0
        return 0.5 + 0.28 * np.sin(2 * math.pi * t / 30.0 + phase) + np.asarray(out)

    def _thermal(self, load: np.ndarray, c: int, tau: float, second: bool) -> np.ndarray:
        a = 1.0 - math.exp(-1.0 / (self.rate * tau))
        state = self.thermal2 if second else self.thermal
        y = state[c]
        out = [0.0] * len(load)
        for i, v in enumerate(load.tolist()):
            y += a * (v - y)
            out[i] = y
        state[c] = y
        return np.asarray(out)

    def generate(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next n rows: timestamps (n,), values (n, C), fault index per row (-1: normal)."""
        idx = np.arange(self.i, self.i + n)
        t_rel = idx / self.rate
        ts = self.start_ts + t_rel
        load = self._load(t_rel, False)
        load2 = self._load(t_rel, True)
        C = len(self.spec.channels)
        X = np.empty((n, C))
        labels = np.full(n, -1, dtype=np.int64)
        noise = self.rng.standard_normal((n, C))
        hits: list[int] = (
            np.flatnonzero((self._fault_start <= t_rel[-1]) & (self._fault_end > t_rel[0])).tolist()
            if n
            else []
        )
        for c, (base, gain, sd, tau) in enumerate(self.profiles):
            drive = self._thermal(load, c, tau, False) if tau else load
            drive2 = self._thermal(load2, c, tau, True) if tau else load2
            X[:, c] = base + gain * drive + sd * noise[:, c]
            for k in hits:
                if self._fault_channel[k] != c:
                    continue
                f = self.faults[k]
                active = (t_rel >= f.start_s) & (t_rel < f.start_s + f.duration_s)
                if not active.any():
                    continue
                labels[active] = k
                into = t_rel[active] - f.start_s
                spread = self.spread(c)
                if f.kind == "spike":
                    X[active, c] += f.size() * spread
                elif f.kind == "drift":
                    X[active, c] += f.size() * spread * into / f.duration_s
                elif f.kind == "noise":
                    # extra noise growing to (size - 1) x the channel's spread at the end
                    extra = (f.size() - 1.0) * spread * into / f.duration_s
                    X[active, c] += extra * noise[active, c]
                elif f.kind == "decorrelate":
                    X[active, c] = base + gain * drive2[active] + sd * noise[active, c]
                elif f.kind == "stuck":
                    # frozen at the value just before it began, held across chunks
                    if k not in self.frozen:
                        first = int(np.flatnonzero(active)[0])
                        before = (
                            X[first - 1, c]
                            if first
                            else (self.last_row[c] if self.last_row is not None else X[0, c])
                        )
                        self.frozen[k] = float(before)
                    X[active, c] = self.frozen[k]
                elif f.kind == "dropout":
                    X[active, c] = np.nan
        for k in [k for k in self.frozen if n and self._fault_end[k] <= t_rel[-1]]:
            del self.frozen[k]  # over: it cannot be active in a later chunk
        if n:
            self.last_row = X[-1].copy()
        self.i += n
        return ts, X, labels


def demo_faults(
    spec: MachineSpec, *, start_s: float, cycle_s: float = 150.0, count: int = 1000
) -> list[Fault]:
    """The default config's schedule: after the baseline, one fault every ``cycle_s``, in turn.

    Each lasts about a third of the cycle, so the dashboard shows alerts raised,
    escalated and cleared, one kind after another. The drift goes to the
    channel with an alarm limit (if any), so the forecast warning shows too.
    """
    names = spec.channel_names
    limited = [c.name for c in spec.channels if c.limit is not None]
    faults = []
    for k in range(count):
        kind = FAULT_KINDS[k % len(FAULT_KINDS)]
        channel = names[k % len(names)]
        duration = {
            "spike": 3.0,
            "drift": 60.0,
            "stuck": 30.0,
            "noise": 50.0,
            "decorrelate": 50.0,
            "dropout": 20.0,
        }[kind]
        magnitude = 0.0
        if kind == "drift" and limited:
            channel = limited[0]
            magnitude = 12.0  # far enough to cross the limit: the forecast warns first
        if kind == "decorrelate":
            channel = names[0]
        faults.append(Fault(kind, channel, start_s + k * cycle_s + cycle_s / 3, duration, magnitude))
    return faults
