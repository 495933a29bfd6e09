"""``edge-agent sensors``: replay a CSV through the detectors, simulate faults, train, ports, status."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.cli.output import print_json, table
from agent.errors import BadRequestError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sensors",
        help="sensor pipeline: replay, simulate, train, ports, status",
        description="Work with the sensor pipeline: replay a recorded CSV through the anomaly detectors "
        "offline, write simulated data with faults, train the LSTM autoencoder, list serial ports, "
        "or ask the running daemon for the pipeline's state.",
    )
    cmds = p.add_subparsers(dest="sensors_command", metavar="SUBCOMMAND", required=True)

    r = cmds.add_parser(
        "replay",
        help="run a CSV through the detectors and print the alerts",
        description="Replay a CSV (header row; ',' or ';'; the time in the first column or one named "
        "timestamp/datetime/time; the other columns numeric channels of one machine). The first N rows "
        "are the baseline the detectors learn from; every alert opened, escalated or cleared is reported.",
    )
    r.add_argument("file", metavar="FILE", help="the CSV file")
    r.add_argument(
        "--learn", type=int, metavar="N", help="baseline rows (default: a fifth of the file, at most 3000)"
    )
    r.add_argument("--json", action="store_true", help="one JSON line per alert transition")
    r.add_argument("--machine", default="", help="machine name in the output (default: the file's stem)")
    r.add_argument(
        "--detectors",
        default="",
        help="comma-separated detectors (default: robust_z,cusum,pca,iforest; add lstm_ae)",
    )
    r.set_defaults(handler=replay)

    s = cmds.add_parser(
        "simulate",
        help="write simulated machine data with injected faults as CSV",
        description="Write a CSV from the simulator: a baseline, then the faults asked for, each after "
        "a normal stretch; a label column says which fault is active (drop it before replaying, or keep "
        "it: replay ignores a column named 'label').",
    )
    s.add_argument("--out", default="-", help="output file (default: stdout)")
    s.add_argument("--minutes", type=float, default=20.0, help="length in minutes (default 20)")
    s.add_argument(
        "--faults", default="spike,drift,stuck,noise,decorrelate,dropout", help="fault kinds, in order"
    )
    s.add_argument("--seed", type=int, default=1, help="random seed of the simulated readings and faults")
    s.add_argument("--rate", type=float, default=10.0, help="rows per second (default 10)")
    s.set_defaults(handler=simulate)

    t = cmds.add_parser(
        "train",
        help="train the LSTM autoencoder on a baseline CSV and version it in the model store",
        description="Train the LSTM autoencoder (numpy) on the first N rows of a CSV, export it to ONNX, "
        "check onnxruntime agrees with the numpy forward pass, and install it in the model store "
        "(<data_dir>/models) as sensor-ae-MACHINE, signed with this device's key.",
    )
    t.add_argument("file", metavar="FILE", help="CSV of normal operation to train on")
    t.add_argument(
        "--machine", required=True, help="machine the model is for (names the model sensor-ae-MACHINE)"
    )
    t.add_argument("--learn", type=int, default=3000, help="baseline rows (default 3000)")
    t.add_argument("--epochs", type=int, default=40, help="training passes over the baseline")
    t.set_defaults(handler=train)

    ports = cmds.add_parser(
        "ports",
        help="list serial ports that look like sensor nodes",
        description="List serial ports found by the sensors.serial_ports patterns (default: auto).",
    )
    ports.add_argument("--json", action="store_true", help="print JSON")
    ports.set_defaults(handler=list_ports)

    st = cmds.add_parser(
        "status",
        help="the running daemon's sensor pipeline",
        description="Ask the running daemon (GET /v1/sensors) for machines, phases, queue and source counters.",
    )
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(handler=status)


# ---------------------------------------------------------------- replay


def replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from agent.sensors.csvfile import read_csv
    from agent.sensors.replay import OfflineRunner
    from agent.sensors.spec import DETECTORS, machine_from_columns

    data = read_csv(args.file)
    keep = [i for i, c in enumerate(data.channels) if c.lower() != "label"]
    channels = [data.channels[i] for i in keep]
    n = len(data.ts)
    learn = args.learn if args.learn is not None else max(32, min(3000, n // 5))
    if learn < 32:
        raise BadRequestError("--learn must be at least 32 rows")
    if learn >= n:
        raise BadRequestError(f"{args.file} has {n} rows; --learn {learn} leaves nothing to check")
    ts = np.asarray(data.ts)
    X = np.asarray(data.rows, dtype=np.float64)[:, keep]
    order = np.argsort(ts, kind="stable")
    out_of_order = int((np.diff(ts) <= 0).sum())
    ts, X = ts[order], X[order]
    keep_rows = np.concatenate([[True], np.diff(ts) > 0])  # duplicates of a timestamp: the first wins
    ts, X = ts[keep_rows], X[keep_rows]
    dts = np.diff(ts[: min(len(ts), 10000)])
    rate = 1.0 / float(np.median(dts)) if len(dts) and np.median(dts) > 0 else 1.0
    detectors = tuple(d for d in args.detectors.split(",") if d) or None
    if detectors and any(d not in DETECTORS for d in detectors):
        raise BadRequestError(f"--detectors: choose from {', '.join(DETECTORS)}")
    name = args.machine or Path(args.file).stem
    spec = machine_from_columns(name, channels, learn_rows=learn, rate_hz=rate)
    runner = OfflineRunner(spec, detectors=detectors)
    printed = 0
    for start in range(0, len(ts), 256):
        for t in runner.feed(ts[start : start + 256], X[start : start + 256]):
            printed += 1
            if args.json:
                print(json.dumps(_transition_json(t.kind, t.snapshot), default=str), flush=True)
            else:
                s = t.snapshot
                print(
                    f"{_iso(s['updated_at'])}  {t.kind:<9} {s['level']:<8} {s['condition']:<22} score {s['score']:.2f}  {s['hint']}"
                )
    summary = {
        "rows": n,
        "baseline_rows": learn,
        "rate_hz": round(rate, 4),
        "channels": channels,
        "transitions": printed,
        "open_at_end": len(runner.policy.open_alerts),
        "out_of_order_rows": out_of_order,
        "bad_cells": dict(data.bad_cells),
        "bad_times": data.bad_times,
    }
    if not args.json:
        print(
            f"\n{n} rows, {learn} baseline, {rate:.3g} rows/s, {printed} alert transitions, "
            f"{summary['open_at_end']} alerts open at the end",
            file=sys.stderr,
        )
    return 0


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


# ---------------------------------------------------------------- simulate / train / ports / status


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
    from agent.sensors.engine import AeDetector
    from agent.sensors.spec import machine_from_columns
    from models.store import ModelStore

    settings = load_settings(args.config)
    data = read_csv(args.file)
    keep = [i for i, c in enumerate(data.channels) if c.lower() != "label"]
    X = np.asarray(data.rows, dtype=np.float64)[: args.learn, keep]
    X = X[~np.isnan(X).any(axis=1)]
    spec = machine_from_columns(
        args.machine, [data.channels[i] for i in keep], learn_rows=len(X), ae_epochs=args.epochs
    )
    store = ModelStore(settings.data_path / "models")
    det = AeDetector(spec, StorePublisher(store, settings.data_path, settings.device_id))
    det.fit(X)
    print(
        f"trained and installed {det.model_path} (calibration center {det.calib.center:.4g}, scale {det.calib.scale:.4g})"
    )
    return 0


def list_ports(args: argparse.Namespace) -> int:
    from agent.config import load_settings
    from agent.sensors.serial_source import discover

    settings = load_settings(args.config)
    ports = discover(settings.sensors.serial_ports)
    if args.json:
        print_json({"patterns": list(settings.sensors.serial_ports), "ports": ports})
    elif ports:
        print("\n".join(ports))
    else:
        print(f"no serial ports match {', '.join(settings.sensors.serial_ports)}", file=sys.stderr)
    return 0


def status(args: argparse.Namespace) -> int:
    from agent.cli.alerts_cmd import api_call

    body = api_call(args, "GET", "/v1/sensors")
    if body is None:
        return 3
    if args.json:
        print_json(body)
        return 0
    q = body["queue"]
    print(
        f"queue {q['depth']}/{q['size']} ({q['policy']}, {q['dropped']} dropped)  scored {body['scored_rows']} rows"
    )
    rows = [
        (
            m["machine"],
            m["phase"],
            f"{m['baseline_progress']:.0%}",
            ",".join(m["detectors"]),
            len(m["open_alerts"]),
        )
        for m in body["machines"]
    ]
    print(table(rows, ["machine", "phase", "baseline", "detectors", "open alerts"]))
    return 0
