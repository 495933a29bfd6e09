"""``edge-agent sensors evaluate``: how the detectors do on labelled recordings.

Each recording is replayed through exactly what ``sensors replay`` runs
(``OfflineRunner``: the engine and the alert policy), the first N rows as the
baseline. Every later row is scored pointwise, the usual protocol of the
public benchmarks: a row is *flagged* while an alert of that machine is open
(``replay.open_spans``) and *faulty* when its label is not 0. Confusion counts
are summed over files before the rates are taken:

- F1 = TP / (TP + (FP + FN) / 2); FAR = FP / (FP + TN); MAR = FN / (FN + TP).
- A fault is one contiguous run of labelled rows after the baseline; it is
  detected when any of its rows is flagged, and its detection delay is the
  time from its first row to its first flagged row. A fault that begins while
  an alert is already open is counted apart (``faults_in_alarm``) and left out
  of the mean delay: its zero delay would flatter a detector that never clears.
- A false alert is an alert that opens on a row after the baseline that is not
  in a fault; false alerts per day divide their count by the non-fault time
  after the baseline. Alerts that open during the baseline are counted apart
  (``baseline_alerts``): nothing should alert while the machine is learning.

Per detector (``--per-detector``): each detector runs alone and only its own
``anomaly`` alerts count; the ``checks`` row is the quality checks
(stuck/dropout/limit) of the full run alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import BadRequestError
from agent.sensors.alerts import LEVEL_RANK
from agent.sensors.csvfile import read_csv
from agent.sensors.replay import (
    REPLAY_BATCH,
    OfflineRunner,
    Recording,
    Span,
    flagged,
    open_spans,
    prepare,
)
from agent.sensors.spec import DETECTORS, MachineSpec, machine_from_columns

#: label columns tried, in order, when none is named
DEFAULT_LABELS = ("anomaly", "is_anomaly", "label")
DEFAULT_LEARN = 400
SYSTEM = "system"
CHECKS = "checks"


@dataclass
class Score:
    """Counts for one file (or a sum of files); the rates are derived, never summed."""

    rows: int = 0
    baseline_rows: int = 0
    scored_rows: int = 0
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    faults: int = 0
    faults_detected: int = 0
    faults_in_alarm: int = 0  # began while an alert was already open (left out of the delays)
    delays_s: list[float] = field(default_factory=list)
    false_alerts: int = 0
    non_fault_s: float = 0.0
    alerts: int = 0
    baseline_alerts: int = 0
    max_level: str | None = None

    def add(self, other: Score) -> None:
        for f in fields(self):
            if f.name == "max_level":
                self.max_level = _higher(self.max_level, other.max_level)
            elif f.name == "delays_s":
                self.delays_s += other.delays_s
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def f1(self) -> float | None:
        d = self.tp + (self.fp + self.fn) / 2
        return self.tp / d if d else None

    @property
    def far(self) -> float | None:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else None

    @property
    def mar(self) -> float | None:
        return self.fn / (self.fn + self.tp) if self.fn + self.tp else None

    @property
    def mean_delay_s(self) -> float | None:
        return float(np.mean(self.delays_s)) if self.delays_s else None

    @property
    def false_alerts_per_day(self) -> float | None:
        return self.false_alerts / (self.non_fault_s / 86400.0) if self.non_fault_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["delays_s"] = [round(x, 3) for x in self.delays_s]
        d["non_fault_s"] = round(self.non_fault_s, 3)
        for name in ("f1", "far", "mar", "mean_delay_s", "false_alerts_per_day"):
            v = getattr(self, name)
            d[name] = None if v is None else round(v, 4)
        return d


def _higher(a: str | None, b: str | None) -> str | None:
    if a is None or (b is not None and LEVEL_RANK.get(b, -1) > LEVEL_RANK.get(a, -1)):
        return b
    return a


def score(ts: np.ndarray, faulty: np.ndarray, learn: int, spans: list[Span]) -> Score:
    """Score one replay: ``faulty`` per row (labels), ``learn`` baseline rows, the alerts' spans."""
    n = len(ts)
    every = flagged(ts, spans)
    flags = every[learn:]
    truth = faulty[learn:]
    out = Score(rows=n, baseline_rows=learn, scored_rows=n - learn)
    out.tp = int((flags & truth).sum())
    out.fp = int((flags & ~truth).sum())
    out.tn = int((~flags & ~truth).sum())
    out.fn = int((~flags & truth).sum())
    tsc = ts[learn:]
    if len(tsc) > 1:
        period = float(np.median(np.diff(tsc)))
        out.non_fault_s = float((~truth).sum()) * period
    # contiguous runs of faulty rows: their first and one-past-last index
    edges = np.diff(np.concatenate([[0], truth.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        out.faults += 1
        hit = np.flatnonzero(flags[a:b])
        if len(hit):
            out.faults_detected += 1
            if learn + a > 0 and every[learn + a - 1]:
                out.faults_in_alarm += 1
            else:
                out.delays_s.append(float(tsc[a + hit[0]] - tsc[a]))
    first_scored = float(tsc[0]) if len(tsc) else math.inf
    for span in spans:
        out.alerts += 1
        out.max_level = _higher(out.max_level, span.level)
        if span.start < first_scored:
            out.baseline_alerts += 1
            continue
        i = int(np.searchsorted(tsc, span.start, side="left"))
        if i < len(truth) and not truth[i]:
            out.false_alerts += 1
    return out


@dataclass
class FileResult:
    file: str
    label_column: str | None
    channels: list[str]
    scores: dict[str, Score]  # SYSTEM, and per detector when asked
    skipped_labels: list[str] = field(default_factory=list)  # set aside by their name

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "label_column": self.label_column,
            "channels": self.channels,
            **self.scores[SYSTEM].to_dict(),
            "per_detector": {k: v.to_dict() for k, v in self.scores.items() if k != SYSTEM},
        }


def load(path: str, label_column: str | None, all_normal: bool) -> tuple[Recording, str | None, list[str]]:
    """The recording, the label column used, and the label columns set aside by their name."""
    data = read_csv(path, [label_column] if label_column else ())
    column = label_column
    if column is None and not all_normal:
        lower = {k.lower(): k for k in data.labels}
        column = next((lower[n] for n in DEFAULT_LABELS if n in lower), None)
        if column is None:
            raise BadRequestError(
                f"{path} has no label column ({', '.join(DEFAULT_LABELS)}); name it with --label-column, "
                "or pass --all-normal for a recording without faults"
            )
    skipped = [c for c in data.skipped_by_name if c != column]
    return prepare(data), (None if all_normal else column), skipped


def evaluate_file(
    path: str,
    *,
    label_column: str | None = None,
    learn: int = DEFAULT_LEARN,
    detectors: tuple[str, ...] | None = None,
    per_detector: bool = False,
    all_normal: bool = False,
    machine: MachineSpec | None = None,
    notice: Callable[[str], None] = lambda msg: None,
) -> FileResult:
    """Replay and score one recording; ``machine``: a configured machine's settings instead of the defaults."""
    rec, column, skipped = load(path, label_column, all_normal)
    if machine is not None:
        extra = _select_channels(rec, machine, path)
        if extra:
            notice(f"{path}: columns {', '.join(extra)} are not channels of {machine.name}: ignored")
    n = len(rec.ts)
    if learn >= n:
        raise BadRequestError(f"{path} has {n} rows; --learn {learn} leaves nothing to score")
    faulty = rec.labels[column] if column else np.zeros(n)
    faulty = (faulty != 0) & ~np.isnan(faulty)
    if column and faulty[:learn].any():
        notice(
            f"{path}: {int(faulty[:learn].sum())} labelled rows fall in the {learn}-row baseline "
            "(the detectors learn them as normal)"
        )
    if machine is not None:  # the recording's own rate: it is what the readings arrive at
        spec = replace(machine, learn_rows=learn, rate_hz=rec.rate_hz)
    else:
        spec = machine_from_columns(Path(path).stem, rec.channels, learn_rows=learn, rate_hz=rec.rate_hz)
    runs: dict[str, Score] = {}
    system = replay_transitions(spec, rec, detectors)
    runs[SYSTEM] = score(rec.ts, faulty, learn, open_spans(system))
    if per_detector:
        names = detectors if detectors is not None else tuple(spec.detectors)
        for name in names:
            transitions = replay_transitions(spec, rec, (name,))
            runs[name] = score(rec.ts, faulty, learn, open_spans(transitions, _is_anomaly))
        runs[CHECKS] = score(rec.ts, faulty, learn, open_spans(system, lambda c: not _is_anomaly(c)))
    return FileResult(path, column, rec.channels, runs, skipped)


def _select_channels(rec: Recording, machine: MachineSpec, path: str) -> list[str]:
    """Keep the machine's channels, in its order; the other columns are returned (ignored)."""
    missing = [c for c in machine.channel_names if c not in rec.channels]
    if missing:
        raise BadRequestError(
            f"{path} lacks channel(s) {', '.join(missing)} of machine {machine.name}; "
            f"its columns are {', '.join(rec.channels)}"
        )
    extra = [c for c in rec.channels if c not in machine.channel_names]
    rec.X = rec.X[:, [rec.channels.index(c) for c in machine.channel_names]]
    rec.channels = list(machine.channel_names)
    return extra


def _is_anomaly(condition: str) -> bool:
    return condition == "anomaly"


def replay_transitions(spec: Any, rec: Recording, detectors: tuple[str, ...] | None) -> list[Any]:
    runner = OfflineRunner(spec, detectors=detectors)
    for start in range(0, len(rec.ts), REPLAY_BATCH):
        runner.feed(rec.ts[start : start + REPLAY_BATCH], rec.X[start : start + REPLAY_BATCH])
    return runner.result.transitions


def parse_detectors(text: str) -> tuple[str, ...] | None:
    names = tuple(d.strip() for d in text.split(",") if d.strip())
    bad = [d for d in names if d not in DETECTORS]
    if bad:
        raise BadRequestError(f"--detectors: unknown {', '.join(bad)}; choose from {', '.join(DETECTORS)}")
    return names or None


def totals(results: Sequence[FileResult]) -> dict[str, Score]:
    """Counts summed over files, per variant (the rates then come from the sums)."""
    out: dict[str, Score] = {}
    for r in results:
        for name, s in r.scores.items():
            out.setdefault(name, Score()).add(s)
    return out


# ---------------------------------------------------------------- printing


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def row_cells(name: str, s: Score) -> list[str]:
    return [
        name,
        str(s.scored_rows),
        str(s.tp),
        str(s.fp),
        str(s.tn),
        str(s.fn),
        _num(s.f1),
        _pct(s.far),
        _pct(s.mar),
        f"{s.faults_detected}/{s.faults}",
        str(s.faults_in_alarm),
        _num(s.mean_delay_s, ".1f"),
        str(s.false_alerts),
        _num(s.false_alerts_per_day, ".1f"),
        str(s.baseline_alerts),
        s.max_level or "-",
    ]


HEADERS = [
    "",
    "scored",
    "TP",
    "FP",
    "TN",
    "FN",
    "F1",
    "FAR %",
    "MAR %",
    "faults",
    "in alarm",
    "delay s",
    "false",
    "false/day",
    "baseline",
    "max level",
]


def render(results: Sequence[FileResult], total: dict[str, Score]) -> str:
    """The figures as tables for a terminal: per file and summed, then per detector when run."""
    import os.path

    from agent.cli.output import table

    names = [r.file for r in results]
    out = []
    common = os.path.commonpath([os.path.dirname(n) or "." for n in names]) if len(names) > 1 else ""
    if common and common != ".":
        names = [os.path.relpath(n, common) for n in names]
        out.append(f"in {common}:")
    rows = [row_cells(n, r.scores[SYSTEM]) for n, r in zip(names, results, strict=True)]
    if len(results) > 1:
        rows.append(row_cells("total", total[SYSTEM]))
    out.append(table(rows, ["file", *HEADERS[1:]]))
    variants = [k for k in total if k != SYSTEM]
    if variants:
        rows = [row_cells(k, total[k]) for k in variants] + [row_cells("all (system)", total[SYSTEM])]
        out += ["", table(rows, ["detector (summed over files)", *HEADERS[1:]])]
    out.append(
        "\nflagged = an alert open at the row; FAR = FP/(FP+TN); MAR = FN/(FN+TP); faults = runs of "
        "labelled rows; in alarm = faults that began with an alert already open (not in the delay); "
        "false = alerts opened outside faults; baseline = alerts opened while learning"
    )
    return "\n".join(out)
