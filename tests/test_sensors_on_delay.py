"""The alarm on-delay (ISA-18.2) derived from the baseline: a Warning waits one correlation time of the
held-out score; stronger evidence (Minor and up) opens without waiting. Real engine and policy."""

from __future__ import annotations

import numpy as np
import pytest

from agent.errors import ConfigError
from agent.sensors.alerts import AlertPolicy, bind
from agent.sensors.calibrate import correlation_time
from agent.sensors.engine import Scores
from agent.sensors.replay import OfflineRunner
from agent.sensors.spec import machine_from_columns, parse_machine


def test_correlation_time_of_white_noise_and_of_an_ewma() -> None:
    rng = np.random.default_rng(2)
    e = rng.normal(size=20_000)
    assert 0.8 < correlation_time(e) < 1.3
    lam = 0.1
    ewma = np.empty_like(e)
    ewma[0] = e[0]
    for i in range(1, len(e)):
        ewma[i] = ewma[i - 1] + lam * (e[i] - ewma[i - 1])
    assert 0.75 * (2 - lam) / lam < correlation_time(ewma) < 1.25 * (2 - lam) / lam
    assert correlation_time(np.ones(50)) == 1.0  # a constant score: no memory to wait for


def _scores(ts: np.ndarray, combined: np.ndarray, channels: int) -> Scores:
    n = len(ts)
    zero = np.zeros((n, channels))
    return Scores(ts, zero + 1.0, combined, {"cusum": combined}, zero, zero, zero, zero, zero)


def test_a_warning_waits_one_correlation_time_and_stronger_evidence_does_not() -> None:
    rng = np.random.default_rng(8)
    n, rate = 1200, 1.0
    e = rng.normal(size=(n, 3))
    x = np.empty_like(e)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = 0.8 * x[i - 1] + e[i]
    ts = 1.7e9 + np.arange(n) / rate
    spec = machine_from_columns("m", ["a", "b", "c"], learn_rows=400, rate_hz=rate)
    runner = OfflineRunner(spec)
    runner.run(ts, 20.0 + x, batch=64)
    engine = runner.engine
    delay = engine.on_delay_s
    assert delay > 1.0  # the CUSUM/EWMA sums remember: the score has a memory of several samples
    cal = engine.status()["calibration"]
    assert (
        cal["on_delay_s"] == round(delay, 3) and cal["on_delay_source"] == "held-out score's correlation time"
    )

    def first_open(level: float, seconds: float) -> tuple[str, float] | None:
        policy = AlertPolicy(spec)
        bind(policy, engine)
        t = 1.8e9 + np.arange(int(seconds) + 120) / rate
        score = np.where(np.arange(len(t)) < seconds * rate, level, 0.0)
        for k in range(0, len(t), 7):  # micro-batches, as the service feeds them
            for tr in policy.update(_scores(t[k : k + 7], score[k : k + 7], 3)):
                if tr.kind == "opened":
                    return tr.snapshot["level"], float(tr.snapshot["updated_at"] - t[0])
        return None

    assert first_open(1.5, delay - 2.0) is None  # a fluctuation shorter than the score's memory
    opened = first_open(1.5, delay + 30.0)
    assert opened is not None and opened[0] == "warning" and opened[1] >= delay - 1.0
    strong = first_open(3.0, 10.0)  # beyond the budget: Minor after its own 3 s, no on-delay
    assert strong is not None and strong[0] == "minor" and strong[1] <= 4.0


def test_the_on_delay_is_a_machine_setting_learned_by_default() -> None:
    assert parse_machine("m", {"channels": ["a"]}).on_delay_s == -1.0  # learned from the baseline
    assert parse_machine("m", {"channels": ["a"], "on_delay_s": 0}).on_delay_s == 0.0
    with pytest.raises(ConfigError, match="on_delay_s"):
        parse_machine("m", {"channels": ["a"], "on_delay_s": -2})
    rng = np.random.default_rng(3)
    ts, X = 1.7e9 + np.arange(800.0), 5.0 + rng.normal(size=(800, 2))
    for setting, expect in ((0.0, 0.0), (12.5, 12.5)):
        spec = machine_from_columns("m", ["a", "b"], learn_rows=400, rate_hz=1.0, on_delay_s=setting)
        runner = OfflineRunner(spec)
        runner.run(ts, X, batch=64)
        assert runner.engine.on_delay_s == expect
        assert runner.engine.status()["calibration"]["on_delay_source"] == "configured"
        assert runner.policy.anomaly_rules[0].duration_s == max(spec.levels[0].duration_s, expect)


def test_correlation_time_of_a_short_record_is_not_biased_low() -> None:
    # the engine measures it on ~120 held-out rows: around the record's own mean every autocorrelation
    # reads about tau / n too low, so an AR(1) with tau = 19 read ~13 before the correction
    rng = np.random.default_rng(5)
    phi, n = 0.9, 120
    tau = (1 + phi) / (1 - phi)
    estimates = []
    for _ in range(200):
        e = rng.normal(size=n + 200)
        x = np.empty_like(e)
        x[0] = e[0]
        for i in range(1, len(e)):
            x[i] = phi * x[i - 1] + e[i]
        estimates.append(correlation_time(x[200:]))
    assert 0.8 * tau < float(np.median(estimates)) < 1.2 * tau
    assert max(estimates) <= n  # a memory longer than the record is not claimed
