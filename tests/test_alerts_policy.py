"""The alert policy on hand-made scores: levels and durations, hysteresis, de-duplication, escalation, clear."""

from __future__ import annotations

import numpy as np

from agent.sensors.alerts import AlertPolicy
from agent.sensors.engine import Scores
from agent.sensors.spec import parse_machine

SPEC = parse_machine("m", {"channels": ["a", "b"], "rate_hz": 10.0, "escalate_after_s": 60.0, "clear_s": 5.0})


def scores(t0: float, combined: list[float]) -> Scores:
    n = len(combined)
    ts = t0 + np.arange(n) / 10.0
    z = np.zeros((n, 2))
    contrib = np.c_[np.asarray(combined), np.asarray(combined) * 0.1]
    return Scores(
        ts,
        np.ones((n, 2)),
        np.asarray(combined, float),
        {"robust_z": np.asarray(combined, float)},
        contrib,
        z + 3.0,
        z,
        z,
        z,
    )


def feed(policy: AlertPolicy, segments: list[tuple[float, float]]) -> list:
    """segments of (score, seconds) at 10 Hz; returns (kind, level, t) transitions."""
    out, t = [], 0.0
    for value, secs in segments:
        n = round(secs * 10)
        for tr in policy.update(scores(t, [value] * n)):
            out.append((tr.kind, tr.snapshot["level"], round(tr.snapshot["updated_at"], 1)))
        t += n / 10.0
    return out


def test_single_samples_and_short_blips_raise_nothing() -> None:
    p = AlertPolicy(SPEC)
    segs = [(0.1, 5), (50.0, 0.1), (0.1, 5), (1.5, 0.5), (0.1, 2), (1.5, 0.5), (0.1, 5)]
    assert feed(p, segs) == []


def test_levels_by_threshold_and_duration_then_hysteresis_and_clear() -> None:
    p = AlertPolicy(SPEC)
    out = feed(p, [(0.0, 1), (2.5, 4), (5.0, 6), (0.7, 20), (0.2, 4.8), (0.9, 1), (0.2, 6)])
    assert out[0] == ("opened", "warning", 1.9)  # the 10th sample (1 s) at >= 1.0
    assert out[1] == ("escalated", "minor", 3.9)  # 3 s at >= 2.0
    assert out[2][:2] == ("escalated", "major")  # 5 s at >= 4.0
    # 0.7 is above the clear threshold (0.5): it stays open (hysteresis); 4.8 s below is not 5 s
    kinds = [k for k, _, _ in out]
    assert kinds.count("cleared") == 1 and out[-1][0] == "cleared"
    assert out[-1][2] > 1 + 4 + 6 + 20 + 4.8 + 1 + 4.9
    assert len(p.open_alerts) == 0


def test_one_open_alert_per_condition_and_escalation_while_it_persists() -> None:
    p = AlertPolicy(SPEC)
    out = feed(p, [(1.5, 2), (1.5, 61), (1.5, 61)])
    assert [k for k, _, _ in out] == ["opened", "escalated", "escalated"]  # never a second "opened"
    assert [lv for _, lv, _ in out] == ["warning", "minor", "major"]
    alert = p.open_alerts[0]
    assert [h["transition"] for h in alert.history] == ["opened", "escalated", "escalated"]
    assert alert.channels[0]["channel"] == "a"  # the top contributor is the hint


def test_flickering_score_still_alerts_through_the_leaky_accumulator() -> None:
    p = AlertPolicy(SPEC)
    segs = [(1.2, 0.3), (0.8, 0.1)] * 20  # 75 % of the time above, never 1 s in a row
    assert feed(p, segs)[0][:2] == ("opened", "warning")


def test_staleness_raises_dropout_without_any_rows() -> None:
    p = AlertPolicy(SPEC)
    out = []
    for now in np.arange(100.0, 130.0, 1.0):
        out += p.update_staleness(float(now), [float(now - 100.0) / 2.0, 0.0])
    assert out[0].snapshot["condition"] == "dropout:a" and out[0].kind == "opened"
    assert out[-1].snapshot["level"] in ("major", "critical")
