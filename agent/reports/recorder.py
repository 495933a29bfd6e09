"""What reports read that no other table keeps, recorded from the bus as it passes.

- ``report_samples``: the sensor samples the pipeline puts on the bus (one
  per machine every ``sensors.reading_event_s``), one row per channel, for
  the trend charts;
- ``report_voice``: one row per voice turn with its latencies
  (``voice.timings``) and how it was answered (``voice.reply``);
- ``report_health``: box health, sampled by the scheduler's ``report.health``
  job (``sample_health``).

Rows are written in batches, one transaction every ``flush_s`` (a 1 Hz
sample stream must not cost one fsync per reading). The subscription drops
the oldest events when the writer falls behind: a report with a gap beats a
voice turn that waits for the disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from agent.errors import DiskFullError
from agent.store import Store
from agent.supervisor import Service

if TYPE_CHECKING:
    from agent.context import AgentContext

log = logging.getLogger("edge_agent.reports")

TYPES = ("sensor.reading", "voice.timings", "voice.reply")


class Recorder:
    """Turns bus events (their dict form) into report rows; ``flush`` writes them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.samples: list[tuple[float, str, str, float | None]] = []
        self.turns: list[tuple[Any, ...]] = []
        self._answers: dict[str, str] = {}

    def note(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "sensor.reading":
            ts, machine = float(event["reading_ts"]), str(event["machine"])
            for channel, value in (event.get("values") or {}).items():
                self.samples.append((ts, machine, str(channel), value))
        elif kind == "voice.reply":
            self._answers[str(event.get("stream", ""))] = str(event.get("answer_source", ""))
        elif kind == "voice.timings":
            spans = event.get("spans_ms") or {}
            stream = str(event.get("stream", ""))
            total = spans.get("speech_end_to_first_audio", spans.get("speech_end_to_reply_text"))
            self.turns.append(
                (
                    float(event.get("ts") or time.time()),
                    stream,
                    self._answers.pop(stream, ""),
                    total,
                    spans.get("speech_end_to_transcript"),
                    spans.get("transcript_to_first_token"),
                    spans.get("speech_end_to_first_audio"),
                )
            )

    def flush(self) -> int:
        samples, turns = self.samples, self.turns
        if not samples and not turns:
            return 0
        self.samples, self.turns = [], []
        with self.store.atomic() as conn:
            conn.executemany(
                "INSERT INTO report_samples (ts, machine, channel, value) VALUES (?, ?, ?, ?)", samples
            )
            conn.executemany(
                "INSERT INTO report_voice (ts, stream, answer, total_ms, asr_ms, reply_ms, first_audio_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                turns,
            )
        return len(samples) + len(turns)


class RecorderService(Service):
    name = "reports.recorder"

    def __init__(self, ctx: AgentContext, flush_s: float = 2.0) -> None:
        super().__init__()
        self.ctx = ctx
        self.flush_s = flush_s
        self.recorder = Recorder(ctx.store)

    async def run(self) -> None:
        sub = self.ctx.bus.subscribe("reports.recorder", TYPES, maxsize=2000, policy="drop_oldest")
        try:
            while True:
                deadline = time.monotonic() + self.flush_s
                while (left := deadline - time.monotonic()) > 0:
                    # asyncio.wait, not wait_for: on 3.11 wait_for can swallow a cancel at its timeout
                    getter = asyncio.ensure_future(sub.get())
                    try:
                        done, _ = await asyncio.wait({getter}, timeout=left)
                    finally:
                        getter.cancel()
                    if done:
                        self.recorder.note(getter.result().to_dict())
                self._flush()
        finally:
            sub.close()
            self._flush()

    def _flush(self) -> None:
        try:
            self.recorder.flush()
        except DiskFullError as exc:
            log.warning("report samples not stored: %s", exc)


def sample_health(ctx: AgentContext) -> dict[str, Any]:
    """One box-health row: hottest zone, throttling, CPU and memory use, models loaded."""
    import psutil

    from hal.probe_fs import Tree
    from hal.probe_thermal import probe_thermal

    thermal = probe_thermal(Tree("/"))
    models = ctx.models
    loaded = len(models.loaded_names()) if models is not None else 0
    row = {
        "ts": time.time(),
        "temp_c": thermal.max_temp_c,
        "throttled": int(thermal.throttling),
        "cpu_pct": psutil.cpu_percent(interval=None),
        "mem_pct": psutil.virtual_memory().percent,
        "models_loaded": loaded,
    }
    ctx.store.execute(
        "INSERT INTO report_health (ts, temp_c, throttled, cpu_pct, mem_pct, models_loaded, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (*row.values(), json.dumps({"zones": len(thermal.zones)})),
    )
    return row
