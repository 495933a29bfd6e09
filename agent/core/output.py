"""Output for people (tables, local times, short ids) and JSON for scripts: for edge-agent and edge-hub."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table with aligned columns (no box-drawing: it must survive journald)."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def local_time(ts: float | None) -> str:
    """A Unix time as this machine's local date and time, with its zone; ``-`` for none."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(ts))) if ts else "-"


#: ULIDs start with 10 characters of milliseconds: shorter starts would all look alike
MIN_SHORT_ID = 12


def short_id_width(ids: Sequence[str]) -> int:
    """The shortest start (at least MIN_SHORT_ID characters) that tells every listed id apart."""
    width = MIN_SHORT_ID
    while width < max((len(i) for i in ids), default=0) and len({i[:width] for i in ids}) < len(ids):
        width += 1
    return width
