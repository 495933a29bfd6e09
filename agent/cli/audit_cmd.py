"""``edge-agent audit verify|list|head``: read and check the tamper-evident audit log."""

from __future__ import annotations

import argparse
import time
from contextlib import closing

from agent.cli.tokens_cmd import open_store
from agent.config import load_settings
from agent.core.output import print_json, print_listing
from agent.errors import BadRequestError
from agent.security.audit import AuditLog, RefusalSegment, segment_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="check or read the audit log",
        description="The audit log records every state-changing action; each row carries the hash of "
        "the previous one, so edits and deletions are found.",
    )
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = asub.add_parser(
        "verify",
        help="check the hash chain; exit 1 and say where when rows were edited or deleted",
        description="Walk the whole log and report every edited, deleted or truncated row.",
    )
    verify.add_argument(
        "--anchor",
        metavar="ID:HASH",
        help="a head recorded earlier (`edge-agent audit head`): also prove the log still extends it",
    )
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(handler=verify_log)
    lst = asub.add_parser(
        "list", help="show the newest entries", description="Show the newest audit entries."
    )
    lst.add_argument("--limit", type=int, default=50, help="how many entries (default 50)")
    lst.add_argument("--action", help="only actions matching this (use * as a wildcard, e.g. 'api.*')")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(handler=list_log)
    head = asub.add_parser(
        "head",
        help="print the newest row's id and hash, to keep elsewhere as an anchor",
        description="Print ID:HASH of the newest row; keep it off the box and pass it to `audit verify --anchor`.",
    )
    head.set_defaults(handler=show_head)


def verify_log(args: argparse.Namespace) -> int:
    anchor = None
    if args.anchor:
        id_text, _, digest = args.anchor.partition(":")
        if not id_text.isdigit() or len(digest) != 64:
            raise BadRequestError("--anchor takes ID:HASH as printed by `edge-agent audit head`")
        anchor = (int(id_text), digest.lower())
    settings = load_settings(args.config)
    with closing(open_store(settings)) as store:
        log = AuditLog(store)
        report = log.verify(anchor=anchor)
        seg_report, checkpoint = None, None
        path = segment_path(store.path)
        if path.exists():  # refused API calls, summarised per window (agent/security/audit.py)
            with closing(RefusalSegment(path, settings.security.refusal_log_bytes, log)) as segment:
                seg_report, checkpoint = segment.verify(), segment.checkpoint()
    ok = report.ok and (seg_report is None or seg_report.ok)
    if args.json:
        out = report.to_dict()
        if seg_report is not None:
            out["refusals"] = {**seg_report.to_dict(), "rotated_rows": checkpoint[2] if checkpoint else 0}
        out["ok"] = ok
        print_json(out)
        return 0 if ok else 1
    if report.ok:
        head = f"; head {report.head[0]}:{report.head[1]}" if report.head else ""
        print(f"audit log OK: {report.rows} rows, chain intact{head}")
    else:
        print(f"audit log TAMPERED: {len(report.problems)} problem(s) in {report.rows} rows")
        for problem in report.problems:
            print(f"  row {problem.row_id}: {problem.kind}: {problem.message}")
    if seg_report is not None:
        rotated = f", {checkpoint[2]} older rows rotated out behind a checkpoint" if checkpoint else ""
        if seg_report.ok:
            print(f"refusal segment OK: {seg_report.rows} window summaries{rotated}, chain intact")
        else:
            print(
                f"refusal segment TAMPERED: {len(seg_report.problems)} problem(s) in {seg_report.rows} rows"
            )
            for problem in seg_report.problems:
                print(f"  row {problem.row_id}: {problem.kind}: {problem.message}")
    return 0 if ok else 1


def list_log(args: argparse.Namespace) -> int:
    with closing(open_store(load_settings(args.config))) as store:
        entries = AuditLog(store).entries(limit=args.limit, action=args.action)
    print_listing(
        args.json,
        entries,
        lambda e: (
            e.id,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.ts)),
            e.actor,
            e.action,
            e.target,
            " ".join(f"{k}={v}" for k, v in sorted(e.detail.items())),
        ),
        ["ID", "TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"],
        empty="the audit log is empty",
        data=[e.to_dict() for e in entries],
    )
    return 0


def show_head(args: argparse.Namespace) -> int:
    with closing(open_store(load_settings(args.config))) as store:
        head = AuditLog(store).head()
    print(f"{head[0]}:{head[1]}" if head else "the audit log is empty")
    return 0
