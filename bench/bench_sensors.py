"""Sensor anomaly detection: quality on the labelled set, throughput per detector, ingest-to-alert latency.

Quality (bench/data: 4 simulated machines x 12 faults of 6 kinds, generated
from seeds, hash in manifest.json). Event-based: a fault is *detected* when
an alert opens between its start and 30 s after its end (delay = open time -
start); an alert opened elsewhere is a false positive. Each detector alone is
scored on the ``anomaly`` condition; "system" is everything the daemon runs
(ensemble + stuck/dropout/limit checks), all conditions counted. Peer for the
quality rows: the 3-sigma rule on each channel (a fixed band from the baseline
mean/sd, 1 s sustained), the classic PLC alarm.

Throughput: samples (channel values) per second on one core, micro-batches of
256 rows of 4 channels. Isolation Forest: our flat-array scorer on micro-batches
of 64 rows vs scikit-learn's ``score_samples`` on the whole array at once (its
best case), same fitted forest (full run only: importing scikit-learn alone
takes about a second of the quick run's budget).

The same "system" run is also scored pointwise (a row is flagged while an
alert is open, every later row after the baseline; ``sensors evaluate``'s
scoring), the protocol of the real-data bench (bench_skab.py).

Latency at 1,000 rows/s through the daemon's SensorService: bench/sensors_latency.py.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.sensors.evaluate import Score, score
from agent.sensors.replay import OfflineRunner, open_spans
from bench.data.generate import MACHINES, machine_set

GRACE_S = 30.0


def _progress(msg: str) -> None:
    if sys.stderr.isatty():
        print(f"   {msg}", file=sys.stderr, flush=True)


def evaluate(
    opened: list[tuple[float, str]], faults: list[Any], t0: float
) -> tuple[int, int, int, list[float]]:
    """(true-positive alerts, false positives, detected faults, delays)."""
    windows = [(t0 + f.start_s, t0 + f.start_s + f.duration_s + GRACE_S) for f in faults]
    tp = fp = 0
    first: dict[int, float] = {}
    for t, _ in opened:
        hit = [i for i, (a, b) in enumerate(windows) if a <= t <= b]
        if hit:
            tp += 1
            for i in hit:
                first.setdefault(i, t - windows[i][0])
        else:
            fp += 1
    return tp, fp, len(first), list(first.values())


def three_sigma(spec: Any, ts: np.ndarray, X: np.ndarray) -> list[tuple[float, str]]:
    base = X[: spec.learn_rows]
    mu, sd = np.nanmean(base, axis=0), np.nanstd(base, axis=0)
    out = np.abs(X - mu) > 3 * sd
    opened, run, active = [], 0, False
    for i, row in enumerate(out[spec.learn_rows :].any(axis=1).tolist()):
        run = run + 1 if row else 0
        if run >= 10 and not active:
            opened.append((float(ts[spec.learn_rows + i]), "band"))
            active = True
        if run == 0 and active:
            active = False
    return opened


def quality(quick: bool) -> list[dict[str, Any]]:
    # name -> (the detectors run, every condition counted or only "anomaly"); "ensemble" and
    # "system" are one run (all detectors) counted two ways
    variants: dict[str, tuple[tuple[str, ...] | None, bool]] = {
        "robust_z": (("robust_z",), False),
        "cusum": (("cusum",), False),
        "pca": (("pca",), False),
        "iforest": (("iforest",), False),
        "ensemble": (None, False),
        "system": (None, True),
    }
    if not quick:
        variants["lstm_ae"] = (("lstm_ae",), False)
    totals: dict[str, list[Any]] = {k: [0, 0, 0, 0, []] for k in [*variants, "3-sigma"]}

    def add(name: str, result: tuple[int, int, int, list[float]], faults: int) -> None:
        tot = totals[name]
        tot[0] += result[0]
        tot[1] += result[1]
        tot[2] += result[2]
        tot[3] += faults
        tot[4] += result[3]

    pointwise = Score()
    for k in range(2 if quick else MACHINES):
        spec, faults, ts, X, labels = machine_set(k, quick)
        if not quick:
            spec = dataclasses.replace(spec, ae_epochs=15)
        runs: dict[tuple[str, ...] | None, list[Any]] = {}
        for name, (dets, every_condition) in variants.items():
            if dets not in runs:
                _progress(f"quality: machine {k} {name}")
                runner = OfflineRunner(spec, detectors=dets)
                runner.run(ts, X, batch=64)
                runs[dets] = runner.result.transitions
            opened = [
                (t.snapshot["updated_at"], t.snapshot["condition"])
                for t in runs[dets]
                if t.kind == "opened" and (every_condition or t.snapshot["condition"] == "anomaly")
            ]
            add(name, evaluate(opened, faults, ts[0]), len(faults))
        add("3-sigma", evaluate(three_sigma(spec, ts, X), faults, ts[0]), len(faults))
        # the same system run scored pointwise, as `sensors evaluate` scores a labelled recording
        pointwise.add(score(ts, np.asarray(labels) >= 0, spec.learn_rows, open_spans(runs[None])))
    rows = []
    peer = totals["3-sigma"]
    peer_p = peer[0] / max(peer[0] + peer[1], 1)
    peer_r = peer[2] / max(peer[3], 1)
    peer_f1 = 2 * peer_p * peer_r / max(peer_p + peer_r, 1e-9)
    for name, (tp, fp, det, n, delays) in totals.items():
        if name == "3-sigma":
            continue
        p = tp / max(tp + fp, 1)
        r = det / max(n, 1)
        f1 = 2 * p * r / max(p + r, 1e-9)
        for metric, ours, theirs, unit in (
            ("precision", p, peer_p, "ratio"),
            ("recall", r, peer_r, "ratio"),
            ("F1", f1, peer_f1, "ratio"),
            (
                "mean detection delay",
                float(np.mean(delays)) if delays else float("nan"),
                float(np.mean(peer[4])) if peer[4] else None,
                "s",
            ),
        ):
            rows.append(
                {
                    "name": f"sensors {name}: {metric}",
                    "ours": round(ours, 3),
                    "peer": None if theirs is None else round(theirs, 3),
                    "peer_name": "3-sigma band per channel",
                    "unit": unit,
                    "ratio": round(ours / theirs, 3) if theirs else None,
                    "target": "system: every fault kind detected, no false alarm" if name == "system" else "",
                }
            )
    for metric, value in (("F1", pointwise.f1), ("FAR", pointwise.far), ("MAR", pointwise.mar)):
        rows.append(
            {
                "name": f"sensors system pointwise {metric} (generated set)",
                "ours": None if value is None else round(value, 3),
                "peer": None,
                "peer_name": "",
                "unit": "ratio",
                "ratio": None,
                "target": "a row flagged while an alert is open, as `sensors evaluate`",
            }
        )
    return rows


ONE_CORE_TARGET = ">= 100000 samples/s on one core"


def _throughput_row(name: str, rate: float, target: str = "") -> dict[str, Any]:
    """A throughput row without a peer (the robust z row gets its peer afterwards)."""
    return {
        "name": f"sensors throughput {name}",
        "ours": round(rate),
        "peer": None,
        "peer_name": "",
        "unit": "samples/s",
        "ratio": None,
        "target": target,
    }


def _rate(fn: Any, n_samples: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_samples / best


def throughput(quick: bool) -> list[dict[str, Any]]:
    from agent.sensors.detectors import Cusum, PcaT2Q, Quality, RobustZ
    from agent.sensors.engine import AeDetector, IForestDetector
    from agent.sensors.iforest import IsolationForestModel

    spec, _, ts, X, _ = machine_set(0, True)
    base = X[: spec.learn_rows]
    data = X[spec.learn_rows :]
    data = np.where(np.isnan(data), 0.0, data)[: 4000 if quick else 60000]
    tsd = ts[spec.learn_rows :][: len(data)]
    n = data.size
    rows = []

    def batched(det: Any, size: int = 256) -> Any:
        def go() -> None:
            for i in range(0, len(data), size):
                det.raw(data[i : i + size])

        return go

    makers: dict[str, Callable[[], Any]] = {
        "robust_z": lambda: RobustZ(spec.channels),
        "cusum": lambda: Cusum(spec.channels),
        "pca": lambda: PcaT2Q(),
    }
    for name, make in makers.items():
        det = make()
        det.fit(base)
        rate = _rate(batched(det), n)
        rows.append(_throughput_row(name, rate, ONE_CORE_TARGET))
    q = Quality(spec.channels, spec.rate_hz)
    q.fit(base, spec.rate_hz)
    rate = _rate(lambda: [q.score(tsd[i : i + 256], data[i : i + 256]) for i in range(0, len(data), 256)], n)
    rows.append(_throughput_row("stuck/dropout", rate, ONE_CORE_TARGET))
    # robust z: ours vs the naive exact rolling median/MAD, one sample at a time (pure numpy per sample)
    W = 256
    small = data[: 1000 if quick else 3000]

    def naive() -> None:
        H = np.vstack([base[-W:], small])
        for i in range(len(small)):
            win = H[i : i + W]
            med = np.median(win, axis=0)
            _ = (small[i] - med) / np.median(np.abs(win - med), axis=0)

    peer = _rate(naive, small.size, repeat=1)
    rz = next(r for r in rows if r["name"].endswith("robust_z"))
    rz.update(peer=round(peer), peer_name="per-sample np.median window", ratio=round(rz["ours"] / peer, 1))
    # Isolation Forest: ours in micro-batches of 64 vs sklearn batch score_samples, same forest
    try:  # not in quick mode: importing scikit-learn alone takes about a second
        if quick:
            raise ImportError
        from sklearn.ensemble import IsolationForest
    except ImportError:
        IsolationForest = None
    if IsolationForest is not None:
        Z = (data - base.mean(0)) / base.std(0)
        forest = IsolationForest(n_estimators=100, random_state=0).fit((base - base.mean(0)) / base.std(0))
        ours_model = IsolationForestModel.from_sklearn(forest)
        rows_n = len(Z)
        ours = _rate(lambda: [ours_model.score_samples(Z[i : i + 64]) for i in range(0, rows_n, 64)], rows_n)
        theirs = _rate(lambda: forest.score_samples(Z), rows_n)
        small_theirs = _rate(
            lambda: [forest.score_samples(Z[i : i + 64]) for i in range(0, 64 * 50, 64)], 64 * 50, 1
        )
        rows.append(
            {
                "name": "sensors iforest micro-batch 64 rows",
                "ours": round(ours),
                "peer": round(theirs),
                "peer_name": "sklearn score_samples, whole array",
                "unit": "rows/s",
                "ratio": round(ours / theirs, 2),
                "target": "micro-batches never one sklearn call per sample",
            }
        )
        rows.append(
            {
                "name": "sensors iforest: sklearn in micro-batches of 64",
                "ours": round(ours),
                "peer": round(small_theirs),
                "peer_name": "sklearn score_samples per 64 rows",
                "unit": "rows/s",
                "ratio": round(ours / small_theirs, 1),
                "target": "",
            }
        )
    det = IForestDetector(spec)
    det.fit(base)
    rows.append(_throughput_row("iforest (fit native)", _rate(batched(det, 64), n)))
    if not quick:
        ae = AeDetector(dataclasses.replace(spec, ae_epochs=10), None)
        ae.fit(base)
        rows.append(_throughput_row("lstm_ae (onnxruntime, 1 thread)", _rate(batched(ae, 256), n, 1)))
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    from bench.sensors_latency import latency

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = throughput(quick)
    rows += latency(quick)
    rows += quality(quick)
    return rows


if __name__ == "__main__":
    from bench.run import run_one

    sys.exit(run_one(__file__))
