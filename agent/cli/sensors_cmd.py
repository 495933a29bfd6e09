"""``edge-agent sensors``: replay or evaluate CSVs through the detectors, alarm report, simulate, train, ports, status."""

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
        help="sensor pipeline: replay, evaluate, report, simulate, train, ports, status",
        description="Work with the sensor pipeline: replay a recorded CSV through the anomaly detectors "
        "offline, score them on labelled recordings, report alarm-management figures from the stored "
        "alerts, write simulated data with faults, train the LSTM autoencoder, list serial ports, "
        "or ask the running daemon for the pipeline's state.",
    )
    cmds = p.add_subparsers(dest="sensors_command", metavar="SUBCOMMAND", required=True)

    r = cmds.add_parser(
        "replay",
        help="run a CSV through the detectors and print the alerts",
        description="Replay a CSV (header row; ',' or ';'; the time in the first column or one named "
        "timestamp/datetime/time; the other columns numeric channels of one machine). The first N rows "
        "are the baseline the detectors learn from; every alert opened, escalated or cleared is reported. "
        "Label columns (anomaly, label, changepoint, is_anomaly, and any named with --label-column) are "
        "never read as channels.",
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
        help="comma-separated detectors (default: the machine defaults; choose from "
        "robust_z,cusum,pca,iforest,lstm_ae)",
    )
    r.add_argument(
        "--label-column",
        action="append",
        default=[],
        metavar="NAME",
        help="a column holding labels, not readings: not a channel (repeatable)",
    )
    r.set_defaults(handler=_usage(replay))

    e = cmds.add_parser(
        "evaluate",
        help="score the detectors on labelled recordings: F1, false and missed alarms, delays",
        description="Replay labelled CSV recordings through the same engine as 'replay' (the first N rows "
        "of each file the baseline) and score every later row: a row is flagged while an alert of the "
        "machine is open. Prints per file and summed: TP/FP/TN/FN, F1 = TP/(TP+(FP+FN)/2), false-alarm "
        "rate FP/(FP+TN), missed-alarm rate FN/(FN+TP); faults (runs of labelled rows) detected, mean "
        "detection delay, and false alerts per day of fault-free time.",
    )
    e.add_argument("files", nargs="+", metavar="FILE", help="labelled CSV recordings (one machine each)")
    e.add_argument(
        "--label-column",
        metavar="NAME",
        help="the column holding the labels, 0 = normal (default: anomaly, is_anomaly or label)",
    )
    e.add_argument("--learn", type=int, default=400, metavar="N", help="baseline rows per file (default 400)")
    e.add_argument(
        "--detectors", default="", help="comma-separated detectors to run (default: the machine defaults)"
    )
    e.add_argument(
        "--per-detector",
        action="store_true",
        help="also run each detector alone and print its figures (its own anomaly alerts only)",
    )
    e.add_argument(
        "--all-normal",
        action="store_true",
        help="the files hold no faults and no labels: every row counts as normal (false alerts only)",
    )
    e.add_argument(
        "--machine",
        metavar="NAME",
        help="use the settings of machine NAME from the config (detectors, levels, per-channel "
        "overrides); the files must hold its channels (default: default settings, every column a channel)",
    )
    e.add_argument("--json", action="store_true", help="print JSON only (no progress, no table)")
    e.set_defaults(handler=_usage(evaluate))

    rep = cmds.add_parser(
        "report",
        help="alarm-management figures per machine from the stored alerts (ISA-18.2 / EEMUA 191)",
        description="Alarm-management figures per machine from the stored alerts: alarms per 10 minutes "
        "(average and peak), chattering conditions (opened and cleared 3 or more times within a minute), "
        "standing alarms (open over 24 h), the share never acknowledged, and the most frequent conditions. "
        "Asks the running daemon (GET /v1/sensors/report); reads the database directly when it is not running.",
    )
    rep.add_argument(
        "--since",
        default="",
        metavar="DURATION",
        help="only alerts opened in the last DURATION (e.g. 24h, 7d)",
    )
    rep.add_argument("--json", action="store_true", help="print JSON")
    rep.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the daemon")
    rep.set_defaults(handler=_usage(report))

    s = cmds.add_parser(
        "simulate",
        help="write simulated machine data with injected faults as CSV",
        description="Write a CSV from the simulator: a baseline, then the faults asked for, each after "
        "a normal stretch; a label column says which fault is active (drop it before replaying, or keep "
        "it: replay never reads a label column as a channel).",
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


def _usage(handler: Any) -> Any:
    """Bad input is a usage error: exit 2 with the message, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args) or 0)
        except BadRequestError as exc:
            print(f"edge-agent: {exc}", file=sys.stderr)
            return 2

    return run


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


def report(args: argparse.Namespace) -> int:
    from agent.cli.apiclient import DaemonClient, DaemonUnreachable
    from agent.config import load_settings
    from agent.sensors.alarm_report import parse_duration, render, report_from_path

    since_s = parse_duration(args.since) if args.since else None
    settings = load_settings(args.config)
    client = DaemonClient(settings, token=getattr(args, "token", None), timeout=args.timeout)
    query = f"?since={since_s:.3f}s" if since_s is not None else ""
    try:
        body = client.call("GET", "/v1/sensors/report" + query)
    except DaemonUnreachable:
        if not args.json:
            print(f"the daemon is not running; reading {settings.database_path}", file=sys.stderr)
        body = report_from_path(settings.database_path, since_s)
    if args.json:
        print_json(body)
    else:
        print(render(body))
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
    for m in body["machines"]:
        _print_thresholds(m)
    return 0


def _print_thresholds(m: dict) -> None:
    """The calibrated thresholds of one machine: what each statistic watches, its limit, where it came from."""
    cal = m.get("calibration") or {}
    if not cal:
        return
    print(
        f"\n{m['machine']}: budget {cal['false_alarms_per_day']:g} false alarms/day; thresholds from "
        f"{cal['source']} ({cal['fit_rows']} rows fitted, {cal['held_out_rows']} held out); "
        f"alerts clear below {cal['clear_level']:g}; "
        f"Warning on-delay {cal.get('on_delay_s', 0):.3g} s ({cal.get('on_delay_source', 'configured')}); "
        f"{cal.get('returns_re_anchored', 0)} excursions re-armed on their return, "
        f"{cal.get('regimes_accepted', 0)} new regimes accepted after standing a baseline's length"
    )
    rows = [
        (
            det,
            t["statistic"],
            t["channel"] or "(all)",
            f"{t['threshold']:.4g}",
            f"{t['p_per_sample']:.2g}",
            t["source"],
        )
        for det, stats in sorted(m.get("thresholds", {}).items())
        for t in stats
    ]
    print(table(rows, ["detector", "statistic", "channel", "threshold", "p/sample", "source"]))
    chans = [
        (
            c["name"],
            c["model"]["model"],
            f"{c['stuck_after_s']:g} s",
            c["longest_baseline_run"],
            f"{c['resolution']:.3g}",
        )
        for c in m.get("channels", [])
        if "model" in c
    ]
    if chans:
        print(
            table(chans, ["channel", "residual model", "stuck after", "longest baseline run", "resolution"])
        )
