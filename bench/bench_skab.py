"""Real plant data: the industrial-rig recordings (SKAB valve1), ours beside peers and published rows.

Protocol (the benchmark's own, ../shared/data/industrial-rig/README.md): per
file, the first 400 rows are the baseline; every later row is scored
pointwise; confusion counts are summed over the 16 files; F1 = TP / (TP +
(FP + FN) / 2), FAR = FP / (FP + TN), MAR = FN / (FN + TP).

- ours: ``edge-agent sensors evaluate`` (agent/sensors/evaluate.py) with the
  default configuration, every alert of the machine counted; each detector
  alone (its own anomaly alerts) in the full run.
- peers, run here on the same files and baselines:
  scikit-learn's IsolationForest (fit on the 400 standardized baseline rows;
  flagged above the largest baseline score, and with the textbook
  ``contamination=0.01`` threshold) and a PCA T²+Q with textbook control
  limits (components for 90 % of the variance; T² limit from the F
  distribution, Q limit Jackson–Mudholkar, both at 99 %; a row is flagged when
  either is exceeded). Both score each row alone, with no persistence.
- published rows (the README's, whole benchmark): fixed reference lines.
- ``anomaly-free.csv`` (2.6 h of normal operation, baseline the first 400
  rows): every alert the default configuration raises, and the highest level.

The recordings are read from ../shared/data at run time, never copied here.
Besides the runner's table, the per-file figures go to bench/results/skab-valve1.json.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.sensors.evaluate import SYSTEM, Score, evaluate_file, load, replay_transitions, score, totals
from agent.sensors.replay import open_spans
from agent.sensors.spec import machine_from_columns

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "industrial-rig"
LEARN = 400
ALPHA = 0.99
#: F1, FAR %, MAR % on the whole benchmark, from the data set's README
PUBLISHED = {
    "Conv-AE": (0.78, 13.55, 28.02),
    "MSET": (0.78, 39.73, 14.13),
    "PCA T²+Q": (0.76, 26.62, 24.92),
    "LSTM-AE": (0.74, 29.96, 25.92),
    "Isolation Forest": (0.29, 2.56, 82.89),
}
TARGET = {"F1": ">= 0.80", "FAR %": "<= 10", "MAR %": "<= 30"}


def _progress(msg: str) -> None:
    if sys.stderr.isatty():
        print(f"   {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- textbook peers


def _standardize(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    base = X[:LEARN]
    mu = np.nanmean(base, axis=0)
    sd = np.nanstd(base, axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    Z = (X - mu) / sd
    return np.where(np.isnan(Z), 0.0, Z), sd


def _f_ppf(q: float, d1: int, d2: int) -> float:
    try:
        from scipy.stats import f

        return float(f.ppf(q, d1, d2))
    except ImportError:  # Wilson–Hilferty chi-square approximation, then F ~ chi2/d1 (d2 = 400 - k is large)
        z = statistics.NormalDist().inv_cdf(q)
        chi2 = d1 * (1 - 2 / (9 * d1) + z * math.sqrt(2 / (9 * d1))) ** 3
        return chi2 / d1


def pca_t2q(X: np.ndarray) -> np.ndarray:
    """Flags per row: T² or Q over its 99 % control limit, the PCA fitted on the baseline rows."""
    Z, _ = _standardize(X)
    base = Z[:LEARN]
    n, m = base.shape
    lam, vec = np.linalg.eigh(np.cov(base, rowvar=False))
    order = np.argsort(lam)[::-1]
    lam, vec = np.maximum(lam[order], 1e-12), vec[:, order]
    k = int(np.searchsorted(np.cumsum(lam) / lam.sum(), 0.90) + 1)
    k = min(max(k, 1), m - 1)
    P = vec[:, :k]
    T = Z @ P
    t2 = (T**2 / lam[:k]).sum(axis=1)
    q = ((Z - T @ P.T) ** 2).sum(axis=1)
    t2_lim = k * (n - 1) * (n + 1) / (n * (n - k)) * _f_ppf(ALPHA, k, n - k)
    theta = [float((lam[k:] ** i).sum()) for i in (1, 2, 3)]
    h0 = 1 - 2 * theta[0] * theta[2] / (3 * theta[1] ** 2)
    c = statistics.NormalDist().inv_cdf(ALPHA)
    q_lim = theta[0] * (
        c * math.sqrt(2 * theta[1] * h0**2) / theta[0] + 1 + theta[1] * h0 * (h0 - 1) / theta[0] ** 2
    ) ** (1 / h0)
    return (t2 > t2_lim) | (q > q_lim)


def sk_iforest(X: np.ndarray, contamination: float | None) -> np.ndarray:
    """Flags per row from scikit-learn's IsolationForest fitted on the baseline rows."""
    from sklearn.ensemble import IsolationForest

    Z, _ = _standardize(X)
    forest = IsolationForest(
        n_estimators=100, contamination=contamination if contamination else "auto", random_state=0
    ).fit(Z[:LEARN])
    if contamination:
        return forest.predict(Z) == -1
    s = -forest.score_samples(Z)
    return s > s[:LEARN].max()


def _confusion(flags: np.ndarray, faulty: np.ndarray) -> Score:
    f, y = flags[LEARN:], faulty[LEARN:]
    return Score(
        scored_rows=len(f),
        tp=int((f & y).sum()),
        fp=int((f & ~y).sum()),
        tn=int((~f & ~y).sum()),
        fn=int((~f & y).sum()),
    )


# ---------------------------------------------------------------- the rows


