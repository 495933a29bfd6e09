"""The numbers of a report, computed from the daemon's store; no rendering here.

Windows end at ``end`` (now by default): ``shift`` the 8 hours before it,
``daily`` 24 hours, ``weekly`` 7 days. An alert belongs to the window when it
*opened* in it (``opened_at``), as in ``sensors report``.

- time to acknowledge / to clear: ``acked_at - opened_at`` and
  ``cleared_at - opened_at`` of the window's alerts that were; median and
  90th percentile in seconds (linear interpolation between ranks, as
  ``numpy.percentile`` does by default), one decimal;
- availability of a machine: the share of the window with no Major or
  Critical alert open on it (an alert still open counts until ``end``);
- root-cause channels: how many of the window's alerts name each channel
  among their top contributing channels;
- early warnings: alerts that opened at Warning or Minor; "came true" when
  the same alert later reached Major or Critical;
- voice: turns, how each was answered, and the speech-end-to-first-audio
  latency percentiles (p50, p90, p99), in ms;
- box health: from the ``report.health`` samples.

The trend series are aggregated in SQL (min/mean/max per bucket, about 200
buckets per chart) so a day of 1 Hz samples never crosses into Python row by
row.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from agent.errors import BadRequestError
from agent.store import Store

WINDOWS = {"shift": 8 * 3600.0, "daily": 86400.0, "weekly": 7 * 86400.0}
LEVELS = ("warning", "minor", "major", "critical")
MAJOR = frozenset({"major", "critical"})
#: trend charts in one report, and buckets per chart
MAX_CHARTS = 4
BUCKETS = 200


def percentile(values: list[float], q: float) -> float | None:
    """``numpy.percentile(values, q)`` (linear), without numpy; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _r(value: float | None, nd: int = 1) -> float | None:
    return None if value is None else round(value, nd)


@dataclass(frozen=True)
class Window:
    kind: str
    start: float
    end: float

    @classmethod
    def of(cls, kind: str, end: float | None = None) -> Window:
        if kind not in WINDOWS:
            raise BadRequestError(f"report kind {kind!r}: use one of {', '.join(WINDOWS)}")
        end = time.time() if end is None else end
        return cls(kind, end - WINDOWS[kind], end)

    @property
    def hours(self) -> float:
        return (self.end - self.start) / 3600.0


def _alerts(store: Store, w: Window, machine: str | None) -> list[dict[str, Any]]:
    rows = store.query(
        "SELECT id, source, level, state, opened_at, cleared_at, acked_at, data FROM alerts "
        "WHERE opened_at < ? AND (opened_at >= ? OR cleared_at IS NULL OR cleared_at > ?) ORDER BY opened_at",
        (w.end, w.start, w.start),
    )
    out = []
    for row in rows:
        data = json.loads(row.pop("data") or "{}")
        row["machine"] = data.get("machine") or row["source"].split("/", 1)[-1]
        row["channels"] = [c.get("channel") for c in data.get("channels") or [] if c.get("channel")]
        history = data.get("history") or []
        row["first_level"] = history[0].get("level", row["level"]) if history else row["level"]
        if machine is None or row["machine"] == machine:
            out.append(row)
    return out


