"""The false-alarm budget: thresholds calibrated on held-out baseline rows keep a stationary stream's
alerts within the budget; quantized, held channels are not "stuck"; nothing alerts during the baseline;
thresholds and their source are visible. Same engine and policy as the daemon."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.sensors.calibrate import TailCalibrator, long_run_sigma, per_sample_budget, siegmund_h
from agent.sensors.replay import OfflineRunner
from agent.sensors.spec import machine_from_columns


def stationary(
    n: int, channels: int, rate: float, seed: int, phi: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """Correlated channels, each an AR(1): a stationary stream with no fault at all."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(channels, channels)) * 0.3 + np.eye(channels)
    e = rng.normal(size=(n, channels)) @ mix.T
    x = np.empty_like(e)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return 1.7e9 + np.arange(n) / rate, 10.0 + x


def opened(spec, ts, X) -> list[dict]:  # type: ignore[no-untyped-def]
    runner = OfflineRunner(spec)
    runner.run(ts, X, batch=64)
    return [t.snapshot for t in runner.result.transitions if t.kind == "opened"]


@pytest.mark.parametrize(
    ("rate", "channels", "hours", "per_day"),
    [(1.0, 2, 24.0, 24.0), (1.0, 6, 24.0, 24.0), (10.0, 3, 6.0, 48.0), (1.0, 4, 48.0, 1.0)],
)
def test_stationary_stream_stays_within_the_false_alarm_budget(rate, channels, hours, per_day) -> None:  # type: ignore[no-untyped-def]
    ts, X = stationary(int(hours * 3600 * rate), channels, rate, seed=channels * 7 + int(rate))
    names = [f"c{i}" for i in range(channels)]
    spec = machine_from_columns(
        "m", names, learn_rows=int(600 * rate), rate_hz=rate, false_alarms_per_day=per_day
    )
    alerts = opened(spec, ts, X)
    budget = per_day * hours / 24.0
    assert len(alerts) <= max(budget, 1.0), f"{len(alerts)} alerts over a budget of {budget:g}"


def test_the_budget_is_what_sets_the_thresholds() -> None:
    """A budget 10,000 times larger must raise alerts on the same normal stream (the knob is live)."""
    ts, X = stationary(24 * 3600, 4, 1.0, seed=11)
    names = ["a", "b", "c", "d"]
    strict = machine_from_columns("m", names, learn_rows=600, rate_hz=1.0, false_alarms_per_day=1.0)
    loose = machine_from_columns("m", names, learn_rows=600, rate_hz=1.0, false_alarms_per_day=10_000.0)
    n_strict, n_loose = len(opened(strict, ts, X)), len(opened(loose, ts, X))
    assert n_strict <= 1 < n_loose, (n_strict, n_loose)


def test_quantized_channel_holding_values_is_not_stuck() -> None:
    """A channel quantized to 1 unit that holds each value for up to 20 samples in the baseline."""
    rng = np.random.default_rng(5)
    n = 3 * 3600
    runs = rng.integers(1, 21, size=n)  # hold lengths 1..20 samples
    held = np.repeat(np.round(100 + np.cumsum(rng.normal(0, 0.3, size=len(runs)))), runs)[:n]
    held = 100 + (held - 100) % 7  # bounded: a flow meter stepping between a few units
    other = rng.normal(50, 1, size=n)
    ts = 1.7e9 + np.arange(n, dtype=float)
    spec = machine_from_columns("m", ["flow", "temp"], learn_rows=600, rate_hz=1.0)
    runner = OfflineRunner(spec)
    runner.run(ts, np.column_stack([held, other]), batch=64)
    stuck = [t.snapshot for t in runner.result.transitions if t.snapshot["condition"].startswith("stuck:")]
    assert stuck == [], [a["hint"] for a in stuck]
    info = runner.engine.status()["channels"][0]
    assert info["longest_baseline_run"] >= 15 and info["stuck_after_s"] >= 3 * info["longest_baseline_run"]
    assert info["resolution"] == 1.0
    # and a real freeze (far longer than any baseline run) is still called stuck
    frozen = np.column_stack([held, other])
    frozen[2000:2400, 0] = frozen[2000, 0]
    runner = OfflineRunner(spec)
    runner.run(ts, frozen, batch=64)
    assert any(t.snapshot["condition"] == "stuck:flow" for t in runner.result.transitions)


def test_nothing_alerts_during_the_baseline() -> None:
    """Even wild rows while learning (a stuck value, a missing channel, a spike) raise nothing."""
    ts, X = stationary(2000, 3, 1.0, seed=3)
    X[50:120, 0] = X[50, 0]  # stuck
    X[200:260, 1] = np.nan  # dropout
    X[300, 2] = 1e4  # spike
    spec = machine_from_columns("m", ["a", "b", "c"], learn_rows=400, rate_hz=1.0)
    runner = OfflineRunner(spec)
    runner.run(ts, X, batch=64)
    learned_at = ts[0] + 400
    early = [t.snapshot for t in runner.result.transitions if t.snapshot["updated_at"] < learned_at]
    assert early == []


def test_thresholds_and_their_source_are_visible() -> None:
    ts, X = stationary(1500, 3, 1.0, seed=4)
    spec = machine_from_columns("m", ["a", "b", "c"], learn_rows=500, rate_hz=1.0, false_alarms_per_day=2.0)
    runner = OfflineRunner(spec)
    runner.run(ts, X, batch=64)
    status = runner.engine.status()
    assert status["false_alarms_per_day"] == 2.0
    cal = status["calibration"]
    assert cal["fit_rows"] + cal["held_out_rows"] == 500 and cal["held_out_rows"] >= 100
    assert set(status["thresholds"]) == set(spec.detectors)
    for rows in status["thresholds"].values():
        for row in rows:
            assert row["threshold"] > 0 and 0 < row["p_per_sample"] < 1e-3 and row["source"]
    assert {c["name"] for c in status["channels"]} == {"a", "b", "c"}
    assert all("stuck_after_s" in c and "model" in c for c in status["channels"])


