"""Output for people (tables, local times, short ids) and JSON for scripts: for edge-agent and edge-hub."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table with aligned columns (no box-drawing: it must survive journald)."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def print_json_or(as_json: bool, data: Any, text: str) -> None:
    """One result: ``data`` as JSON for ``--json``, else ``text`` for people."""
    if as_json:
        print_json(data)
    else:
        print(text)


def print_listing(
    as_json: bool,
    items: Sequence[T],
    row: Callable[[T], Sequence[Any]],
    headers: Sequence[str],
    *,
    empty: str | None = None,
    data: Any = None,
) -> None:
    """A list: ``data`` (default: ``items``) as JSON for ``--json``; else a table of ``row(item)`` under
    ``headers``, or the line ``empty`` when there are no items (without it, the headers alone)."""
    if as_json:
        print_json(items if data is None else data)
    elif not items and empty is not None:
        print(empty)
    else:
        print(table([row(item) for item in items], headers))


def local_time(ts: float | None) -> str:
    """A Unix time as this machine's local date and time, with its zone; ``-`` for none."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(ts))) if ts else "-"


def local_minute(ts: float | None, none: str = "-") -> str:
    """A Unix time as this machine's local date and time to the minute; ``none`` for none."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else none


#: ULIDs start with 10 characters of milliseconds: shorter starts would all look alike
MIN_SHORT_ID = 12


def short_id_width(ids: Sequence[str]) -> int:
    """The shortest start (at least MIN_SHORT_ID characters) that tells every listed id apart."""
    width = MIN_SHORT_ID
    while width < max((len(i) for i in ids), default=0) and len({i[:width] for i in ids}) < len(ids):
        width += 1
    return width
