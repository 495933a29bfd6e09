"""Make ``docs/reports/sample-daily.png``: page 1 of a daily report over a seeded day of press-1.

A day of 1 Hz samples of the simulated press (bearing temperature with a
fault in the afternoon, vibration, pressure), the alerts that fault raised,
voice turns and health samples are written to a fresh store; then the README's
own command builds the PDF with the local LLM's summary, and pdftoppm turns
page 1 into the PNG. Run from the repository root: ``.venv/bin/python docs/reports/make_sample.py``.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
END = datetime(2026, 12, 5, 6, 0, tzinfo=timezone.utc).timestamp()
START = END - 86400
FAULT = (START + 13 * 3600, START + 15.5 * 3600)


def seed(db: Path) -> None:
    sys.path.insert(0, str(REPO))
    from agent.store import Store

    rng = random.Random(3)
    store = Store.open(db, synchronous="normal")
    rows = []
    for k in range(0, 86400, 5):
        t = START + k
        heat = (
            14 * max(0.0, math.sin(math.pi * (t - FAULT[0]) / (FAULT[1] - FAULT[0])))
            if FAULT[0] < t < FAULT[1]
            else 0
        )
        rows += [
            (t, "press-1", "bearing_temp", 58 + 3 * math.sin(k / 7000) + heat + rng.gauss(0, 0.4)),
            (t, "press-1", "vibration", 2.1 + heat / 10 + abs(rng.gauss(0, 0.15))),
            (t, "press-1", "pressure", 17 + 1.5 * math.sin(k / 900) + rng.gauss(0, 0.2)),
        ]
    alerts = [
        ("s1", "warning", "warning", FAULT[0] + 1500, 240, 2400, ["bearing_temp"]),
        ("s2", "major", "warning", FAULT[0] + 3600, 95, 4200, ["bearing_temp", "vibration"]),
        ("s3", "minor", "minor", START + 5 * 3600, None, 300, ["pressure"]),
    ]
    with store.atomic() as conn:
        conn.executemany("INSERT INTO report_samples VALUES (?, ?, ?, ?)", rows)
        for aid, level, first, opened, ack, clear, chans in alerts:
            data = {
                "machine": "press-1",
                "channels": [{"channel": c} for c in chans],
                "history": [{"level": first}],
            }
            conn.execute(
                "INSERT INTO alerts (id, source, condition, level, state, title, score, opened_at, updated_at,"
                " cleared_at, acked_at, data) VALUES (?, 'sensors/press-1', 'anomaly', ?, 'cleared', 't', 1, ?, ?,"
                " ?, ?, ?)",
                (
                    aid,
                    level,
                    opened,
                    opened,
                    opened + clear,
                    None if ack is None else opened + ack,
                    json.dumps(data),
                ),
            )
        conn.executemany(
            "INSERT INTO report_voice (ts, stream, answer, total_ms) VALUES (?, 'cab', ?, ?)",
            [(START + 1800 * i, "intent" if i % 3 else "llm", rng.uniform(380, 1400)) for i in range(40)],
        )
        conn.executemany(
            "INSERT INTO report_health (ts, temp_c, throttled, cpu_pct, mem_pct, models_loaded) VALUES (?, ?, 0, ?, ?, 3)",
            [
                (START + 300 * i, 48 + rng.uniform(0, 9), rng.uniform(8, 30), rng.uniform(41, 55))
                for i in range(288)
            ],
        )
    store.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        seed(Path(tmp) / "edge-agent.db")
        env = {**os.environ, "EDGE_AGENT_DATA_DIR": tmp, "EDGE_AGENT_DEVICE_ID": "plant-a-line-2"}
        pdf = Path(tmp) / "daily.pdf"
        edge_agent = [sys.executable, "-m", "agent.cli"]
        subprocess.run(
            [*edge_agent, "report", "daily", "--end", str(END), "--llm", "--out", str(pdf)],
            env=env,
            cwd=REPO,
            check=True,
        )
        subprocess.run(
            [
                "pdftoppm",
                "-png",
                "-r",
                "72",
                "-f",
                "1",
                "-l",
                "1",
                "-singlefile",
                str(pdf),
                str(Path(tmp) / "page"),
            ],
            check=True,
        )
        (REPO / "docs/reports/sample-daily.png").write_bytes((Path(tmp) / "page.png").read_bytes())


if __name__ == "__main__":
    main()