def _rows(name: str, ours: Score, peer: tuple[float, float, float] | None, peer_name: str) -> list[dict]:
    out = []
    mine = (
        ours.f1,
        None if ours.far is None else 100 * ours.far,
        None if ours.mar is None else 100 * ours.mar,
    )
    for i, unit in enumerate(("F1", "FAR %", "MAR %")):
        o = mine[i]
        p = peer[i] if peer else None
        out.append(
            {
                "name": f"skab valve1 {name}: {unit}",
                "ours": None if o is None else round(o, 3 if unit == "F1" else 2),
                "peer": None if p is None else round(p, 3 if unit == "F1" else 2),
                "peer_name": peer_name,
                "unit": unit,
                "ratio": round(o / p, 3) if o is not None and p else None,
                "target": TARGET[unit] if name == "ours" else "",
            }
        )
    return out


def _figures(s: Score) -> tuple[float, float, float] | None:
    if s.f1 is None or s.far is None or s.mar is None:
        return None
    return (s.f1, 100 * s.far, 100 * s.mar)


def run(quick: bool = False) -> list[dict[str, Any]]:
    files = sorted((DATA / "valve1").glob("*.csv"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
    if not files:
        raise FileNotFoundError(
            f"{DATA / 'valve1'} holds no recordings: ../shared/data must sit beside the repo"
        )
    if quick:
        files = files[:3]
    started = time.perf_counter()
    results = []
    peers: dict[str, Score] = {}
    for path in files:
        _progress(f"skab: {path.name}")
        res = evaluate_file(str(path), label_column="anomaly", learn=LEARN, per_detector=not quick)
        results.append(res)
        rec, _, _ = load(str(path), "anomaly", False)
        faulty = rec.labels["anomaly"] != 0
        variants = {"PCA T²+Q (textbook 99 % limits)": lambda X: pca_t2q(X)}
        if not quick:
            variants["sklearn IsolationForest (baseline max)"] = lambda X: sk_iforest(X, None)
            variants["sklearn IsolationForest (contamination 0.01)"] = lambda X: sk_iforest(X, 0.01)
        for name, fn in variants.items():
            peers.setdefault(name, Score()).add(_confusion(fn(rec.X), faulty))
    ours_s = time.perf_counter() - started
    total = totals(results)
    system = total[SYSTEM]
    rows: list[dict[str, Any]] = []
    for name, s in peers.items():
        rows += _rows("ours", system, _figures(s), f"{name}, same files")
    for name, fig in PUBLISHED.items():
        rows += _rows("ours", system, fig, f"published {name} (whole SKAB)")
    for det, s in total.items():
        if det != SYSTEM:
            rows += _rows(f"{det} alone" if det != "checks" else "quality checks alone", s, None, "")
    rows.append(
        _row("skab valve1 ours: faults detected", system.faults_detected, "faults", f"of {system.faults}")
    )
    rows.append(
        _row("skab valve1 ours: faults begun with an alert open", system.faults_in_alarm, "faults", "0")
    )
    rows.append(_row("skab valve1 ours: mean detection delay (the others)", system.mean_delay_s, "s", ""))
    rows.append(_row("skab valve1 ours: false alerts per day", system.false_alerts_per_day, "1/day", ""))
    rows.append(_row("skab valve1 ours: alerts during the baseline", system.baseline_alerts, "alerts", "0"))
    free = anomaly_free()
    rows.append(_row("skab anomaly-free 2.6 h: alerts", free["alerts"], "alerts", "<= 2"))
    rows.append(_row("skab anomaly-free 2.6 h: highest level", free["max_level"] or "none", "", "<= warning"))
    rows.append(_row("skab anomaly-free 2.6 h: stuck alerts", free["stuck"], "alerts", "0"))
    detail = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": quick,
        "protocol": f"first {LEARN} rows of each file the baseline; pointwise; counts summed over files",
        "seconds": round(ours_s, 1),
        "ours": {"total": system.to_dict(), "files": [r.to_dict() for r in results]},
        "ours_per_detector": {k: v.to_dict() for k, v in total.items() if k != SYSTEM},
        "peers": {k: v.to_dict() for k, v in peers.items()},
        "published": {
            k: dict(zip(("f1", "far_pct", "mar_pct"), v, strict=True)) for k, v in PUBLISHED.items()
        },
        "anomaly_free": free,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "skab-valve1.json").write_text(json.dumps(detail, indent=2))
    return rows


def _row(name: str, ours: Any, unit: str, target: str) -> dict[str, Any]:
    if isinstance(ours, float):
        ours = round(ours, 2)
    return {
        "name": name,
        "ours": ours,
        "peer": None,
        "peer_name": "",
        "unit": unit,
        "ratio": None,
        "target": target,
    }


def anomaly_free() -> dict[str, Any]:
    """Every alert the default configuration raises on 2.6 hours of normal operation."""
    path = DATA / "anomaly-free.csv"
    rec, _, _ = load(str(path), None, True)
    spec = machine_from_columns("anomaly-free", rec.channels, learn_rows=LEARN, rate_hz=rec.rate_hz)
    spans = open_spans(replay_transitions(spec, rec, None))
    s = score(rec.ts, np.zeros(len(rec.ts), dtype=bool), LEARN, spans)
    return {
        "rows": len(rec.ts),
        "hours": round((rec.ts[-1] - rec.ts[0]) / 3600, 2),
        "alerts": len(spans),
        "baseline_alerts": s.baseline_alerts,
        "max_level": s.max_level,
        "stuck": sum(1 for x in spans if x.condition.startswith("stuck:")),
        "by_condition": {
            c: sum(1 for x in spans if x.condition == c) for c in sorted({x.condition for x in spans})
        },
    }


if __name__ == "__main__":
    from bench.run import run_one

    sys.exit(run_one(__file__))
