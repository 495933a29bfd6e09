"""Build a report end to end: figures from the store, the key table, the summary, the charts.

``build_report`` is what the CLI, the API and the scheduled jobs call; the
result is a plain dict (the JSON format), and ``charts_for`` draws its trend
charts when a format needs them (HTML and PDF).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.reports.data import collect
from agent.reports.render import render
from agent.reports.summary import key_table, write_summary
from agent.store import Store


async def build_report(
    store: Store,
    kind: str,
    *,
    machine: str | None = None,
    end: float | None = None,
    device: str = "",
    manager: Any = None,
    seed: int = 0,
    offload: Callable[..., Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """The report's figures, table and summary; ``offload`` runs the blocking queries (a thread)."""
    import asyncio
    import functools

    t0 = time.perf_counter()
    work = functools.partial(collect, store, kind, machine=machine, end=end, device=device)
    report = await (offload or asyncio.to_thread)(work)
    report["table"] = key_table(report)
    report["summary"] = await write_summary(report, manager, seed=seed)
    report["build_s"] = round(time.perf_counter() - t0, 3)
    return report


def charts_for(report: dict[str, Any]) -> list[bytes]:
    from agent.reports.charts import trend_png

    return [trend_png(series) for series in report["trends"]]


def render_report(report: dict[str, Any], fmt: str) -> bytes:
    """The report's bytes in ``fmt`` (charts drawn only for HTML and PDF)."""
    charts = charts_for(report) if fmt in ("html", "pdf") else []
    return render(report, fmt, charts)


def file_name(report: dict[str, Any], fmt: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M", time.localtime(report["window"]["end"]))
    scope = f"-{report['machine']}" if report["machine"] else ""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in scope)
    return f"{report['kind']}{safe}-{stamp}.{fmt}"


def write(report: dict[str, Any], folder: Path, formats: tuple[str, ...]) -> list[Path]:
    """Write the report in each format into ``folder`` (atomically: temp file, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        path = folder / file_name(report, fmt)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(render_report(report, fmt))
        tmp.replace(path)
        out.append(path)
    return out
