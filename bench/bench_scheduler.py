"""Scheduler overhead and report build time, each beside a peer measured in the same run.

- jobs/s dispatched: no-op jobs run through the Scheduler on a real SQLite
  file (``synchronous=FULL``, as the daemon: every run is a row inserted when
  queued and updated with its outcome, two commits, and three bus events);
  peer: bare ``asyncio`` tasks that
  each commit one SQLite row on the same kind of file (the least a durable
  scheduler must do per run).
- idle CPU of the daemon with 100 scheduled jobs (a ``jobs.toml`` of 100 cron
  jobs that do not fire during the window) vs the same daemon with only its
  built-in jobs, side by side for the same window.
- a daily report over 1,000,000 readings (2 machines x 4 channels, 24 h, 200
  alerts): figures, table, template summary, charts and PDF; peer: one SQLite
  pass over the same rows (``GROUP BY machine, channel``), the floor of
  reading them once. Target: <= 10 s.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.bench_idle import IDLE_ENV, cpu_s, free_port, start_daemon, wait_listening


def _dispatch_rate(n: int) -> tuple[float, float]:
    from agent.bus import Bus
    from agent.scheduler.engine import Scheduler
    from agent.scheduler.gate import ResourceGate
    from agent.scheduler.jobs import JobSpec
    from agent.scheduler.triggers import Trigger
    from agent.store import Store

    async def noop(ctx: object) -> None:
        return None

    async def ours(path: Path) -> float:
        store = Store.open(path)
        sched = Scheduler(store, Bus(), gate=ResourceGate("/nonexistent"), max_concurrent=4)
        for i in range(20):
            sched.add(JobSpec(name=f"j{i}", trigger=Trigger.parse("manual"), action=noop, priority="normal"))
        sched.start()
        t0 = time.perf_counter()
        for k in range(n):
            await sched.run_now(f"j{k % 20}")
            if k % 20 == 19:
                await sched.idle(60)
        await sched.idle(60)
        elapsed = time.perf_counter() - t0
        assert sched.dispatched == n
        store.close()
        return n / elapsed

    async def peer(path: Path) -> float:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, job TEXT, ts REAL)")

        async def one(k: int) -> None:
            await noop(None)
            conn.execute("INSERT INTO runs (job, ts) VALUES (?, ?)", (f"j{k % 20}", time.time()))

        t0 = time.perf_counter()
        for k in range(0, n, 20):
            await asyncio.gather(*(asyncio.create_task(one(k + i)) for i in range(20)))
        elapsed = time.perf_counter() - t0
        conn.close()
        return n / elapsed

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(ours(Path(tmp) / "a.db")), asyncio.run(peer(Path(tmp) / "b.db"))


def _idle_cpu(seconds: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as with_jobs, tempfile.TemporaryDirectory() as without:
        lines = []
        for i in range(100):
            lines += [
                "[[job]]",
                f'name = "bench-{i:03d}"',
                f'trigger = "cron:{i % 60} 3 * * *"',
                'command = ["true"]',
                "",
            ]
        Path(with_jobs, "jobs.toml").write_text("\n".join(lines))
        ports = [free_port(), free_port()]
        procs = [start_daemon(d, port, IDLE_ENV) for d, port in zip((with_jobs, without), ports, strict=True)]
        try:
            for p, port in zip(procs, ports, strict=True):
                wait_listening(port, p, timeout=60)
            time.sleep(8)  # start-up settles
            c0 = [cpu_s(p.pid) for p in procs]
            t0 = time.monotonic()
            time.sleep(seconds)
            wall = time.monotonic() - t0
            return tuple((cpu_s(p.pid) - c) / wall * 100 for p, c in zip(procs, c0, strict=True))  # type: ignore[return-value]
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=15)


def _seed_million(path: Path, n: int, end: float) -> None:
    from agent.store import Store

    store = Store.open(path, synchronous="normal")
    start = end - 86400
    channels = [(m, c) for m in ("press", "lathe") for c in ("temp", "vib", "rpm", "current")]
    step = 86400 / (n / len(channels))
    rng = random.Random(7)
    with store.atomic() as conn:
        conn.executemany(
            "INSERT INTO report_samples (ts, machine, channel, value) VALUES (?, ?, ?, ?)",
            (
                (start + k * step, m, c, 50 + rng.random())
                for k in range(n // len(channels))
                for m, c in channels
            ),
        )
        for i in range(200):
            m, c = channels[i % len(channels)]
            opened = start + 400 * i
            data = {"machine": m, "channels": [{"channel": c}], "history": [{"level": "warning"}]}
            conn.execute(
                "INSERT INTO alerts (id, source, condition, level, state, title, score, opened_at, updated_at,"
                " cleared_at, acked_at, data) VALUES (?, ?, 'anomaly', ?, 'cleared', 't', 1, ?, ?, ?, ?, ?)",
                (
                    f"b{i}",
                    f"sensors/{m}",
                    ("warning", "minor", "major", "critical")[i % 4],
                    opened,
                    opened,
                    opened + 300,
                    opened + 60,
                    json.dumps(data),
                ),
            )
    store.close()


def _report_time(n: int) -> tuple[float, float, float, float]:
    """(first report in the process: imports included; the next one, as in the daemon; figures only; peer)."""
    from agent.reports.build import build_report, render_report
    from agent.store import Store

    end = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "agent.db"
        _seed_million(db, n, end)
        store = Store.open(db)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            report = asyncio.run(build_report(store, "daily", end=end + 1, device="bench"))
            figures = time.perf_counter() - t0
            render_report(report, "pdf")
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        store.execute(
            "SELECT machine, channel, COUNT(*), AVG(value) FROM report_samples GROUP BY machine, channel"
        ).fetchall()
        peer = time.perf_counter() - t0
        store.close()
    return times[0], times[1], figures, peer


def run(quick: bool = False) -> list[dict]:
    n_runs = 500 if quick else 3000
    ours_rate, peer_rate = _dispatch_rate(n_runs)
    idle_ours, idle_peer = _idle_cpu(10 if quick else 60)
    n = 200_000 if quick else 1_000_000
    cold_s, warm_s, figures_s, scan_s = _report_time(n)
    return [
        {
            "name": f"scheduler: jobs dispatched ({n_runs} no-op runs: a row inserted and finished, 3 bus events each)",
            "ours": round(ours_rate, 1),
            "peer": round(peer_rate, 1),
            "peer_name": "asyncio tasks + 1 SQLite commit each",
            "unit": "runs/s",
            "ratio": round(ours_rate / peer_rate, 3),
        },
        {
            "name": "scheduler: idle daemon CPU with 100 scheduled jobs",
            "ours": round(idle_ours, 3),
            "peer": round(idle_peer, 3),
            "peer_name": "the same daemon, built-in jobs only",
            "unit": "% of a core",
            "ratio": round(idle_ours / idle_peer, 3) if idle_peer else None,
        },
        {
            "name": f"report: daily over {n:,} readings, first in a process (figures, charts, PDF)",
            "ours": round(cold_s, 2),
            "peer": round(scan_s, 2),
            "peer_name": "one SQLite GROUP BY pass over the readings",
            "unit": "s",
            "ratio": round(cold_s / scan_s, 2) if scan_s else None,
            "target": "<= 10 s",
        },
        {
            "name": f"report: daily over {n:,} readings, the next one (as in the daemon)",
            "ours": round(warm_s, 2),
            "peer": round(scan_s, 2),
            "peer_name": "one SQLite GROUP BY pass over the readings",
            "unit": "s",
            "ratio": round(warm_s / scan_s, 2) if scan_s else None,
            "target": "<= 10 s",
        },
        {
            "name": f"report: daily over {n:,} readings, figures only",
            "ours": round(figures_s, 2),
            "peer": round(scan_s, 2),
            "peer_name": "one SQLite GROUP BY pass over the readings",
            "unit": "s",
            "ratio": round(figures_s / scan_s, 2) if scan_s else None,
        },
    ]
