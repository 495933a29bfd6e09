"""Reports from a seeded store: exact figures, a real PDF turned into PNG pages, the checked LLM summary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.reports.build import build_report, render_report
from agent.reports.data import WINDOWS
from agent.reports.render import title
from agent.reports.summary import (
    foreign_numbers,
    key_table,
    misplaced_numbers,
    model_table,
    numbers_in,
    rejection,
)
from agent.store import Store

END = datetime(2026, 12, 5, 6, 0, tzinfo=timezone.utc).timestamp()
START = END - WINDOWS["daily"]
# (id, machine, level, first level, opened after START, ack after open, clear after open, channels)
ALERTS = [
    ("a0", "press", "major", "major", -1000, None, 1500, ["temp"]),  # opened before the window
    ("a1", "press", "major", "warning", 3600, 120, 1800, ["temp"]),
    ("a2", "press", "warning", "warning", 7200, 30, 600, ["temp", "vib"]),
    ("a3", "press", "critical", "major", 36000, 300, None, ["vib"]),
    ("a4", "lathe", "minor", "minor", 50000, None, 100, ["rpm"]),
    ("a5", "lathe", "major", "major", 60000, 60, 3000, ["rpm"]),
]
VOICE_MS = [100.0 + 10 * i for i in range(50)]


def seed(path: Path) -> Store:
    store = Store.open(path)
    with store.atomic() as conn:
        for aid, machine, level, first, at, ack, clear, chans in ALERTS:
            opened = START + at
            data = {
                "machine": machine,
                "channels": [{"channel": c} for c in chans],
                "history": [{"ts": opened, "level": first, "transition": "opened"}],
            }
            conn.execute(
                "INSERT INTO alerts (id, source, condition, level, state, title, score, opened_at, updated_at,"
                " cleared_at, acked_at, data) VALUES (?, ?, 'anomaly', ?, ?, 't', 1.0, ?, ?, ?, ?, ?)",
                (
                    aid,
                    f"sensors/{machine}",
                    level,
                    "open" if clear is None else "cleared",
                    opened,
                    opened,
                    None if clear is None else opened + clear,
                    None if ack is None else opened + ack,
                    json.dumps(data),
                ),
            )
        rows = []
        for k in range(1440):
            t = START + 60 * k + 30
            rows += [
                (t, "press", "temp", 60 + 10 * np.sin(k / 90)),
                (t, "press", "vib", 1 + (k % 7) / 10),
                (t, "lathe", "rpm", 1500 + k % 50),
            ]
        conn.executemany("INSERT INTO report_samples VALUES (?, ?, ?, ?)", rows)
        conn.executemany(
            "INSERT INTO report_voice (ts, stream, answer, total_ms) VALUES (?, 'mic', ?, ?)",
            [
                (START + 1000 + 600 * i, "intent" if i % 2 == 0 else "llm", ms)
                for i, ms in enumerate(VOICE_MS)
            ],
        )
        conn.executemany(
            "INSERT INTO report_health (ts, temp_c, throttled, cpu_pct, mem_pct, models_loaded) VALUES (?, ?, ?, ?, ?, ?)",
            [(START + 3000 * i, 50.0 + i, int(i in (3, 4)), 10.0, 30.0 + i, 2) for i in range(10)],
        )
    return store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = seed(tmp_path / "agent.db")
    yield s
    s.close()


def _p(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


async def test_a_daily_report_matches_the_seeded_store_exactly(store: Store) -> None:
    rep = await build_report(store, "daily", end=END, device="box-7")
    a = rep["alerts"]
    assert a["total"] == 5
    assert a["by_level"] == {"warning": 1, "minor": 1, "major": 2, "critical": 1}
    assert a["by_machine"] == {
        "lathe": {"warning": 0, "minor": 1, "major": 1, "critical": 0, "total": 2},
        "press": {"warning": 1, "minor": 0, "major": 1, "critical": 1, "total": 3},
    }
    assert a["open_at_end"] == 1
    acks, clears = [120, 30, 300, 60], [1800, 600, 100, 3000]
    assert a["response"] == {
        "acked": 4,
        "never_acked": 1,
        "ack_p50_s": _p(acks, 50),
        "ack_p90_s": _p(acks, 90),
        "cleared": 4,
        "clear_p50_s": _p(clears, 50),
        "clear_p90_s": _p(clears, 90),
    }
    assert a["root_causes"] == [
        {"channel": "lathe/rpm", "alerts": 2},
        {"channel": "press/temp", "alerts": 2},
        {"channel": "press/vib", "alerts": 2},
    ]
    assert a["early_warnings"] == {"total": 3, "came_true": 1, "did_not": 2}
    # press: a0's last 500 s in the window, a1's 1800 s, a3 open from 36000 s to the end
    press_down = 500 + 1800 + (86400 - 36000)
    assert rep["availability_pct"] == {
        "lathe": round(100 * (1 - 3000 / 86400), 1),
        "press": round(100 * (1 - press_down / 86400), 1),
    }
    v = rep["voice"]
    assert v["turns"] == 50 and v["by_answer"] == {"intent": 25, "llm": 25}
    assert v["latency_ms"] == {
        "p50": _p(VOICE_MS, 50),
        "p90": _p(VOICE_MS, 90),
        "p99": _p(VOICE_MS, 99),
        "max": 590.0,
    }
    h = rep["health"]
    assert (h["samples"], h["temp_max_c"], h["throttled_pct"], h["mem_max_pct"], h["models_loaded_max"]) == (
        10,
        59.0,
        20.0,
        39.0,
        2,
    )
    charts = {(t["machine"], t["channel"]): t for t in rep["trends"]}
    assert set(charts) == {("press", "temp"), ("press", "vib"), ("lathe", "rpm")}
    assert all(t["readings"] == 1440 for t in rep["trends"])
    assert [b["level"] for b in charts[("press", "temp")]["bands"]] == ["major", "major", "warning"]
    table = dict(rep["table"])
    assert table["Alerts opened"] == "5" and table["Voice latency p99 (ms)"] == str(_p(VOICE_MS, 99))
    # one machine only
    lathe = await build_report(store, "daily", end=END, machine="lathe")
    assert lathe["alerts"]["total"] == 2 and list(lathe["availability_pct"]) == ["lathe"]


def _png_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _near(px: np.ndarray, rgb: tuple[int, int, int], tol: int = 30) -> int:
    return int((np.abs(px - np.array(rgb)).sum(axis=2) < tol).sum())


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="needs poppler-utils (make debs)")
async def test_the_pdf_turns_into_pages_with_the_title_and_a_chart(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("weasyprint")
    rep = await build_report(store, "daily", end=END, device="box-7")
    check_pdf_pages(rep, tmp_path)


def check_pdf_pages(rep: dict[str, Any], tmp_path: Path) -> None:
    pdf = tmp_path / "daily.pdf"
    pdf.write_bytes(render_report(rep, "pdf"))
    assert pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-png", "-r", "80", str(pdf), str(tmp_path / "page")], check=True, timeout=60)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 2
    for page in pages:
        px = _png_pixels(page)
        assert page.stat().st_size > 5000 and (px.sum(axis=2) < 600).mean() > 0.001  # ink on every page
    first = subprocess.run(
        ["pdftotext", "-f", "1", "-l", "1", "-layout", str(pdf), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert " ".join(title(rep).split()) in " ".join(first.split())
    px = _png_pixels(pages[0])
    top = px[: px.shape[0] // 8]
    assert (top.sum(axis=2) < 300).mean() > 0.002  # the title's dark ink at the top of page 1
    # the first chart: its mean line, and a Major alert band (35% of #d7263d over white)
    line, band = (0x1B, 0x4F, 0x72), tuple(round(0.35 * c + 0.65 * 255) for c in (0xD7, 0x26, 0x3D))
    assert _near(px, line) > 150 and _near(px, band, 40) > 300


async def test_markdown_html_and_json_carry_the_same_figures(store: Store) -> None:
    rep = await build_report(store, "daily", end=END)
    md = render_report(rep, "md").decode()
    html = render_report(rep, "html").decode()
    assert "| Alerts opened | 5 |" in md and "<meta name='viewport'" in html and html.count("<img") == 3
    assert json.loads(render_report(rep, "json"))["alerts"]["total"] == 5
    assert "[model]" not in md and "class='model'" not in html  # the template wrote this one
    # a model-written sentence is marked in both
    rep["summary"] = {
        "sentences": [{"text": "Five alerts.", "source": "model"}],
        "model": "m",
        "attempts": [],
    }
    assert "Five alerts. [model]" in render_report(rep, "md").decode()
    assert "<span class='model'>Five alerts." in render_report(rep, "html").decode()


async def test_without_a_model_the_template_writes_only_table_numbers(store: Store) -> None:
    rep = await build_report(store, "daily", end=END)
    text = " ".join(s["text"] for s in rep["summary"]["sentences"])
    assert rep["summary"]["model"] is None and {s["source"] for s in rep["summary"]["sentences"]} == {
        "template"
    }
    assert "5 alerts were opened" in text
    assert foreign_numbers(text, key_table(rep)) == []


def test_the_number_check() -> None:
    table = [("Alerts opened", "5"), ("Availability of press-1 (%)", "96.5"), ("Voice turns", "1,200")]
    assert numbers_in("5 alerts, 96.50% and 1,200 turns; p50 smollm2") == ["5", "96.5", "1200"]
    assert foreign_numbers("There were 5 alerts and 96.5% availability.", table) == []
    assert foreign_numbers("There were 6 alerts over 24 hours.", table) == ["6", "24"]
    ok = {"finish_reason": "stop"}
    assert rejection("There were 5 alerts.", ok, table) == ""
    assert rejection("Alerts opened: 5\nVoice turns: 1200", ok, table) == "a list or table, not sentences"
    assert rejection("There were 5 alerts.", {"finish_reason": "length"}, table) == "too long"
    assert rejection("A. A. A.", ok, table) == "too many or repeated sentences"
    # a real number beside the wrong words
    table = [("Alerts opened", "5"), ("Major alerts", "2"), ("Voice turns", "50")]
    assert misplaced_numbers("5 alerts were opened, 2 of them Major.", table) == []
    assert misplaced_numbers("5 major alerts were opened.", table) == ["5"]
    assert misplaced_numbers("The assistant answered 5 turns.", table) == ["5"]
    assert rejection("The assistant answered 5 turns.", ok, table) == "numbers beside the wrong words: 5"


@pytest.mark.slow
@pytest.mark.timeout(900)  # 20 summaries of up to 3 drafts each on a 2-core box: about 2 minutes
async def test_the_llm_summary_never_writes_a_number_absent_from_the_table(store: Store) -> None:
    """20 generations by the real SmolLM2 through the model manager, each checked independently."""
    sys.path.insert(0, str(Path(__file__).parent))
    from voice_fixtures import require_models

    require_models("smollm2-135m")
    from agent.reports.summary import write_summary
    from agent.voice.factory import voice_manager

    rep = await build_report(store, "daily", end=END)
    table, allowed = key_table(rep), model_table(key_table(rep))
    with_model = 0
    async with voice_manager(None, threads=2, idle_timeout_s=None) as manager:
        t0 = time.perf_counter()
        for i in range(20):
            summary = await write_summary(rep, manager, seed=1000 * i)
            sentences = summary["sentences"]
            assert sentences and summary["attempts"]  # the model was asked every time
            assert all(a.get("text") for a in summary["attempts"]), summary["attempts"]
            text = " ".join(s["text"] for s in sentences)
            assert foreign_numbers(text, table) == [], text
            for s in sentences:
                if s["source"] == "model":
                    assert (
                        foreign_numbers(s["text"], allowed) == []
                        and misplaced_numbers(s["text"], allowed) == []
                    )
            with_model += any(s["source"] == "model" for s in sentences)
        elapsed = time.perf_counter() - t0
    print(f"20 summaries in {elapsed:.1f} s, {with_model} with sentences by the model")
    assert with_model >= 5  # the model's sentences do get through: the check is not passing only the template


def run_cli(*args: str, env: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_the_report_command(store: Store, tmp_path: Path) -> None:
    import os

    data = tmp_path / "data"
    data.mkdir()
    store.close()
    shutil.copy(tmp_path / "agent.db", data / "edge-agent.db")
    env = {**os.environ, "EDGE_AGENT_DATA_DIR": str(data)}
    end = str(END)
    out = run_cli("report", "daily", "--end", end, "--format", "json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["alerts"]["total"] == 5
    md = run_cli(
        "report", "daily", "--end", end, "--machine", "lathe", "--out", str(tmp_path / "r.md"), env=env
    )
    assert md.returncode == 0 and "wrote" in md.stderr
    assert "| Alerts opened | 2 |" in (tmp_path / "r.md").read_text()
    for bad, msg in [
        (["report", "monthly"], "invalid choice"),
        (["report", "daily", "--format", "pdf"], "needs --out"),
        (["report", "daily", "--end", "yesterday"], "--end: time 'yesterday'"),
    ]:
        res = run_cli(*bad, env=env)
        assert res.returncode == 2 and msg in res.stderr and "Traceback" not in res.stderr
    missing = run_cli("report", "daily", env={**env, "EDGE_AGENT_DATA_DIR": str(tmp_path / "none")})
    assert missing.returncode == 1 and "start the daemon once" in missing.stderr
