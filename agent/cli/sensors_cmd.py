"""``edge-agent sensors``: the subcommands and their options (handlers: ``sensors_offline``, ``sensors_live``)."""

from __future__ import annotations

import argparse

from agent.cli.sensors_live import list_ports, report, status
from agent.cli.sensors_offline import evaluate, replay, simulate, train
from agent.core.cli import usage_errors


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
    r.set_defaults(handler=usage_errors(replay))

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
    e.set_defaults(handler=usage_errors(evaluate))

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
    rep.set_defaults(handler=usage_errors(report))

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
