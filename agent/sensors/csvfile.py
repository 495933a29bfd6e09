"""Reading a machine's recorded CSV: delimiter, time column and timestamp format detected.

Rules (``edge-agent sensors replay``): a header row; ``,`` or ``;`` as the
delimiter (whichever splits the header into more fields); the time is the
column named timestamp/datetime/time/date (any case), else the first column;
every other column is a numeric channel, except label columns. Times may be
ISO 8601 (with or without a zone; naive means UTC), or epoch seconds or
milliseconds. Cells that are not numbers become missing values (NaN), counted
per column.

Label columns (the ground truth of a labelled recording) are never channels:
a detector that saw its own answer would score perfectly and mean nothing.
Columns named ``anomaly``, ``label``, ``changepoint`` or ``is_anomaly`` (any
case) are set aside by default, and the caller may name more
(``--label-column``). Their values are kept in ``CsvData.labels``: a number
as it is, any other non-empty text (the simulator writes the fault kind) as 1,
an empty cell as 0.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from agent.errors import BadRequestError

TIME_NAMES = ("timestamp", "datetime", "time", "date", "ts")
#: columns that hold labels, not readings: skipped as channels unless asked otherwise
LABEL_NAMES = ("anomaly", "label", "changepoint", "is_anomaly")


@dataclass
class CsvData:
    channels: list[str]
    ts: list[float]
    rows: list[list[float]]
    time_column: str
    delimiter: str
    bad_cells: Counter[str] = field(default_factory=Counter)
    bad_times: int = 0
    #: label column -> one value per kept row (see the module docstring)
    labels: dict[str, list[float]] = field(default_factory=dict)
    #: label columns set aside because of their name (the caller tells the user)
    skipped_by_name: list[str] = field(default_factory=list)

    def label_flags(self, column: str) -> list[bool]:
        """The rows where ``column`` marks an anomaly (a value other than 0)."""
        return [v != 0.0 and v == v for v in self.labels[column]]


def _delimiter(header: str) -> str:
    return ";" if header.count(";") > header.count(",") else ","


def parse_time(text: str) -> float:
    text = text.strip()
    try:
        v = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(v):
            raise ValueError(text)
        return v / 1000.0 if v > 1e11 else v  # epoch milliseconds
    iso = text.replace("Z", "+00:00")
    if " " in iso and "T" not in iso:
        iso = iso.replace(" ", "T", 1)
    dt = datetime.fromisoformat(iso)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _label_value(cell: str) -> float:
    cell = cell.strip()
    if not cell:
        return 0.0
    try:
        v = float(cell.replace(",", "."))
    except ValueError:
        return 0.0 if cell.lower() in ("false", "normal", "no") else 1.0
    return v if math.isfinite(v) else 0.0


def read_csv(
    path: str | Path, label_columns: Sequence[str] = (), *, skip_label_names: bool = True
) -> CsvData:
    """Read a recording. ``label_columns``: columns that hold labels (an error names the
    columns there are when one is absent); with ``skip_label_names``, the LABEL_NAMES are too.
    """
    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise BadRequestError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        header_line = fh.readline()
        if not header_line.strip():
            raise BadRequestError(f"{path} is empty; expected a header row")
        delim = _delimiter(header_line)
        header = [h.strip() for h in next(csv.reader([header_line], delimiter=delim))]
        if len(header) < 2:
            raise BadRequestError(
                f"{path}: the header has {len(header)} column; expected a time column and channels"
            )
        lower = [h.lower() for h in header]
        time_idx = next((lower.index(n) for n in TIME_NAMES if n in lower), 0)
        for name in label_columns:
            if name not in header or header.index(name) == time_idx:
                others = ", ".join(h for i, h in enumerate(header) if i != time_idx)
                raise BadRequestError(
                    f"{path}: no label column {name!r}; the columns are {others} "
                    "(name the one holding the labels with --label-column)"
                )
        label_idx = [header.index(n) for n in label_columns]
        by_name = [
            i
            for i, h in enumerate(lower)
            if skip_label_names and h in LABEL_NAMES and i != time_idx and i not in label_idx
        ]
        label_idx += by_name
        chan_idx = [i for i in range(len(header)) if i != time_idx and i not in label_idx]
        if not chan_idx:
            raise BadRequestError(f"{path}: no channel columns left besides the time and the labels")
        data = CsvData([header[i] for i in chan_idx], [], [], header[time_idx], delim)
        data.skipped_by_name = [header[i] for i in by_name]
        data.labels = {header[i]: [] for i in label_idx}
        for record in csv.reader(fh, delimiter=delim):
            if not record or all(not c.strip() for c in record):
                continue
            try:
                t = parse_time(record[time_idx])
            except (ValueError, IndexError):
                data.bad_times += 1
                continue
            values = []
            for i in chan_idx:
                cell = record[i].strip() if i < len(record) else ""
                try:
                    v = float(cell.replace(",", ".") if delim == ";" else cell)
                except ValueError:
                    v = math.nan
                if not math.isfinite(v):
                    data.bad_cells[header[i]] += 1
                    v = math.nan
                values.append(v)
            data.ts.append(t)
            data.rows.append(values)
            for i in label_idx:
                data.labels[header[i]].append(_label_value(record[i]) if i < len(record) else 0.0)
    if not data.ts:
        raise BadRequestError(f"{path} has no data rows with a readable time in column {data.time_column!r}")
    return data
