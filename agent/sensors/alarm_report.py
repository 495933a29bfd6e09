"""Alarm-management figures from the stored alerts, per machine (ISA-18.2 / EEMUA 191).

What an alarm-management review asks of a system, computed from the
``alerts`` table (one row per alert, so the figures hold for alerts raised
while the CLI was not watching):

- alarms per 10 minutes: the average over the window, and the peak (the most
  alerts opened in any 10-minute stretch, sliding). EEMUA 191 calls an average
  of 1 "very likely to be acceptable" and 2 "manageable"; more than 10 in the
  10 minutes after an upset is a flood.
- chattering: a condition (``anomaly``, ``stuck:CH``...) whose alerts opened
  *and cleared* 3 or more times within one minute.
- standing: alerts open for more than 24 hours (whatever ``--since`` says).
- never acknowledged: the share of the window's alerts with no acknowledgement.
- the 10 most frequent conditions.

An alert's time is its ``opened_at`` (the start of its episode). The window is
``[now - since, now]``, or from the first stored alert when no ``since`` is
given. Used by ``GET /v1/sensors/report`` and ``edge-agent sensors report``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from agent.errors import BadRequestError, StoreError

RATE_WINDOW_S = 600.0
CHATTER_COUNT = 3
CHATTER_WINDOW_S = 60.0
STANDING_S = 86400.0
TOP = 10
TARGETS = {
    "alarms_per_10min_avg": "<= 1 (EEMUA 191: very likely acceptable; 2: manageable)",
    "alarms_per_10min_peak": "<= 10 (more is a flood)",
    "chattering": "0",
    "standing": "0",
}

_SQL = "SELECT * FROM alerts WHERE opened_at >= ? OR state = 'open'"


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` or plain seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise BadRequestError(f"since {text!r}: use a positive number with s, m, h, d or w (e.g. 24h, 7d)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return float(match.group(1)) * unit


def _peak(times: list[float]) -> tuple[int, float | None]:
    """The most alerts opened in any window of RATE_WINDOW_S, and where that window starts."""
    best, at, j = 0, None, 0
    for i, t in enumerate(times):
        while times[j] <= t - RATE_WINDOW_S:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, times[j]
    return best, at


def _chatter(alerts: list[dict[str, Any]]) -> int:
    """The most alerts of one condition opened and cleared within one CHATTER_WINDOW_S."""
    done = sorted((a["opened_at"], a["cleared_at"]) for a in alerts if a.get("cleared_at") is not None)
    best = 0
    for i, (start, _) in enumerate(done):
        n = 0
        for opened, cleared in done[i:]:
            if opened > start + CHATTER_WINDOW_S:
                break
            if cleared <= start + CHATTER_WINDOW_S:
                n += 1
        best = max(best, n)
    return best


def build_report(alerts: list[dict[str, Any]], *, now: float, since_s: float | None) -> dict[str, Any]:
    """The figures for ``alerts`` (rows in the API's shape: machine, condition, opened_at, ...)."""
    start = now - since_s if since_s is not None else min((a["opened_at"] for a in alerts), default=now)
    window_s = max(now - start, 0.0)
    in_window = [a for a in alerts if a["opened_at"] >= start]
    standing_all = [a for a in alerts if a["state"] == "open" and now - a["opened_at"] > STANDING_S]
    by_machine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in in_window:
        by_machine[a["machine"]].append(a)
    for a in standing_all:
        by_machine.setdefault(a["machine"], [])
    machines = [
        _machine(name, by_machine[name], [a for a in standing_all if a["machine"] == name], window_s)
        for name in sorted(by_machine)
    ]
    counts = Counter((a["machine"], a["condition"]) for a in in_window)
    return {
        "generated_at": now,
        "since": start,
        "window_s": round(window_s, 3),
        "alarms": len(in_window),
        "targets": TARGETS,
        "machines": machines,
        "top_conditions": [
            {"machine": m, "condition": c, "count": n, "share": round(n / len(in_window), 4)}
            for (m, c), n in counts.most_common(TOP)
        ],
    }


def _machine(
    name: str, alerts: list[dict[str, Any]], standing: list[dict[str, Any]], window_s: float
) -> dict[str, Any]:
    times = sorted(a["opened_at"] for a in alerts)
    peak, peak_at = _peak(times)
    per_cond: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in alerts:
        per_cond[a["condition"]].append(a)
    chattering = []
    for cond, items in sorted(per_cond.items()):
        most = _chatter(items)
        if most >= CHATTER_COUNT:
            chattering.append({"condition": cond, "alarms": len(items), "most_in_a_minute": most})
    unacked = sum(1 for a in alerts if a.get("acked_at") is None)
    counts = Counter(a["condition"] for a in alerts)
    return {
        "machine": name,
        "alarms": len(alerts),
        "alarms_per_10min_avg": round(len(alerts) * RATE_WINDOW_S / max(window_s, RATE_WINDOW_S), 4),
        "alarms_per_10min_peak": peak,
        "peak_starts_at": peak_at,
        "chattering_conditions": len(chattering),
        "chattering_alarms": sum(c["alarms"] for c in chattering),
        "chattering": chattering,
        "standing": len(standing),
        "standing_alerts": [
            {"id": a["id"], "condition": a["condition"], "level": a["level"], "opened_at": a["opened_at"]}
            for a in standing
        ],
        "never_acked": unacked,
        "never_acked_share": round(unacked / len(alerts), 4) if alerts else None,
        "top_conditions": [{"condition": c, "count": n} for c, n in counts.most_common(TOP)],
    }


def report_from_store(store: Any, since_s: float | None, now: float | None = None) -> dict[str, Any]:
    """From the daemon's open Store (the API route; run it in a thread)."""
    from agent.sensors.sink import row_to_alert

    now = time.time() if now is None else now
    start = now - since_s if since_s is not None else 0.0
    rows = store.query(_SQL, (start,))
    return build_report([row_to_alert(r) for r in rows], now=now, since_s=since_s)


def report_from_path(path: Path, since_s: float | None, now: float | None = None) -> dict[str, Any]:
    """From the database file, read-only (the CLI when the daemon is not running): never creates it."""
    from agent.sensors.sink import row_to_alert

    now = time.time() if now is None else now
    start = now - since_s if since_s is not None else 0.0
    if not Path(path).exists():
        return build_report([], now=now, since_s=since_s) | {"note": f"no database at {path} yet"}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            cur = conn.execute(_SQL, (start,))
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return build_report([], now=now, since_s=since_s) | {"note": f"no alerts table in {path} yet"}
        raise StoreError(
            f"cannot read {path}: {exc}; run as the service's user, or start the daemon and ask it"
        ) from None
    return build_report([row_to_alert(r) for r in rows], now=now, since_s=since_s)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


def render(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    from agent.cli.output import table

    hours = report["window_s"] / 3600
    lines = [f"alerts opened since {_when(report['since'])} ({hours:.1f} h): {report['alarms']}"]
    if report.get("note"):
        lines.append(report["note"])
    if not report["machines"]:
        return "\n".join(lines)
    rows = [
        (
            m["machine"],
            m["alarms"],
            f"{m['alarms_per_10min_avg']:.2f}",
            m["alarms_per_10min_peak"],
            m["chattering_conditions"],
            m["standing"],
            "-" if m["never_acked_share"] is None else f"{100 * m['never_acked_share']:.0f} %",
        )
        for m in report["machines"]
    ]
    lines += [
        "",
        table(
            rows, ["machine", "alarms", "per 10 min", "peak 10 min", "chattering", "standing", "never acked"]
        ),
    ]
    chat = [
        (m["machine"], c["condition"], c["alarms"], c["most_in_a_minute"])
        for m in report["machines"]
        for c in m["chattering"]
    ]
    if chat:
        lines += ["", "chattering (opened and cleared >= 3 times within a minute):"]
        lines.append(table(chat, ["machine", "condition", "alarms", "most in a minute"]))
    standing = [
        (m["machine"], s["condition"], s["level"], _when(s["opened_at"]), s["id"])
        for m in report["machines"]
        for s in m["standing_alerts"]
    ]
    if standing:
        lines += ["", "standing (open over 24 h):"]
        lines.append(table(standing, ["machine", "condition", "level", "opened", "id"]))
    if report["top_conditions"]:
        top = [
            (t["machine"], t["condition"], t["count"], f"{100 * t['share']:.0f} %")
            for t in report["top_conditions"]
        ]
        lines += ["", "most frequent conditions:", table(top, ["machine", "condition", "alarms", "share"])]
    lines += ["", "targets: " + "; ".join(f"{k} {v}" for k, v in report["targets"].items())]
    return "\n".join(lines)