def test_tail_calibrator_matches_an_exponential_tail() -> None:
    """On exponential data the calibrated threshold sits near the true quantile (on the safe side)."""
    rng = np.random.default_rng(0)
    raw = rng.exponential(2.0, size=5000)
    p = 1e-4
    cal = TailCalibrator().fit(raw, p)
    true = -2.0 * math.log(p)  # P(X > x) = exp(-x / 2)
    assert true <= cal.threshold <= 1.3 * true
    assert abs(float(cal(np.array([cal.threshold]))[0]) - 1.0) < 1e-9


def test_run_length_and_long_run_variance_helpers() -> None:
    # Siegmund: k = 0.5 and ARL 1e4 (two-sided) gives h near the textbook ~ 7.2 for one-sided ARL 2e4
    h = siegmund_h(0.5, 1e4)
    assert 6.5 < h < 8.5
    assert siegmund_h(0.5, 1e6) > h  # a smaller budget, a wider limit
    # batch means see the wander of an AR(1): long-run sigma = sigma / (1 - phi) for the innovations
    rng = np.random.default_rng(1)
    e = rng.normal(size=40_000)
    x = np.empty_like(e)
    x[0] = e[0]
    for i in range(1, len(e)):
        x[i] = 0.8 * x[i - 1] + e[i]
    lrs = long_run_sigma(x)
    assert 0.9 * 5.0 < lrs < 1.3 * 5.0
    assert per_sample_budget(1.0, 1.0, 4) == pytest.approx(1 / 86400 / 4)


def test_sensors_status_prints_each_threshold_and_its_source(capsys) -> None:  # type: ignore[no-untyped-def]
    from agent.cli.sensors_live import print_thresholds

    ts, X = stationary(1500, 3, 1.0, seed=4)
    spec = machine_from_columns("m", ["a", "b", "c"], learn_rows=500, rate_hz=1.0)
    runner = OfflineRunner(spec)
    runner.run(ts, X, batch=64)
    print_thresholds(runner.engine.status())
    out = capsys.readouterr().out
    assert "budget 1 false alarms/day" in out and "350 rows fitted, 150 held out" in out
    for stat in ("CUSUM", "EWMA", "Hotelling T²", "Q (SPE)", "isolation depth"):
        assert stat in out
    assert "run-length theory on held-out variance" in out and "exponential tail of held-out scores" in out
    assert "stuck after" in out and "residual model" in out
    assert "0 excursions re-armed on their return, 0 new regimes accepted" in out


def test_a_drifting_channel_reads_the_same_in_long_batches_as_in_short_ones() -> None:
    """The levels follow a slow drift between micro-batches. Replayed 256 rows at a time (a CSV replay,
    a backlog), a batch must not be judged against a level hundreds of rows stale, and the level's
    step between batches must not read as a one-row spike at each batch boundary."""
    rng = np.random.default_rng(21)
    n = 3 * 3600
    e = rng.normal(size=(n, 3))
    x = np.empty_like(e)
    x[0] = e[0]
    for i in range(1, n):  # persistent channels (a temperature, a vibration RMS), phi 0.97
        x[i] = 0.97 * x[i - 1] + e[i]
    drift = np.linspace(0.0, 1.0, n)[:, None] * np.array([100.0, -75.0, 0.0])  # ~24 and ~18 level sigmas
    ts, X = 1.7e9 + np.arange(n, dtype=float), 50.0 + x + drift
    spec = machine_from_columns("m", ["a", "b", "c"], learn_rows=400, rate_hz=1.0)
    scores = {}
    for batch in (4, 256):
        runner = OfflineRunner(spec, keep_scores=True)
        runner.run(ts, X, batch=batch)
        assert [t.snapshot["hint"] for t in runner.result.transitions if t.kind == "opened"] == []
        scores[batch] = np.concatenate(runner.result.combined)[400:]
    # the same stream, the same judgement, whatever the batching
    assert np.quantile(scores[256], 0.99) < 1.1 * np.quantile(scores[4], 0.99)


def test_real_fault_free_recording_reads_the_same_in_any_batching() -> None:
    """anomaly-free.csv (2.6 h of a real rig, ../shared/data): replayed 8 or 256 rows at a time the
    same alerts open, give or take a marginal one (the levels step between batches, never inside
    one); none is stuck, none opens while learning. At most 4 alerts (5 row by row, as the service
    sees a 1 Hz machine: one more, marginal); 19 before the levels moved their AR state and long
    batches were split. The issue's target is 2."""
    from agent.sensors.evaluate import load
    from agent.sensors.replay import open_spans

    path = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "industrial-rig"
    assert path.is_dir(), f"{path} is missing: CI keeps ../shared beside the checkout"
    rec, _, _ = load(str(path / "anomaly-free.csv"), None, True)
    spec = machine_from_columns("rig", rec.channels, learn_rows=400, rate_hz=rec.rate_hz)
    seen = []
    for batch in (8, 256):
        runner = OfflineRunner(spec)
        runner.run(rec.ts, rec.X, batch=batch)
        spans = open_spans(runner.result.transitions)
        assert not [s for s in spans if s.condition.startswith("stuck:")]
        assert all(s.start >= rec.ts[400] for s in spans)
        seen.append(sorted((s.condition, round(s.start / 60)) for s in spans))
    assert len(seen[0]) <= 4 and len(seen[1]) <= 4, seen
    assert abs(len(seen[0]) - len(seen[1])) <= 1, seen