def alert_figures(alerts: list[dict[str, Any]], w: Window) -> dict[str, Any]:
    opened = [a for a in alerts if a["opened_at"] >= w.start]
    by_level = {lv: sum(1 for a in opened if a["level"] == lv) for lv in LEVELS}
    by_machine: dict[str, dict[str, int]] = {}
    for a in opened:
        m = by_machine.setdefault(a["machine"], {lv: 0 for lv in LEVELS} | {"total": 0})
        m[a["level"]] = m.get(a["level"], 0) + 1
        m["total"] += 1
    ack = [a["acked_at"] - a["opened_at"] for a in opened if a["acked_at"] is not None]
    clear = [a["cleared_at"] - a["opened_at"] for a in opened if a["cleared_at"] is not None]
    causes: dict[str, int] = {}
    for a in opened:
        for ch in a["channels"]:
            key = f"{a['machine']}/{ch}"
            causes[key] = causes.get(key, 0) + 1
    early = [a for a in opened if a["first_level"] in ("warning", "minor")]
    true = sum(1 for a in early if a["level"] in MAJOR)
    return {
        "total": len(opened),
        "by_level": by_level,
        "by_machine": dict(sorted(by_machine.items())),
        "open_at_end": sum(1 for a in alerts if a["cleared_at"] is None or a["cleared_at"] > w.end),
        "response": {
            "acked": len(ack),
            "never_acked": len(opened) - len(ack),
            "ack_p50_s": _r(percentile(ack, 50)),
            "ack_p90_s": _r(percentile(ack, 90)),
            "cleared": len(clear),
            "clear_p50_s": _r(percentile(clear, 50)),
            "clear_p90_s": _r(percentile(clear, 90)),
        },
        "root_causes": [
            {"channel": k, "alerts": n} for k, n in sorted(causes.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        ],
        "early_warnings": {"total": len(early), "came_true": true, "did_not": len(early) - true},
    }


def availability(alerts: list[dict[str, Any]], machines: list[str], w: Window) -> dict[str, float]:
    """Percent of the window with no Major/Critical alert open, per machine (overlaps merged)."""
    out = {}
    for m in machines:
        spans = sorted(
            (max(a["opened_at"], w.start), min(a["cleared_at"] or w.end, w.end))
            for a in alerts
            if a["machine"] == m and a["level"] in MAJOR
        )
        down, cur_s, cur_e = 0.0, None, None
        for s, e in spans:
            if e <= s:
                continue
            if cur_e is None or s > cur_e:
                if cur_e is not None:
                    down += cur_e - cur_s  # type: ignore[operator]
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        if cur_e is not None:
            down += cur_e - cur_s  # type: ignore[operator]
        out[m] = round(100.0 * (1 - down / (w.end - w.start)), 1)
    return out


def voice_figures(store: Store, w: Window) -> dict[str, Any]:
    rows = store.query("SELECT answer, total_ms FROM report_voice WHERE ts >= ? AND ts < ?", (w.start, w.end))
    lat = [r["total_ms"] for r in rows if r["total_ms"] is not None]
    by: dict[str, int] = {}
    for r in rows:
        by[r["answer"] or "unknown"] = by.get(r["answer"] or "unknown", 0) + 1
    return {
        "turns": len(rows),
        "by_answer": dict(sorted(by.items())),
        "latency_ms": {
            "p50": _r(percentile(lat, 50)),
            "p90": _r(percentile(lat, 90)),
            "p99": _r(percentile(lat, 99)),
            "max": _r(max(lat)) if lat else None,
        },
    }


def health_figures(store: Store, w: Window) -> dict[str, Any]:
    row = store.query(
        "SELECT COUNT(*) AS samples, MAX(temp_c) AS temp_max_c, AVG(temp_c) AS temp_mean_c,"
        " AVG(throttled) AS throttled, MAX(mem_pct) AS mem_max_pct, AVG(cpu_pct) AS cpu_mean_pct,"
        " MAX(models_loaded) AS models_loaded_max FROM report_health WHERE ts >= ? AND ts < ?",
        (w.start, w.end),
    )[0]
    thr = row.pop("throttled")
    row["throttled_pct"] = None if thr is None else round(100.0 * thr, 1)
    for k in ("temp_max_c", "temp_mean_c", "mem_max_pct", "cpu_mean_pct"):
        row[k] = _r(row[k])
    return row


def job_figures(store: Store, w: Window) -> dict[str, Any]:
    rows = store.query(
        "SELECT state, COUNT(*) AS n FROM scheduler_runs WHERE queued_at >= ? AND queued_at < ? GROUP BY state",
        (w.start, w.end),
    )
    by = {r["state"]: r["n"] for r in rows}
    return {
        "runs": sum(by.get(s, 0) for s in ("ok", "failed", "timeout")),
        "failed": by.get("failed", 0) + by.get("timeout", 0),
    }


def trends(
    store: Store, alerts: list[dict[str, Any]], w: Window, machine: str | None
) -> list[dict[str, Any]]:
    """Min/mean/max series of the channels behind the window's alerts, with each alert as a band."""
    keys: list[tuple[str, str]] = []
    for a in alerts:
        for ch in a["channels"]:
            if (a["machine"], ch) not in keys:
                keys.append((a["machine"], ch))
    if not keys:  # no alerts: the first channels recorded, so the report still shows the trend
        sql = "SELECT DISTINCT machine, channel FROM report_samples WHERE ts >= ? AND ts < ?"
        params: tuple[Any, ...] = (w.start, w.end)
        if machine is not None:
            sql, params = sql + " AND machine = ?", (*params, machine)
        keys = [(r["machine"], r["channel"]) for r in store.query(sql + " LIMIT 2", params)]
    bucket = max(1.0, (w.end - w.start) / BUCKETS)
    out = []
    for m, ch in keys[:MAX_CHARTS]:
        rows = store.execute(
            "SELECT CAST((ts - ?) / ? AS INTEGER) AS b, MIN(value), AVG(value), MAX(value), COUNT(value)"
            " FROM report_samples WHERE machine = ? AND channel = ? AND ts >= ? AND ts < ? GROUP BY b ORDER BY b",
            (w.start, bucket, m, ch, w.start, w.end),
        ).fetchall()
        bands = [
            {
                "start": max(a["opened_at"], w.start),
                "end": min(a["cleared_at"] or w.end, w.end),
                "level": a["level"],
            }
            for a in alerts
            if a["machine"] == m and ch in a["channels"]
        ]
        out.append(
            {
                "machine": m,
                "channel": ch,
                "bucket_s": bucket,
                "readings": sum(r[4] for r in rows),
                "points": [[w.start + (r[0] + 0.5) * bucket, r[1], r[2], r[3]] for r in rows if r[4]],
                "bands": bands,
            }
        )
    return out


def collect(
    store: Store, kind: str, *, machine: str | None = None, end: float | None = None, device: str = ""
) -> dict[str, Any]:
    """Every figure of a report (without the summary paragraph and the charts' images)."""
    w = Window.of(kind, end)
    alerts = _alerts(store, w, machine)
    figures = alert_figures(alerts, w)
    machines = sorted({a["machine"] for a in alerts} | ({machine} if machine else set()))
    if machine is None:
        machines = sorted(
            set(machines)
            | {
                r["machine"]
                for r in store.query("SELECT DISTINCT machine FROM report_samples WHERE ts >= ?", (w.start,))
            }
        )
    return {
        "kind": kind,
        "device": device,
        "machine": machine,
        "window": {"start": w.start, "end": w.end, "hours": round(w.hours, 2)},
        "generated_at": time.time(),
        "alerts": figures,
        "availability_pct": availability(alerts, machines, w),
        "voice": voice_figures(store, w),
        "health": health_figures(store, w),
        "jobs": job_figures(store, w),
        "trends": trends(store, alerts, w, machine),
    }
