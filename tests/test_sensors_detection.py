"""Labelled synthetic data: each fault kind is detected at its expected level within a stated delay,
and the no-fault stream raises nothing over a long run. Same engine and policy as the daemon."""

from __future__ import annotations

import numpy as np
import pytest

from agent.sensors.replay import OfflineRunner
from agent.sensors.simulator import Fault, MachineSimulator
from agent.sensors.spec import LEVELS, parse_machines, sample_machines

SPEC = parse_machines(sample_machines())[0]
RATE = SPEC.rate_hz
LEARN_S = SPEC.learn_rows / RATE
RANK = {lv: i for i, lv in enumerate(LEVELS)}

# fault, channel, duration s, condition, (level, within s of the fault start), ...
EXPECTED = [
    ("spike", "vibration", 2.0, "anomaly", [("warning", 1.5)]),
    # Minor, not Major (before the budget calibration: Major within 240 s): see the issue 11 note
    ("drift", "bearing_temp", 300.0, "anomaly", [("warning", 150.0), ("minor", 240.0)]),
    ("stuck", "pressure", 60.0, "stuck:pressure", [("warning", 5.0), ("major", 20.0)]),
    ("noise", "vibration", 120.0, "anomaly", [("warning", 110.0)]),
    # Minor within 75 s (was 45 s): since the EWMA's score stops at 1.5 (issue 11, round 2 session 5),
    # Minor comes from PCA T²/Q; seeds 3-7 reach it in 7-11 s, seed 2 only at 67 s
    ("decorrelate", "current", 120.0, "anomaly", [("warning", 20.0), ("minor", 75.0)]),
    ("dropout", "current", 30.0, "dropout:current", [("warning", 4.0), ("major", 15.0)]),
]


def run_fault(kind: str, channel: str, duration: float, seed: int) -> tuple[Fault, np.ndarray, OfflineRunner]:
    fault = Fault(kind, channel, LEARN_S + 60.0, duration)
    sim = MachineSimulator(SPEC, seed=seed, faults=[fault])
    ts, X, _ = sim.generate(int((LEARN_S + 60 + duration + 90) * RATE))
    runner = OfflineRunner(SPEC)
    runner.run(ts, X, batch=10)
    return fault, ts, runner


@pytest.mark.parametrize("seed", [2, 3])
@pytest.mark.parametrize(("kind", "channel", "duration", "condition", "levels"), EXPECTED)
def test_fault_detected_at_level_within_delay(kind, channel, duration, condition, levels, seed) -> None:  # type: ignore[no-untyped-def]
    fault, ts, runner = run_fault(kind, channel, duration, seed)
    start = ts[0] + fault.start_s
    trans = runner.result.transitions
    assert not [t for t in trans if t.snapshot["updated_at"] < start], "an alert before the fault began"
    for level, within in levels:
        hits = [
            t.snapshot["updated_at"] - start
            for t in trans
            if t.snapshot["condition"] == condition and RANK[t.snapshot["level"]] >= RANK[level]
        ]
        assert hits, (
            f"{kind}: no {condition} alert at {level} or above: {[t.snapshot['title'] for t in trans]}"
        )
        assert hits[0] <= within, f"{kind}: {level} after {hits[0]:.1f} s, expected within {within} s"
    # and it clears once the fault is over (auto-clear)
    assert not runner.policy.open_alerts, [a.title for a in runner.policy.open_alerts]


