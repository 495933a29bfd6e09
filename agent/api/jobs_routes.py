"""``/v1/jobs``, ``/v1/job-runs`` and ``/v1/reports``: the scheduler and the reports over HTTP.

Job routes need the running scheduler (503 while it is not up). Reports are
built from the store on request (JSON, HTML, Markdown or PDF); the summary
is the template's, or with ``?llm=1`` the daemon's LLM's when the model
manager has it (seconds of CPU per draft, so not the default of a GET).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent.api.app import CTX
from agent.api.routes import Route
from agent.errors import BadRequestError, UnavailableError

_NAME = {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"}
_KIND = {"type": "string", "enum": ["shift", "daily", "weekly"]}
_TYPES = {"json": "application/json", "html": "text/html", "md": "text/markdown", "pdf": "application/pdf"}


def _scheduler(request: web.Request) -> Any:
    sched = request.app[CTX].scheduler
    if sched is None or not sched.started:
        raise UnavailableError("the scheduler is not running (it starts with the daemon); try again shortly")
    return sched


def _limit(request: web.Request, default: int = 50) -> int:
    raw = request.query.get("limit", str(default))
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequestError(f"limit {raw!r} must be an integer between 1 and 1000") from None
    if not 1 <= limit <= 1000:
        raise BadRequestError("limit must be between 1 and 1000")
    return limit


async def list_jobs(request: web.Request) -> web.Response:
    return web.json_response({"jobs": _scheduler(request).list()})


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(_scheduler(request).describe(request.match_info["name"]))


async def run_job(request: web.Request) -> web.Response:
    run_id = await _scheduler(request).run_now(request.match_info["name"])
    return web.json_response({"job": request.match_info["name"], "run_id": run_id}, status=202)


async def pause_job(request: web.Request) -> web.Response:
    return web.json_response(_scheduler(request).pause(request.match_info["name"]))


async def resume_job(request: web.Request) -> web.Response:
    return web.json_response(_scheduler(request).resume(request.match_info["name"]))


async def job_runs(request: web.Request) -> web.Response:
    limit = _limit(request)
    job = request.query.get("job") or None
    return web.json_response({"runs": _scheduler(request).history(job, limit)})


async def _report(request: web.Request, fmt: str) -> web.Response:
    import asyncio

    from agent.reports.build import build_report, render_report
    from agent.scheduler.builtin import llm_manager

    ctx = request.app[CTX]
    kind = request.match_info["kind"]
    if kind not in ("shift", "daily", "weekly"):
        raise BadRequestError(f"report kind {kind!r}: use shift, daily or weekly")
    machine = request.query.get("machine") or None
    # the model's paragraph costs seconds of CPU per draft: asked for, not the default of a GET
    llm = request.query.get("llm", "0") in ("1", "true", "yes")
    report = await build_report(
        ctx.store,
        kind,
        machine=machine,
        device=ctx.settings.device_id,
        manager=llm_manager(ctx) if llm else None,
    )
    if fmt == "json":
        return web.json_response(report)
    body = await asyncio.to_thread(render_report, report, fmt)
    return web.Response(
        body=body, content_type=_TYPES[fmt], charset="utf-8" if fmt in ("html", "md") else None
    )


async def report_json(request: web.Request) -> web.Response:
    return await _report(request, "json")


async def report_html(request: web.Request) -> web.Response:
    return await _report(request, "html")


async def report_md(request: web.Request) -> web.Response:
    return await _report(request, "md")


async def report_pdf(request: web.Request) -> web.Response:
    return await _report(request, "pdf")


_N = {"name": _NAME}
_K = {"kind": _KIND}
_NO_JOB = {404: "no such job", 503: "the scheduler is not running"}
_REPORT_Q = "(?machine=&llm=1 for the local model's summary)"
ROUTES = [
    Route(
        "GET",
        "/v1/jobs",
        list_jobs,
        "Scheduled jobs: trigger, priority, state, next run, last run.",
        tag="jobs",
        extra_responses={503: "the scheduler is not running"},
    ),
    Route(
        "GET",
        "/v1/jobs/{name}",
        get_job,
        "One scheduled job.",
        tag="jobs",
        path_params=_N,
        extra_responses=_NO_JOB,
    ),
    Route(
        "POST",
        "/v1/jobs/{name}/run",
        run_job,
        "Run a job now (202 with the run id).",
        tag="jobs",
        path_params=_N,
        role="operator",
        status=202,
        extra_responses=_NO_JOB,
    ),
    Route(
        "POST",
        "/v1/jobs/{name}/pause",
        pause_job,
        "Pause a job (kept across restarts).",
        tag="jobs",
        path_params=_N,
        role="operator",
        extra_responses=_NO_JOB,
    ),
    Route(
        "POST",
        "/v1/jobs/{name}/resume",
        resume_job,
        "Resume a paused job.",
        tag="jobs",
        path_params=_N,
        role="operator",
        extra_responses=_NO_JOB,
    ),
    Route(
        "GET",
        "/v1/job-runs",
        job_runs,
        "Job runs, newest first (?job=&limit=).",
        tag="jobs",
        extra_responses={400: "limit out of range", **_NO_JOB},
    ),
    Route(
        "GET",
        "/v1/reports/{kind}",
        report_json,
        f"A shift, daily or weekly report as JSON {_REPORT_Q}.",
        tag="reports",
        path_params=_K,
    ),
    Route(
        "GET",
        "/v1/reports/{kind}/html",
        report_html,
        f"The report as HTML (phone-readable) {_REPORT_Q}.",
        tag="reports",
        path_params=_K,
        content_type="text/html",
    ),
    Route(
        "GET",
        "/v1/reports/{kind}/md",
        report_md,
        f"The report as Markdown {_REPORT_Q}.",
        tag="reports",
        path_params=_K,
        content_type="text/markdown",
    ),
    Route(
        "GET",
        "/v1/reports/{kind}/pdf",
        report_pdf,
        f"The report as PDF {_REPORT_Q}.",
        tag="reports",
        path_params=_K,
        content_type="application/pdf",
        extra_responses={503: "PDF rendering is not installed (edge-agent[reports])"},
    ),
]
