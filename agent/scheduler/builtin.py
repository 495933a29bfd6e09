"""The jobs every box runs, registered by the scheduler service.

| job | when | what |
|---|---|---|
| ``report.shift`` | 06:00, 14:00, 22:00 | the shift report, delivered |
| ``report.daily`` | 06:05 | the daily report, delivered |
| ``report.weekly`` | Monday 06:10 | the weekly report, delivered |
| ``report.alert`` | an alert reaches Major | a shift report of that machine, delivered |
| ``report.health`` | every 5 min | one box-health sample (temperature, throttling, memory) |
| ``report.prune`` | 03:30 | report samples older than 35 days, job runs older than 30 days |
| ``models.idle_unload`` | every 10 s | unload models idle past ``models.idle_timeout_s`` |

Reports are batch work: they wait while a voice turn runs, the CPU is
throttled or the box is on battery. Delivery: files in
``<data_dir>/reports`` (PDF when WeasyPrint is installed, else HTML; always
JSON) and, when the sync outbox exists, the report's figures to the hub as an
``events`` message (``kind: report``) that waits in the outbox while offline.

``models.idle_unload`` (every ``idle_check_interval_s``, realtime, only
failures recorded) is the model manager's idle sweep, which the models
service ran as its own loop before. Other periodic work stays where it is,
for now: the outbox housekeeping and telemetry windows live in ``sync/`` and
the sensor detectors' refits in ``agent/sensors/``, both being reworked by
their owners.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.scheduler.jobs import JobSpec, RunContext, in_batch_thread
from agent.scheduler.triggers import Trigger

if TYPE_CHECKING:
    from agent.context import AgentContext

log = logging.getLogger("edge_agent.scheduler")

SAMPLES_KEEP_S = 35 * 86400.0
RUNS_KEEP_S = 30 * 86400.0


def report_folder(ctx: AgentContext) -> Path:
    return ctx.settings.data_path / "reports"


def pdf_available() -> bool:
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


async def deliver_report(
    ctx: AgentContext, kind: str, *, machine: str | None = None, folder: Path | None = None
) -> dict[str, Any]:
    """Build a report, write it to the folder, and queue its figures for the hub."""
    from agent.reports.build import build_report, write

    report = await build_report(
        ctx.store,
        kind,
        machine=machine,
        device=ctx.settings.device_id,
        manager=llm_manager(ctx),
        offload=in_batch_thread,
    )
    formats = ("json", "pdf" if pdf_available() else "html")
    paths = await in_batch_thread(write, report, folder or report_folder(ctx), formats)
    hub = _to_hub(ctx, report)
    return {"files": [str(p) for p in paths], "hub_message": hub, "alerts": report["alerts"]["total"]}


def llm_manager(ctx: AgentContext) -> Any:
    """The model manager when it serves the LLM; the summary falls back to its template otherwise."""
    manager = ctx.models
    if manager is None:
        return None
    from agent.reports.summary import DEFAULT_MODEL

    try:
        names = set(manager.store.names()) | set(manager.loaded_names())
    except Exception:
        return None
    return manager if DEFAULT_MODEL in names else None


def _to_hub(ctx: AgentContext, report: dict[str, Any]) -> str | None:
    outbox = ctx.outbox
    if outbox is None:
        return None
    from sync import topics
    from sync.envelope import Envelope

    body = {k: v for k, v in report.items() if k != "trends"}
    body["kind"] = "report"
    body["report_kind"] = report["kind"]
    body["trends"] = [
        {k: s[k] for k in ("machine", "channel", "readings", "bands")} for s in report["trends"]
    ]
    env = Envelope(kind="event", device=ctx.settings.device_id, body=body)
    return str(outbox.put(topics.device_topic(ctx.settings.device_id, "events"), env))


def builtin_jobs(ctx: AgentContext) -> list[JobSpec]:
    def report_job(kind: str) -> Any:
        async def action(run: RunContext) -> dict[str, Any]:
            return await deliver_report(ctx, kind)

        return action

    async def alert_report(run: RunContext) -> dict[str, Any]:
        machine = (run.event.get("alert") or {}).get("machine")
        return await deliver_report(ctx, "shift", machine=machine)

    async def health(run: RunContext) -> dict[str, Any]:
        from agent.reports.recorder import sample_health

        return await asyncio.to_thread(sample_health, ctx)

    async def prune(run: RunContext) -> dict[str, Any]:
        def work() -> dict[str, int]:
            now = time.time()
            out = {}
            with ctx.store.atomic() as conn:
                for table in ("report_samples", "report_voice", "report_health"):
                    out[table] = conn.execute(
                        f"DELETE FROM {table} WHERE ts < ?", (now - SAMPLES_KEEP_S,)
                    ).rowcount
                out["scheduler_runs"] = conn.execute(
                    "DELETE FROM scheduler_runs WHERE finished_at < ?", (now - RUNS_KEEP_S,)
                ).rowcount
            return out

        return await asyncio.to_thread(work)

    async def idle_unload(run: RunContext) -> dict[str, Any]:
        assert ctx.models is not None
        return {"unloaded": await ctx.models.sweep_idle()}

    def job(name: str, trigger: str, action: Any, description: str, **kw: Any) -> JobSpec:
        return JobSpec(
            name=name, trigger=Trigger.parse(trigger), action=action, description=description, **kw
        )

    jobs = []
    models = ctx.models
    if models is not None and models.settings.idle_timeout_s is not None:
        every = max(1, round(models.settings.idle_check_interval_s))
        jobs.append(
            job(
                "models.idle_unload",
                f"every:{every}s",
                idle_unload,
                "unload models idle past models.idle_timeout_s",
                priority="realtime",
                timeout_s=60,
                missed="skip",
                record="failures",
            )
        )
    return [
        *jobs,
        job(
            "report.shift",
            "cron:0 6,14,22 * * *",
            report_job("shift"),
            "shift report to the folder and hub",
            retries=2,
            backoff_s=120,
            timeout_s=300,
        ),
        job(
            "report.daily",
            "cron:5 6 * * *",
            report_job("daily"),
            "daily report to the folder and hub",
            retries=2,
            backoff_s=120,
            timeout_s=600,
        ),
        job(
            "report.weekly",
            "cron:10 6 * * 1",
            report_job("weekly"),
            "weekly report to the folder and hub",
            retries=2,
            backoff_s=300,
            timeout_s=900,
        ),
        job(
            "report.alert",
            "on:alert.major",
            alert_report,
            "a shift report of a machine whose alert reached Major",
            timeout_s=300,
            missed="skip",
        ),
        job(
            "report.health",
            "every:5m",
            health,
            "one box-health sample for the reports",
            priority="normal",
            timeout_s=30,
            missed="skip",
        ),
        job(
            "report.prune",
            "cron:30 3 * * *",
            prune,
            "drop report samples and job runs past their retention",
            timeout_s=300,
        ),
    ]