def test_one_batch_across_the_end_of_the_baseline_is_scored_after_the_fit() -> None:
    # a backlog (an upload after an outage) arrives as one batch: baseline, then a spike. The rows after
    # the baseline are scored against it, exactly as if they had come one by one; none is learned
    fault = Fault("spike", "pressure", LEARN_S + 60.0, 3.0)
    ts, X, _ = MachineSimulator(SPEC, seed=2, faults=[fault]).generate(int((LEARN_S + 90) * RATE))
    X[SPEC.learn_rows - 5 : SPEC.learn_rows + 5, 0] = np.nan  # missing values around the split
    whole, small = OfflineRunner(SPEC), OfflineRunner(SPEC)
    whole.run(ts, X, batch=len(ts))
    small.run(ts, X, batch=1)
    assert whole.result.scored_rows == small.result.scored_rows == len(ts) - SPEC.learn_rows
    assert np.array_equal(whole.engine.center, small.engine.center)
    opened = [(t.kind, t.snapshot["condition"], t.snapshot["opened_at"]) for t in whole.result.transitions]
    assert opened == [
        (t.kind, t.snapshot["condition"], t.snapshot["opened_at"]) for t in small.result.transitions
    ]
    assert ("opened", "anomaly") in [o[:2] for o in opened]


def test_live_simulator_holds_a_stuck_value_across_chunks() -> None:
    # the daemon's simulator source generates a few rows per tick: a stuck sensor must stay stuck
    # at one value for the whole fault, as it does when the stream is generated at once
    faults = [Fault("drift", "pressure", 5.0, 10.0), Fault("stuck", "pressure", 20.0, 30.0)]
    sim = MachineSimulator(SPEC, seed=1, faults=faults)
    parts = [sim.generate(5) for _ in range(120)]
    X = np.concatenate([p[1] for p in parts])
    labels = np.concatenate([p[2] for p in parts])
    held = X[labels == 1, SPEC.index("pressure")]
    assert len(held) == 300 and len(np.unique(held)) == 1
    assert held[0] == X[np.flatnonzero(labels == 1)[0] - 1, SPEC.index("pressure")]
    assert len(np.unique(X[labels == -1, SPEC.index("pressure")][-50:])) == 50, "released afterwards"


def test_root_cause_hint_names_the_faulty_channel() -> None:
    _, _, runner = run_fault("spike", "pressure", 2.0, 5)
    opened = [
        t for t in runner.result.transitions if t.kind == "opened" and t.snapshot["condition"] == "anomaly"
    ]
    top = opened[0].snapshot["channels"][0]
    assert top["channel"] == "pressure" and top["deviation"] > 4
    assert "pressure" in opened[0].snapshot["hint"]


def test_no_fault_stream_raises_no_alert_over_two_hours() -> None:
    # one fixed seed; the false-alarm rate over many seeds is a benchmark figure (bench_sensors)
    sim = MachineSimulator(SPEC, seed=9)
    ts, X, _ = sim.generate(int((LEARN_S + 2 * 3600) * RATE))
    runner = OfflineRunner(SPEC)
    runner.run(ts, X, batch=200)
    assert runner.result.scored_rows >= 2 * 3600 * RATE - 200
    assert runner.result.transitions == [], [t.snapshot["title"] for t in runner.result.transitions]


def test_forecast_raises_an_early_warning_before_the_limit() -> None:
    # bearing temperature climbs ~25 °C in 10 min: the limit (90 °C) is forecast before it is reached
    fault = Fault("drift", "bearing_temp", LEARN_S + 60.0, 600.0, magnitude=12.0)
    sim = MachineSimulator(SPEC, seed=4, faults=[fault])
    ts, X, _ = sim.generate(int((LEARN_S + 60 + 600) * RATE))
    runner = OfflineRunner(SPEC)
    runner.run(ts, X, batch=50)
    limit = [t.snapshot for t in runner.result.transitions if t.snapshot["condition"] == "limit:bearing_temp"]
    assert limit and limit[0]["level"] == "warning"
    assert "reaches 90 °C in about" in limit[0]["hint"]
    crossed = np.flatnonzero(X[:, SPEC.index("bearing_temp")] >= 90.0)
    assert limit[0]["updated_at"] < ts[crossed[0]], "the warning must come before the crossing"
    assert any(s["level"] == "major" for s in limit), "crossing the limit escalates to Major"
