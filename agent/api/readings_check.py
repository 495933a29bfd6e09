"""Whole-request validation of reading batches, before any row reaches the pipeline.

``POST /v1/sensors/readings`` is all or nothing: a request with one bad row
is refused (422, naming the row, e.g. ``batches[0].rows[3].values.temp``)
and none of its rows is queued. Accepting the rows before the bad one used
to leave the client unable to retry safely: the retry counted those rows as
out of order. What is checked here is the shape a client controls (types,
finite numbers); what depends on the pipeline's state (unknown machine or
channel, out of order, out of range, future) is still counted per row by
the validator and reported in the 202 answer.
"""

from __future__ import annotations

import math
from typing import Any

from agent.core.jsonbody import JsonBodyError

SHAPE = 'expected {"machine": NAME, "rows": [{"ts": SECONDS, "values": {CHANNEL: NUMBER}}]}'
#: rows in one request; bigger uploads are split by the client (each request is one transaction of work)
MAX_ROWS = 100_000


def _bad(field: str, message: str) -> JsonBodyError:
    return JsonBodyError(
        422, "invalid_reading", f"{field}: {message}; nothing in this request was accepted", field=field
    )


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _known(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise JsonBodyError(
            400,
            "bad_request",
            f"{where or 'the body'}: unknown field(s) {unknown}; allowed: {sorted(allowed)}",
            field=f"{where}.{unknown[0]}" if where else unknown[0],
        )


def check_batches(body: Any) -> None:
    """Raise JsonBodyError (400 shape, 422 a bad row) unless every row of every batch is well formed."""
    if not isinstance(body, dict):
        raise JsonBodyError(400, "bad_request", SHAPE)
    if "batches" in body:
        _known(body, {"batches"}, "")
        batches, prefix = body["batches"], "batches"
        if not isinstance(batches, list) or not batches:
            raise JsonBodyError(400, "bad_request", f"'batches' must be a non-empty list: {SHAPE}")
    else:
        batches, prefix = [body], ""
    total = 0
    for i, batch in enumerate(batches):
        where = f"{prefix}[{i}]" if prefix else ""
        dot = f"{where}." if where else ""
        if not isinstance(batch, dict) or not isinstance(batch.get("machine"), str) or not batch["machine"]:
            raise JsonBodyError(400, "bad_request", f"{where or 'the body'}: {SHAPE}", field=where or "$")
        _known(batch, {"machine", "rows"}, where)
        rows = batch.get("rows")
        if not isinstance(rows, list):
            raise JsonBodyError(
                400, "bad_request", f"{dot}rows must be a list of {{ts, values}} objects", field=f"{dot}rows"
            )
        total += len(rows)
        if total > MAX_ROWS:
            raise JsonBodyError(
                413, "request_too_large", f"more than {MAX_ROWS} rows in one request: split the upload"
            )
        for j, row in enumerate(rows):
            here = f"{dot}rows[{j}]"
            if not isinstance(row, dict):
                raise _bad(here, 'expected {"ts": SECONDS, "values": {CHANNEL: NUMBER}}')
            if not _finite_number(row.get("ts")):
                raise _bad(f"{here}.ts", "ts must be a finite number of seconds since the epoch")
            values = row.get("values")
            if not isinstance(values, dict):
                raise _bad(f"{here}.values", "values must be an object of channel: number")
            for name, value in values.items():
                if value is not None and not _finite_number(value):
                    raise _bad(
                        f"{here}.values.{name}",
                        f"{value!r:.40} is not a finite number (null marks a missing sample)",
                    )
