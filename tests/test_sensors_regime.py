"""Re-arming after an excursion (agent/sensors/regime.py): an alert closes when the process is back,
even a little off where it was, and a state that stands as long as the baseline becomes the regime.
Same engine and policy as the daemon."""

from __future__ import annotations

import numpy as np

from agent.sensors.replay import OfflineRunner
from agent.sensors.spec import machine_from_columns

LEARN = 600


def stream(segments: list[tuple[int, float]], seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Three noisy channels; channel 0 sits at the given offsets (in its sigmas) segment by segment."""
    rng = np.random.default_rng(seed)
    n = sum(length for length, _ in segments)
    X = rng.normal(0.0, 1.0, size=(n, 3)) + np.array([50.0, 20.0, 5.0])
    offset = np.concatenate([np.full(length, shift) for length, shift in segments])
    X[:, 0] += offset
    return 1.7e9 + np.arange(n, dtype=float), X


def anomaly_spans(runner: OfflineRunner, t0: float) -> list[tuple[float, float | None]]:
    spans: dict[str, list[float | None]] = {}
    for t in runner.result.transitions:
        s = t.snapshot
        if s["condition"] != "anomaly":
            continue
        if t.kind == "opened":
            spans[s["id"]] = [s["updated_at"] - t0, None]
        elif t.kind == "cleared":
            spans[s["id"]][1] = s["cleared_at"] - t0
    return [(a, b) for a, b in spans.values()]  # type: ignore[misc]


def run(segments: list[tuple[int, float]]) -> tuple[OfflineRunner, list[tuple[float, float | None]]]:
    ts, X = stream(segments)
    spec = machine_from_columns("m", ["a", "b", "c"], learn_rows=LEARN, rate_hz=1.0)
    runner = OfflineRunner(spec)
    runner.run(ts, X, batch=64)
    return runner, anomaly_spans(runner, ts[0])


def test_an_alert_clears_when_the_process_settles_a_little_off_where_it_was() -> None:
    """A fault drops channel a by 8 sigma for 300 s; afterwards a settles 1.5 sigma above where it was
    (a valve reopened): one alert, open through the fault, closed soon after it, none after."""
    fault_start, fault_end = LEARN + 300, LEARN + 600
    runner, spans = run([(fault_start, 0.0), (300, -8.0), (900, 1.5)])
    assert len(spans) == 1, spans
    opened, cleared = spans[0]
    assert fault_start <= opened <= fault_start + 30
    assert cleared is not None and fault_end <= cleared <= fault_end + 60, spans
    assert runner.engine.status()["calibration"]["returns_re_anchored"] >= 1


def test_a_shift_that_never_comes_back_is_not_excused_before_a_baseline_length() -> None:
    """A -8 sigma shift that stays: the alert stands for at least a baseline's length, then the
    new level is accepted as the regime (the alert closes and the acceptance is counted)."""
    start = LEARN + 300
    runner, spans = run([(start, 0.0), (3 * LEARN, -8.0)])
    opened, cleared = spans[0]
    assert start <= opened <= start + 30
    assert cleared is not None and cleared - opened >= LEARN, spans
    assert runner.engine.status()["calibration"]["regimes_accepted"] >= 1


def test_a_small_shift_inside_the_band_keeps_its_alert() -> None:
    """A 1.5 sigma shift never leaves the single-reading band: the CUSUM's alert is not re-armed away
    by a return (nothing returned), so it stays open well past the shift's start."""
    start = LEARN + 300
    runner, spans = run([(start, 0.0), (400, 1.5)])
    assert spans, "a sustained 1.5 sigma shift raised nothing"
    opened, cleared = spans[0]
    assert cleared is None or cleared - opened >= 200, spans
    assert runner.engine.status()["calibration"]["returns_re_anchored"] == 0
