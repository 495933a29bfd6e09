"""Reading a machine's recorded CSV: delimiter, time column and timestamp format detected.

Rules (``edge-agent sensors replay``): a header row; ``,`` or ``;`` as the
delimiter (whichever splits the header into more fields); the time is the
column named timestamp/datetime/time/date (any case), else the first column;
every other column is a numeric channel. Times may be ISO 8601 (with or
without a zone; naive means UTC), or epoch seconds or milliseconds. Cells that
are not numbers become missing values (NaN), counted per column.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from agent.errors import BadRequestError

TIME_NAMES = ("timestamp", "datetime", "time", "date", "ts")


@dataclass
class CsvData:
    channels: list[str]
    ts: list[float]
    rows: list[list[float]]
    time_column: str
    delimiter: str
    bad_cells: Counter[str] = field(default_factory=Counter)
    bad_times: int = 0


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


def read_csv(path: str | Path) -> CsvData:
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
        chan_idx = [i for i in range(len(header)) if i != time_idx]
        data = CsvData([header[i] for i in chan_idx], [], [], header[time_idx], delim)
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
    if not data.ts:
        raise BadRequestError(f"{path} has no data rows with a readable time in column {data.time_column!r}")
    return data
