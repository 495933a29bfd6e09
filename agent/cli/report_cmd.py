"""``edge-agent report shift|daily|weekly``: a report built from the box's store, written to a file.

The report is built in this process from the daemon's database (read while
the daemon runs, or after it stopped), so it works on a box whose daemon is
down. ``--llm`` has the local model write the summary paragraph (loaded here
through the same model manager the daemon uses; slower to start); without it
the template writes it. ``--out -`` writes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from agent.config import load_settings

FORMATS = ("pdf", "html", "md", "json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="a shift, daily or weekly report (PDF, HTML, Markdown, JSON)",
        description="Alerts by level and machine, response times, availability, root causes, trend charts, "
        "voice latency and box health over the last 8 hours (shift), 24 hours (daily) or 7 days (weekly).",
    )
    p.add_argument(
        "kind", choices=("shift", "daily", "weekly"), help="the window: 8 h, 24 h or 7 days to now"
    )
    p.add_argument("--machine", default="", help="only this machine")
    p.add_argument(
        "--format", choices=FORMATS, default="", help="pdf, html, md or json (default: from --out, else md)"
    )
    p.add_argument("--out", default="", metavar="FILE", help="write here (default: stdout for md and json)")
    p.add_argument(
        "--end", default="", metavar="TIME", help="window end: ISO time or Unix seconds (default: now)"
    )
    p.add_argument(
        "--llm", action="store_true", help="the local LLM writes the summary (checked; else template)"
    )
    p.set_defaults(handler=report)


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    suffix = Path(args.out).suffix.lstrip(".").lower() if args.out and args.out != "-" else ""
    return (
        {"htm": "html", "markdown": "md"}.get(suffix, suffix)
        if suffix in (*FORMATS, "htm", "markdown")
        else "md"
    )


def report(args: argparse.Namespace) -> int:
    fmt = _format(args)
    if fmt in ("pdf", "html") and not args.out:
        print(f"edge-agent: --format {fmt} needs --out FILE (or --out - for stdout)", file=sys.stderr)
        return 2
    end = None
    if args.end:
        from agent.errors import BadRequestError
        from agent.scheduler.triggers import Trigger

        try:
            end = Trigger.parse(f"at:{args.end}").seconds
        except BadRequestError as exc:
            print(f"edge-agent: --end: {exc}", file=sys.stderr)
            return 2
    settings = load_settings(args.config)
    db = settings.database_path
    if not db.exists():
        print(
            f"edge-agent: no database at {db} yet: start the daemon once (`edge-agent run`)", file=sys.stderr
        )
        return 1
    from agent.reports.build import render_report
    from agent.store import Store

    store = Store.open(db, check="none", migrate=True)
    try:
        rep = asyncio.run(_build(args, store, settings, end))
        body = render_report(rep, fmt)
    finally:
        store.close()
    if not args.out or args.out == "-":
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        out = Path(args.out)
        try:
            out.write_bytes(body)
        except OSError as exc:
            print(f"edge-agent: cannot write {out}: {exc.strerror}; choose another --out", file=sys.stderr)
            return 1
        models = sum(1 for s in rep["summary"]["sentences"] if s["source"] == "model")
        print(
            f"wrote {out} ({len(body)} bytes): {rep['alerts']['total']} alerts, {len(rep['trends'])} chart(s), "
            f"summary by {rep['summary']['model'] + f' ({models} sentences)' if models else 'the template'}",
            file=sys.stderr,
        )
    return 0


async def _build(args: argparse.Namespace, store: Any, settings: Any, end: float | None) -> dict[str, Any]:
    from agent.reports.build import build_report

    if not args.llm:
        return await build_report(
            store, args.kind, machine=args.machine or None, end=end, device=settings.device_id
        )
    from agent.voice.factory import voice_manager

    async with voice_manager(settings.data_path / "models", threads=2, idle_timeout_s=None) as manager:
        return await build_report(
            store,
            args.kind,
            machine=args.machine or None,
            end=end,
            device=settings.device_id,
            manager=manager,
        )
