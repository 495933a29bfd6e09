"""``edge-agent sensors`` offline: replay or evaluate CSVs through the detectors, simulate, train."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.cli.output import print_json
from agent.errors import BadRequestError


def _label_notice(path: str, skipped: list[str]) -> None:
    if skipped:
        print(
            f"{path}: label column(s) {', '.join(skipped)} set aside, not read as channels "
            "(name another with --label-column)",
            file=sys.stderr,
        )


def replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agent.sensors.csvfile import read_csv
    from agent.sensors.evaluate import parse_detectors
    from agent.sensors.replay import REPLAY_BATCH, OfflineRunner, default_learn_rows, prepare
    from agent.sensors.spec import machine_from_columns

    data = read_csv(args.file, args.label_column)
    _label_notice(args.file, data.skipped_by_name)
    rec = prepare(data)
    n = len(rec.ts)
    learn = args.learn if args.learn is not None else default_learn_rows(n)
    if learn < 32:
        raise BadRequestError("--learn must be at least 32 rows")
    if learn >= n:
        raise BadRequestError(f"{args.file} has {n} rows; --learn {learn} leaves nothing to check")
    detectors = parse_detectors(args.detectors)
    name = args.machine or Path(args.file).stem
    spec = machine_from_columns(name, rec.channels, learn_rows=learn, rate_hz=rec.rate_hz)
    runner = OfflineRunner(spec, detectors=detectors)
    ts, X = rec.ts, rec.X
    printed = 0
    for start in range(0, n, REPLAY_BATCH):
        found = runner.feed(ts[start : start + REPLAY_BATCH], X[start : start + REPLAY_BATCH])
        # the detectors report per condition; the reader wants one timeline
        for t in sorted(found, key=lambda t: t.snapshot["updated_at"]):
            printed += 1
            if args.json:
                print(json.dumps(_transition_json(t.kind, t.snapshot), default=str), flush=True)
            else:
                s = t.snapshot
                print(
                    f"{_iso(s['updated_at'])}  {t.kind:<9} {s['level']:<8} {s['condition']:<22} score {s['score']:.2f}  {s['hint']}"
                )
    if not args.json:
        print(
            f"\n{n} rows, {learn} baseline, {rec.rate_hz:.3g} rows/s, {printed} alert transitions, "
            f"{len(runner.policy.open_alerts)} alerts open at the end"
            + (f", {rec.out_of_order_rows} rows out of time order" if rec.out_of_order_rows else "")
            + (f", {rec.duplicate_rows} repeated timestamps dropped" if rec.duplicate_rows else ""),
            file=sys.stderr,
        )
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from agent.sensors.evaluate import SYSTEM, evaluate_file, parse_detectors, render, totals

    if args.learn < 32:
        raise BadRequestError("--learn must be at least 32 rows")
    if args.label_column and args.all_normal:
        raise BadRequestError("--all-normal and --label-column exclude each other: pick one")
    detectors = parse_detectors(args.detectors)
    machine = _configured_machine(args) if args.machine else None

    def notice(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    results = []
    told: set[str] = set()
    for k, path in enumerate(args.files, 1):
        res = evaluate_file(
            path,
            label_column=args.label_column,
            learn=args.learn,
            detectors=detectors,
            per_detector=args.per_detector,
            all_normal=args.all_normal,
            machine=machine,
            notice=notice,
        )
        results.append(res)
        if res.skipped_labels and not set(res.skipped_labels) <= told:
            told.update(res.skipped_labels)
            notice(f"label column(s) {', '.join(res.skipped_labels)} set aside, not read as channels")
        s = res.scores[SYSTEM]
        notice(
            f"[{k}/{len(args.files)}] {path}: {s.rows} rows, F1 {'-' if s.f1 is None else f'{s.f1:.2f}'}, "
            f"{s.faults_detected}/{s.faults} faults, {s.alerts} alerts"
        )
    total = totals(results)
    if args.json:
        print_json(
            {
                "learn": args.learn,
                "detectors": list(detectors) if detectors else None,
                "files": [r.to_dict() for r in results],
                "total": total[SYSTEM].to_dict(),
                "per_detector": {k: v.to_dict() for k, v in total.items() if k != SYSTEM},
            }
        )
        return 0
    print(render(results, total))
    return 0


def _configured_machine(args: argparse.Namespace) -> Any:
    from agent.config import load_settings
    from agent.sensors.spec import parse_machines

    settings = load_settings(args.config)
    machines = {m.name: m for m in parse_machines(settings.sensors.machines)}
    if args.machine not in machines:
        raise BadRequestError(
            f"--machine {args.machine}: the config ({settings.source}) has "
            f"{', '.join(sorted(machines)) or 'no machines'}; pass the config with --config FILE"
        )
    return machines[args.machine]


def _iso(ts: float | None) -> str:
    from datetime import datetime, timezone

    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _transition_json(kind: str, s: dict[str, Any]) -> dict[str, Any]:
    return {
        "transition": kind,
        "id": s["id"],
        "level": s["level"],
        "condition": s["condition"],
        "channels": [
            {k: c.get(k) for k in ("channel", "deviation", "value", "usual", "contribution") if k in c}
            for c in s["channels"]
        ],
        "start": s["opened_at"],
        "end": s["cleared_at"],
        "at": s["updated_at"],
        "score": s["score"],
        "hint": s["hint"],
    }


def simulate(args: argparse.Namespace) -> int:
    from agent.sensors.simulator import FAULT_KINDS, Fault, MachineSimulator
    from agent.sensors.spec import parse_machines, sample_machines

    spec = parse_machines(sample_machines())[0]
    kinds = [k for k in args.faults.split(",") if k]
    if any(k not in FAULT_KINDS for k in kinds):
        raise BadRequestError(f"--faults: choose from {', '.join(FAULT_KINDS)}")
    total_s = args.minutes * 60
    learn_s = spec.learn_rows / args.rate
    slot = (total_s - learn_s) / max(len(kinds), 1)
    if slot < 30:
        raise BadRequestError("--minutes is too short for the baseline and the faults asked for")
    names = spec.channel_names
    lengths = {
        "spike": 3.0,
        "drift": 240.0,
        "stuck": 60.0,
        "noise": 120.0,
        "decorrelate": 120.0,
        "dropout": 30.0,
    }
    faults = [
        Fault(
            k,
            "bearing_temp"
            if k == "drift"
            else ("vibration" if k == "decorrelate" else names[i % len(names)]),
            learn_s + i * slot + slot / 4,
            min(slot / 2, lengths[k]),
        )
        for i, k in enumerate(kinds)
    ]
    sim = MachineSimulator(spec, rate_hz=args.rate, seed=args.seed, faults=faults)
    ts, X, labels = sim.generate(int(total_s * args.rate))
    out = sys.stdout if args.out == "-" else open(args.out, "w", newline="")
    try:
        out.write("timestamp," + ",".join(names) + ",label\n")
        for t, row, lab in zip(ts.tolist(), X.tolist(), labels.tolist(), strict=True):
            cells = ["" if v != v else f"{v:.5f}" for v in row]
            out.write(f"{t:.3f}," + ",".join(cells) + f",{faults[lab].kind if lab >= 0 else ''}\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def train(args: argparse.Namespace) -> int:
    import numpy as np

    from agent.config import load_settings
    from agent.sensors.ae_store import StorePublisher
    from agent.sensors.csvfile import read_csv
    from agent.sensors.model_detectors import AeDetector
    from agent.sensors.spec import machine_from_columns
    from models.store import ModelStore

    settings = load_settings(args.config)
    data = read_csv(args.file)  # label columns are set aside by read_csv
    _label_notice(args.file, data.skipped_by_name)
    X = np.asarray(data.rows, dtype=np.float64)[: args.learn]
    X = X[~np.isnan(X).any(axis=1)]
    spec = machine_from_columns(args.machine, data.channels, learn_rows=len(X), ae_epochs=args.epochs)
    store = ModelStore(settings.data_path / "models")
    det = AeDetector(spec, StorePublisher(store, settings.data_path, settings.device_id))
    det.fit(X)
    print(
        f"trained and installed {det.model_path} (held-out reconstruction error: median "
        f"{det.calibration['held_out_error_median']:.4g}, 99th percentile {det.calibration['held_out_error_q99']:.4g})"
    )
    return 0
