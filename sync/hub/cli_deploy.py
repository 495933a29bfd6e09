"""``edge-hub deploy`` (a staged rollout, canary first) and ``edge-hub deployments``, through the hub's API."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from agent.core.errors import BadRequestError
from agent.core.output import print_json, print_listing, table
from sync.hub.cli_fleet import _ago, _client


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy",
        help="staged rollout of a model bundle (canary first)",
        description="Upload a model bundle (a directory with manifest.json, or a tar of one) "
        "to the hub, send it to the canary share of the matching online devices, and to the "
        "rest only if every canary succeeded.",
    )
    p.add_argument("bundle", metavar="MODEL_BUNDLE", help="bundle directory or .tar file")
    p.add_argument("--to", action="append", required=True, metavar="SEL", help="label=value or 'all'")
    p.add_argument("--canary", default="10%", help="share deployed first, e.g. 10%% (0: all at once)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds each stage may take")
    p.add_argument(
        "--no-wait", action="store_true", help="start it and return (see `edge-hub deployments ID`)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=deploy)

    p = sub.add_parser(
        "deployments",
        help="list deployments, or show one",
        description="List deployments (newest first), or show one with per-device status.",
    )
    p.add_argument("id", nargs="?", help="a deployment id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=deployments)


def deploy(args: argparse.Namespace) -> int:
    from sync.hub.bundles import make_bundle_tar

    client = _client(args, timeout=60)
    source = Path(args.bundle)
    if source.is_dir():
        data = make_bundle_tar(source)
        bundle = client.post("/v1/bundles", data=data, content_type="application/x-tar", timeout=600)
    elif source.is_file():
        with source.open("rb") as fh:
            bundle = client.post(
                "/v1/bundles",
                data=fh,
                content_type="application/x-tar",
                length=os.fstat(fh.fileno()).st_size,
                timeout=600,
            )
    else:
        raise BadRequestError(f"{source} is neither a bundle directory nor a bundle file")
    started = client.post(
        "/v1/deployments",
        {
            "bundle": bundle["sha256"],
            "to": ",".join(args.to),
            "canary": args.canary,
            "timeout_s": args.timeout,
        },
    )
    dep = started
    if not args.no_wait:
        if not args.json:
            print(
                f"deployment {dep['id']}: {bundle['model']} {bundle['version']} to "
                f"{len(dep['devices'])} devices ({dep['summary']})"
            )
        deadline = time.monotonic() + 2 * args.timeout + 30
        while dep["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.25)
            dep = client.get(f"/v1/deployments/{dep['id']}")
    _print_deployment(args, dep)
    if args.no_wait:
        return 0
    return 0 if dep["status"] == "succeeded" else 1


def _print_deployment(args: argparse.Namespace, dep: dict[str, Any]) -> None:
    if args.json:
        print_json(dep)
        return
    print(
        f"deployment {dep['id']}: {dep['model']} {dep['version']}  status {dep['status']}  {dep.get('detail') or ''}"
    )
    print(
        table(
            [(d["device"], d["phase"], d["status"], d["error"] or "") for d in dep["devices"]],
            ["device", "phase", "status", "error"],
        )
    )


def deployments(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.id:
        _print_deployment(args, client.get(f"/v1/deployments/{args.id}"))
        return 0
    print_listing(
        args.json,
        client.get("/v1/deployments")["deployments"],
        lambda d: (
            d["id"],
            _ago(d["created_at"]),
            d["model"],
            d["version"],
            ",".join(f"{k}={v}" for k, v in d["selector"].items()) or "all",
            d["status"],
        ),
        ["deployment", "started", "model", "version", "to", "status"],
    )
    return 0
