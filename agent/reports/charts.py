"""Trend charts with matplotlib: each channel behind the alerts, with the alerts as coloured bands.

The Agg backend draws to PNG bytes (no display, no Tk); matplotlib is
imported here only, when a report is rendered, so the idle daemon never
carries it. Band colours follow the alert levels and are the same in every
chart, the HTML legend and the PDF.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

#: alert level -> band colour (RGB hex); Critical is the strongest
BAND_COLOURS = {"warning": "#f2c14e", "minor": "#f08a4b", "major": "#d7263d", "critical": "#7b1e3a"}
LINE_COLOUR = "#1b4f72"


def trend_png(
    series: dict[str, Any], *, width_in: float = 7.0, height_in: float = 2.6, dpi: int = 110
) -> bytes:
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # a bare Figure on the Agg canvas: no pyplot, no global figure registry, nothing to close
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    pts = series["points"]
    if pts:
        xs = [datetime.fromtimestamp(p[0]) for p in pts]
        ax.fill_between(xs, [p[1] for p in pts], [p[3] for p in pts], color=LINE_COLOUR, alpha=0.18, lw=0)  # type: ignore[arg-type]  # matplotlib takes datetimes; its stubs say float
        ax.plot(xs, [p[2] for p in pts], color=LINE_COLOUR, lw=1.4, label="mean (band: min-max)")  # type: ignore[arg-type]  # matplotlib takes datetimes; its stubs say float
    seen: set[str] = set()
    for band in series["bands"]:
        level = band["level"]
        ax.axvspan(
            datetime.fromtimestamp(band["start"]),  # type: ignore[arg-type]  # matplotlib takes datetimes; its stubs say float
            datetime.fromtimestamp(band["end"]),  # type: ignore[arg-type]
            color=BAND_COLOURS.get(level, "#999999"),
            alpha=0.35,
            lw=0,
            label=f"{level} alert" if level not in seen else None,
        )
        seen.add(level)
    ax.set_title(f"{series['machine']} / {series['channel']}", fontsize=10, loc="left")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b %H:%M"))
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if not pts:
        ax.text(0.5, 0.5, "no samples recorded", transform=ax.transAxes, ha="center", va="center")
    if pts or seen:
        ax.legend(fontsize=7, loc="upper left", framealpha=0.8)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
