"""Machines, channels, detector and alert parameters: the ``[sensors.machines.*]`` tables, typed.

Pure Python (no numpy) so that the config loader can validate these tables at
start and name the exact key that is wrong. A machine is one multivariate
unit (its channels are scored together); each channel is one stream (scored
alone by the univariate detectors), with its own overrides::

    [sensors.machines.press-1]
    node = 1                      # serial node id feeding this machine (optional)
    rate_hz = 10                  # expected sample rate: dropout detection, simulator
    learn_rows = 3000             # baseline length (rows) before detection starts
    refit_s = 3600                # refit the detectors on recent normal data (0: never)
    false_alarms_per_day = 1.0    # the budget every detector's threshold is calibrated to
    detectors = ["robust_z", "cusum", "pca", "iforest"]   # + "lstm_ae"
    warning = [1.0, 1.0]          # [score threshold, seconds] per level
    on_delay_s = -1               # Warning on-delay: -1 learned from the baseline, 0 off, > 0 seconds
    [sensors.machines.press-1.channels.bearing_temp]
    unit = "°C"
    min = -40                     # physical range: values outside are rejected as bad input
    max = 200
    limit = 90                    # alarm limit: forecast early Warning, Major when crossed
    z_threshold = 6.0             # per-stream override of a detector parameter
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from itertools import pairwise
from typing import Any

from agent.errors import ConfigError

DETECTORS = ("robust_z", "cusum", "pca", "iforest", "lstm_ae")
LEVELS = ("warning", "minor", "major", "critical")
SOURCES = ("any", "simulator", "serial", "mqtt", "http", "csv")


@dataclass(frozen=True)
class LevelRule:
    level: str
    threshold: float
    duration_s: float


DEFAULT_LEVELS = (
    LevelRule("warning", 1.0, 1.0),
    LevelRule("minor", 2.0, 3.0),
    LevelRule("major", 4.0, 5.0),
    LevelRule("critical", 8.0, 10.0),
)


@dataclass(frozen=True)
class StreamParams:
    """Univariate detector parameters; every one can be overridden per channel."""

    z_window: int = 256  # rolling median/MAD window (samples)
    z_stride: int = 8  # reference statistics recomputed every this many samples
    z_threshold: float = 6.0  # robust z at which the score reaches 1
    noise_threshold: float = 2.0  # rolling MAD / baseline MAD at which the score reaches 1
    cusum_k: float = 0.5  # CUSUM allowance in long-run sigmas (textbook: half the smallest shift to find)
    ewma_lambda: float = 0.1  # EWMA weight: an effective window of about 2/lambda samples
    stuck_s: float = 3.0  # a value frozen this long scores 1
    dropout_s: float = 2.0  # no valid value for this long scores 1


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    unit: str = ""
    label: str = ""
    valid_min: float = -math.inf
    valid_max: float = math.inf
    limit: float | None = None
    params: StreamParams = field(default_factory=StreamParams)

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ")


@dataclass(frozen=True)
class MachineSpec:
    name: str
    channels: tuple[ChannelSpec, ...]
    source: str = "any"
    node: int | None = None
    rate_hz: float = 10.0
    learn_rows: int = 3000
    refit_s: float = 0.0
    false_alarms_per_day: float = 1.0
    detectors: tuple[str, ...] = ("cusum", "pca", "iforest")
    weights: Mapping[str, float] = field(default_factory=dict)
    levels: tuple[LevelRule, ...] = DEFAULT_LEVELS
    clear_ratio: float = 0.5
    clear_s: float = 5.0
    escalate_after_s: float = 0.0  # 0: a level reflects severity, not age (ISA-18.2); > 0 escalates by time
    on_delay_s: float = -1.0  # Warning on-delay: -1 one correlation time of the held-out score; 0 off
    forecast_horizon_s: float = 1800.0
    pca_variance: float = 0.9
    iforest_trees: int = 100
    iforest_sample: int = 256
    ae_window: int = 16
    ae_hidden: int = 8
    ae_epochs: int = 40
    seed: int = 0

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)

    def index(self, channel: str) -> int | None:
        for i, c in enumerate(self.channels):
            if c.name == channel:
                return i
        return None


_STREAM_KEYS = {f.name for f in fields(StreamParams)}
_CHANNEL_KEYS = {"unit", "label", "min", "max", "limit"} | _STREAM_KEYS
_MACHINE_SCALARS = {
    "source": str,
    "node": int,
    "rate_hz": float,
    "learn_rows": int,
    "refit_s": float,
    "false_alarms_per_day": float,
    "clear_ratio": float,
    "clear_s": float,
    "escalate_after_s": float,
    "on_delay_s": float,
    "forecast_horizon_s": float,
    "pca_variance": float,
    "iforest_trees": int,
    "iforest_sample": int,
    "ae_window": int,
    "ae_hidden": int,
    "ae_epochs": int,
    "seed": int,
}
_BOUNDS: dict[str, tuple[float, float]] = {
    "rate_hz": (0.001, 100_000),
    "learn_rows": (32, 10_000_000),
    "refit_s": (0, 10 * 365 * 86400),
    "false_alarms_per_day": (0.0001, 10_000),
    "clear_ratio": (0.01, 1.0),
    "clear_s": (0, 86400),
    "escalate_after_s": (0, 30 * 86400),
    "on_delay_s": (-1, 86400),
    "forecast_horizon_s": (0, 30 * 86400),
    "pca_variance": (0.1, 0.999),
    "iforest_trees": (1, 1000),
    "iforest_sample": (16, 100_000),
    "ae_window": (2, 512),
    "ae_hidden": (1, 256),
    "ae_epochs": (1, 10_000),
    "node": (0, 65535),
    "z_window": (8, 100_000),
    "z_stride": (1, 10_000),
    "z_threshold": (0.5, 1000),
    "noise_threshold": (1.01, 1000),
    "cusum_k": (0, 100),
    "ewma_lambda": (0.0001, 1),
    "stuck_s": (0.001, 86400),
    "dropout_s": (0.001, 86400),
}


def _num(value: Any, kind: type, where: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    key = where.rsplit(".", 1)[-1]
    if key in _BOUNDS:
        lo, hi = _BOUNDS[key]
        if not lo <= value <= hi:
            raise ConfigError(f"{where}: expected a value between {lo:g} and {hi:g}, got {value!r}")
    return kind(value)


def _stream_params(raw: Mapping[str, Any], base: StreamParams, where: str) -> StreamParams:
    updates = {}
    for key in _STREAM_KEYS & set(raw):
        kind = type(getattr(base, key))
        updates[key] = _num(raw[key], kind, f"{where}.{key}")
    return replace(base, **updates)


def _channel(name: str, raw: Any, base: StreamParams, where: str) -> ChannelSpec:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table of channel settings, got {raw!r}")
    unknown = sorted(set(raw) - _CHANNEL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_CHANNEL_KEYS))}")
    lo = _num(raw["min"], float, f"{where}.min") if "min" in raw else -math.inf
    hi = _num(raw["max"], float, f"{where}.max") if "max" in raw else math.inf
    if lo >= hi:
        raise ConfigError(f"{where}: min ({lo:g}) must be below max ({hi:g})")
    for key in ("unit", "label"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{where}.{key}: expected a string, got {raw[key]!r}")
    return ChannelSpec(
        name=name,
        unit=raw.get("unit", ""),
        label=raw.get("label", ""),
        valid_min=lo,
        valid_max=hi,
        limit=_num(raw["limit"], float, f"{where}.limit") if "limit" in raw else None,
        params=_stream_params(raw, base, where),
    )


def _check_name(name: Any, what: str, where: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ConfigError(f"{where}: {what} names are 1 to 64 characters, got {name!r}")
    if not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"{where}: {what} name {name!r} may hold only letters, digits, '-', '_' and '.'")
    return name


def parse_machine(name: str, raw: Any, where: str = "sensors.machines") -> MachineSpec:
    """One machine table; ConfigError names the offending key."""
    where = f"{where}.{_check_name(name, 'machine', where)}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table, got {raw!r}")
    known = set(_MACHINE_SCALARS) | set(LEVELS) | {"channels", "detectors", "weights"} | _STREAM_KEYS
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
    base = _stream_params(raw, StreamParams(), where)
    chans_raw = raw.get("channels")
    if isinstance(chans_raw, (list, tuple)):
        chans_raw = {c: {} for c in chans_raw}
    if not isinstance(chans_raw, Mapping) or not chans_raw:
        raise ConfigError(f"{where}.channels: expected a non-empty table (or list) of channels")
    channels = tuple(
        _channel(_check_name(c, "channel", f"{where}.channels"), v, base, f"{where}.channels.{c}")
        for c, v in chans_raw.items()
    )
    values: dict[str, Any] = {}
    for key, kind in _MACHINE_SCALARS.items():
        if key not in raw:
            continue
        if kind is str:
            if raw[key] not in SOURCES:
                raise ConfigError(f"{where}.{key}: expected one of {', '.join(SOURCES)}, got {raw[key]!r}")
            values[key] = raw[key]
        else:
            values[key] = _num(raw[key], kind, f"{where}.{key}")
    if "detectors" in raw:
        dets = raw["detectors"]
        if not isinstance(dets, (list, tuple)) or not all(d in DETECTORS for d in dets):
            raise ConfigError(
                f"{where}.detectors: expected a list drawn from {', '.join(DETECTORS)}, got {dets!r}"
            )
        values["detectors"] = tuple(dets)
    if "weights" in raw:
        w = raw["weights"]
        if not isinstance(w, Mapping) or not all(k in DETECTORS for k in w):
            raise ConfigError(f"{where}.weights: expected a table keyed by detector name, got {w!r}")
        values["weights"] = {k: _num(v, float, f"{where}.weights.{k}") for k, v in w.items()}
    levels = []
    for rule in DEFAULT_LEVELS:
        if rule.level in raw:
            pair = raw[rule.level]
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ConfigError(f"{where}.{rule.level}: expected [score threshold, seconds], got {pair!r}")
            thr = _num(pair[0], float, f"{where}.{rule.level}[0]")
            dur = _num(pair[1], float, f"{where}.{rule.level}[1]")
            if thr <= 0 or dur < 0:
                raise ConfigError(f"{where}.{rule.level}: threshold must be > 0 and seconds >= 0")
            rule = LevelRule(rule.level, thr, dur)
        levels.append(rule)
    if any(b.threshold < a.threshold for a, b in pairwise(levels)):
        raise ConfigError(f"{where}: level thresholds must not decrease from warning to critical")
    return MachineSpec(name=name, channels=channels, levels=tuple(levels), **values)


def parse_machines(raw: Mapping[str, Any]) -> tuple[MachineSpec, ...]:
    machines = tuple(parse_machine(name, value) for name, value in raw.items())
    nodes = [m.node for m in machines if m.node is not None]
    if len(nodes) != len(set(nodes)):
        raise ConfigError("sensors.machines: two machines name the same serial node id")
    return machines


def check_machines(raw: Any) -> str | None:
    """The config loader's validator: None when valid, else the problem."""
    try:
        parse_machines(raw)
    except ConfigError as exc:
        return str(exc)
    return None


def sample_machines() -> dict[str, Any]:
    """The embedded default: one simulated press with four correlated channels."""
    return {
        "press-1": {
            "source": "simulator",
            "node": 1,
            "rate_hz": 10.0,
            "learn_rows": 3000,
            "refit_s": 0.0,
            "channels": {
                "vibration": {"unit": "mm/s", "min": 0.0, "max": 100.0, "label": "vibration"},
                "current": {"unit": "A", "min": 0.0, "max": 200.0, "label": "motor current"},
                "bearing_temp": {
                    "unit": "°C",
                    "min": -40.0,
                    "max": 200.0,
                    "limit": 90.0,
                    "label": "bearing temperature",
                },
                "pressure": {"unit": "bar", "min": 0.0, "max": 25.0, "label": "hydraulic pressure"},
            },
        }
    }


def machine_from_columns(
    name: str, columns: list[str], *, learn_rows: int, rate_hz: float = 1.0, **overrides: Any
) -> MachineSpec:
    """A machine for a CSV replay: every numeric column a channel, defaults elsewhere."""
    channels = tuple(ChannelSpec(name=c) for c in columns)
    return MachineSpec(
        name=name, channels=channels, source="csv", learn_rows=learn_rows, rate_hz=rate_hz, **overrides
    )
