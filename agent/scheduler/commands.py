"""Hub commands for the scheduler: ``jobs.list``, ``jobs.run``, ``jobs.pause``, ``jobs.resume``,
``jobs.history`` and ``report.build``.

They are added to the sync service's command registry when the scheduler
starts (``register``), so ``sync/`` needs to know nothing of the scheduler:
the registry is the plugin seam it already offers. The hub's signature,
expiry and exactly-once checks apply as to every command.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agent.errors import BadRequestError

if TYPE_CHECKING:
    from agent.context import AgentContext
    from agent.scheduler.engine import Scheduler

log = logging.getLogger("edge_agent.scheduler")


def _name(args: dict[str, Any]) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequestError("argument 'name' (the job's name) is required")
    return name


def register(registry: Any, sched: Scheduler, ctx: AgentContext) -> list[str]:
    """Add the commands to ``registry`` (a sync CommandRegistry); names already there are left alone."""

    async def jobs_list(req: Any) -> dict[str, Any]:
        return {"jobs": sched.list()}

    async def jobs_run(req: Any) -> dict[str, Any]:
        name = _name(req.args)
        return {"job": name, "run_id": await sched.run_now(name)}

    async def jobs_pause(req: Any) -> dict[str, Any]:
        return sched.pause(_name(req.args))

    async def jobs_resume(req: Any) -> dict[str, Any]:
        return sched.resume(_name(req.args))

    async def jobs_history(req: Any) -> dict[str, Any]:
        limit = req.args.get("limit", 50)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise BadRequestError("argument 'limit' must be an integer between 1 and 1000")
        return {"runs": sched.history(req.args.get("name") or None, limit)}

    async def report_build(req: Any) -> dict[str, Any]:
        from agent.scheduler.builtin import deliver_report

        kind = req.args.get("kind", "daily")
        if kind not in ("shift", "daily", "weekly"):
            raise BadRequestError("argument 'kind' must be shift, daily or weekly")
        machine = req.args.get("machine") or None
        return await deliver_report(ctx, kind, machine=machine)

    commands = {
        "jobs.list": (jobs_list, "Scheduled jobs with their next and last runs."),
        "jobs.run": (jobs_run, "Run a scheduled job now {name}."),
        "jobs.pause": (jobs_pause, "Pause a scheduled job {name}."),
        "jobs.resume": (jobs_resume, "Resume a paused job {name}."),
        "jobs.history": (jobs_history, "Job runs, newest first {name?, limit?}."),
        "report.build": (
            report_build,
            "Build and deliver a report now {kind, machine?}; its figures follow.",
        ),
    }
    added = []
    for name, (handler, doc) in commands.items():
        if registry.get(name) is None:
            registry.register(name, handler, doc=doc)
            added.append(name)
    return added


def sync_registry(ctx: AgentContext) -> Any:
    """The running sync service's command registry, or None on a box without sync."""
    service = ctx.supervisor.services.get("sync")
    runtime = getattr(service, "rt", None)
    return getattr(runtime, "registry", None)
