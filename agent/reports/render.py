"""A built report as Markdown, HTML (readable on a phone), JSON, or PDF (WeasyPrint from the HTML).

One HTML document serves the browser, the phone and the PDF: a single
column, tables that scroll sideways on a narrow screen instead of
overflowing, charts as embedded PNGs scaled to the width. Sentences the
local model wrote are marked (a side rule and "model" badge in HTML, ``[model]``
in Markdown); template sentences are not.
"""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime
from typing import Any

from agent.errors import BadRequestError, UnavailableError
from agent.reports.charts import BAND_COLOURS

FORMATS = ("pdf", "html", "md", "json")


def _t(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _v(value: Any) -> str:
    return "–" if value is None else str(value)


def title(report: dict[str, Any]) -> str:
    w = report["window"]
    scope = report["machine"] or report["device"] or "all machines"
    return f"{report['kind'].capitalize()} report — {scope} — {_t(w['start'])} to {_t(w['end'])}"


def _sections(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(heading, columns, rows) of every table after the key figures."""
    a, r = report["alerts"], report["alerts"]["response"]
    levels = list(a["by_level"])
    machines = [
        [m, *[c.get(lv, 0) for lv in levels], c["total"], report["availability_pct"].get(m)]
        for m, c in a["by_machine"].items()
    ]
    for m, pct in report["availability_pct"].items():
        if m not in a["by_machine"]:
            machines.append([m, *[0 for _ in levels], 0, pct])
    v, h = report["voice"], report["health"]
    return [
        ("Alerts by machine and level", ["machine", *levels, "total", "availability %"], machines),
        (
            "Response",
            ["", "count", "median s", "p90 s"],
            [
                ["acknowledged", r["acked"], r["ack_p50_s"], r["ack_p90_s"]],
                ["cleared", r["cleared"], r["clear_p50_s"], r["clear_p90_s"]],
                ["never acknowledged", r["never_acked"], None, None],
            ],
        ),
        (
            "Top root-cause channels",
            ["channel", "alerts"],
            [[c["channel"], c["alerts"]] for c in a["root_causes"]],
        ),
        (
            "Early warnings",
            ["warnings", "came true", "did not"],
            [
                [
                    a["early_warnings"]["total"],
                    a["early_warnings"]["came_true"],
                    a["early_warnings"]["did_not"],
                ]
            ],
        ),
        (
            "Voice",
            ["turns", "answered by", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            [
                [
                    v["turns"],
                    ", ".join(f"{k} {n}" for k, n in v["by_answer"].items()),
                    *(v["latency_ms"][k] for k in ("p50", "p90", "p99", "max")),
                ]
            ],
        ),
        (
            "Box health",
            ["samples", "max °C", "mean °C", "throttled %", "peak memory %", "mean CPU %", "models loaded"],
            [
                [
                    h["samples"],
                    h["temp_max_c"],
                    h["temp_mean_c"],
                    h["throttled_pct"],
                    h["mem_max_pct"],
                    h["cpu_mean_pct"],
                    h["models_loaded_max"],
                ]
            ],
        ),
        ("Scheduled jobs", ["runs", "failed"], [[report["jobs"]["runs"], report["jobs"]["failed"]]]),
    ]


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# {title(report)}", "", "## Summary", ""]
    para = [
        s["text"] + (" [model]" if s["source"] == "model" else "") for s in report["summary"]["sentences"]
    ]
    lines.append(" ".join(para))
    if report["summary"]["model"]:
        lines += [
            "",
            f"_Sentences marked [model] were written by the local model {report['summary']['model']} "
            "from the key figures alone; every number in them was checked against the table._",
        ]
    lines += ["", "## Key figures", "", "| figure | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in report["table"]]
    for heading, cols, rows in _sections(report):
        lines += ["", f"## {heading}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_v(c) for c in row) + " |" for row in rows] or ["| (none) |"]
    if report["trends"]:
        lines += ["", "## Trends", ""]
        for s in report["trends"]:
            bands = (
                ", ".join(f"{b['level']} {_t(b['start'])}–{_t(b['end'])}" for b in s["bands"]) or "no alerts"
            )
            lines.append(f"- {s['machine']}/{s['channel']}: {s['readings']} readings; alerts: {bands}")
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:'DejaVu Sans',system-ui,sans-serif;margin:0 auto;max-width:52rem;padding:1rem;color:#1c2833;
line-height:1.45;font-size:15px}
h1{font-size:1.35rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem;border-bottom:1px solid #d5d8dc}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:.9rem;min-width:60%}td,th{padding:.3rem .55rem;border-bottom:1px solid #e5e8e8;
text-align:left;white-space:nowrap}th{background:#f4f6f6}
img{max-width:100%;height:auto;display:block;margin:.4rem 0}
.model{border-left:3px solid #2e86c1;padding-left:.35rem;background:#eaf2f8}
.badge{font-size:.7rem;background:#2e86c1;color:#fff;border-radius:3px;padding:0 .25rem;margin-left:.2rem}
.note{font-size:.8rem;color:#566573}.legend span{display:inline-block;width:.9rem;height:.9rem;margin:0 .25rem 0 .6rem;
vertical-align:middle}
@page{size:A4;margin:14mm}
"""


def _table_html(cols: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_v(c))}</td>" for c in row) + "</tr>" for row in rows)
    body = body or f"<tr><td colspan='{len(cols)}'>none</td></tr>"
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


def to_html(report: dict[str, Any], charts: list[bytes]) -> str:
    t = html.escape(title(report))
    sentences = []
    for s in report["summary"]["sentences"]:
        text = html.escape(s["text"])
        sentences.append(
            f"<span class='model'>{text}<span class='badge'>model</span></span>"
            if s["source"] == "model"
            else text
        )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{t}</title><style>{_CSS}</style></head><body>",
        f"<h1>{t}</h1><h2>Summary</h2><p>{' '.join(sentences)}</p>",
    ]
    if report["summary"]["model"]:
        parts.append(
            f"<p class='note'>Marked sentences were written by the local model "
            f"{html.escape(report['summary']['model'])} from the key figures alone; every number in them "
            "was checked against the table below.</p>"
        )
    if report["trends"]:
        legend = "".join(f"<span style='background:{c}'></span>{lv}" for lv, c in BAND_COLOURS.items())
        parts.append(
            f"<h2>Trends of the channels behind the alerts</h2><p class='note legend'>Alert bands:{legend}</p>"
        )
        for series, png in zip(report["trends"], charts, strict=False):
            b64 = base64.b64encode(png).decode()
            alt = html.escape(f"trend of {series['machine']}/{series['channel']}")
            parts.append(f"<img alt='{alt}' src='data:image/png;base64,{b64}'>")
    parts.append(
        "<h2>Key figures</h2>" + _table_html(["figure", "value"], [list(r) for r in report["table"]])
    )
    for heading, cols, rows in _sections(report):
        parts.append(f"<h2>{html.escape(heading)}</h2>" + _table_html(cols, rows))
    parts.append(f"<p class='note'>Generated {_t(report['generated_at'])} by edge-agent.</p></body></html>")
    return "".join(parts)


def to_pdf(report: dict[str, Any], charts: list[bytes]) -> bytes:
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as exc:
        raise UnavailableError(
            f"PDF needs WeasyPrint and pango ({exc}); install 'edge-agent[reports]' and Debian's "
            "libpango-1.0-0, or use --format html"
        ) from None
    return bytes(HTML(string=to_html(report, charts)).write_pdf())


def render(report: dict[str, Any], fmt: str, charts: list[bytes]) -> bytes:
    if fmt not in FORMATS:
        raise BadRequestError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "pdf":
        return to_pdf(report, charts)
    if fmt == "html":
        return to_html(report, charts).encode()
    if fmt == "md":
        return to_markdown(report).encode()
    return to_json(report).encode()
