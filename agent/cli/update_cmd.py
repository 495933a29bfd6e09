"""``edge-agent update ...``: signed updates (TUF-style metadata) for models, configs and the agent itself.

``init`` trusts a first root; ``refresh`` pulls and verifies metadata;
``list`` shows targets and installed versions; ``fetch`` downloads a verified
target (an agent bundle is staged for the updater); ``apply-pending`` is what
``edge-agent-update.service`` runs, as root, to install a staged agent bundle
into the spare environment; ``recover`` finishes an interrupted install.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from agent.config import Settings, load_settings
from agent.core.output import print_listing
from agent.security import agent_update
from agent.security.selfupdate import Installer, service_health
from agent.security.updates import DirectoryFetcher, Fetcher, HttpFetcher, UpdateClient, default_state_dir

DEFAULT_PREFIX = "/opt/edge-agent"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "update",
        help="signed updates for models, configs and the agent",
        description="Verify and install updates described by signed, versioned, expiring metadata.",
    )
    usub = p.add_subparsers(dest="update_command", metavar="ACTION", required=True)
    init = usub.add_parser(
        "init",
        help="trust a first root metadata file",
        description="Trust ROOT (self-signed to its threshold) as the start of the chain.",
    )
    init.add_argument("root", type=Path, help="root.json from the update publisher")
    init.set_defaults(handler=init_root)
    refresh = usub.add_parser(
        "refresh",
        help="fetch and verify the newest metadata",
        description="Walk root rotations, then timestamp, snapshot and targets.",
    )
    refresh.add_argument("--repo", required=True, help="repository URL (http[s]://) or directory")
    refresh.set_defaults(handler=refresh_metadata)
    lst = usub.add_parser(
        "list",
        help="show trusted targets and installed versions",
        description="List the targets in the trusted metadata.",
    )
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(handler=list_targets)
    fetch = usub.add_parser(
        "fetch",
        help="download a verified target (agent bundles are staged for install)",
        description="Download TARGET, checking its length and hash against the metadata.",
    )
    fetch.add_argument("target", help="target name, e.g. agent/edge-agent-0.2.0.tar")
    fetch.add_argument("--repo", required=True, help="repository URL (http[s]://) or directory")
    fetch.add_argument("--dest", type=Path, help="where to put a model or config bundle (default: state dir)")
    fetch.set_defaults(handler=fetch_target)
    apply = usub.add_parser(
        "apply-pending",
        help="install a staged agent bundle (run by edge-agent-update.service, as root)",
        description="Re-verify the staged bundle from the anchor root, install it into the spare environment, "
        "switch, health-check, and switch back when unhealthy.",
    )
    _installer_args(apply)
    apply.set_defaults(handler=apply_pending)
    recover = usub.add_parser(
        "recover",
        help="finish or undo an interrupted agent install",
        description="Recover from a crash during an agent install.",
    )
    _installer_args(recover)
    recover.set_defaults(handler=recover_install)


def _installer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"install prefix (default {DEFAULT_PREFIX})")
    p.add_argument(
        "--restart-cmd",
        default="systemctl restart edge-agent.service",
        help="how to restart the agent after the switch",
    )
    p.add_argument("--health-url", help="healthy when this answers 200 (default: the agent's /readyz)")
    p.add_argument("--health-timeout", type=float, default=90.0, help="seconds to wait for health")


def _client(settings: Settings, repo: str | None = None) -> UpdateClient:
    fetcher: Fetcher | None = None
    if repo:
        fetcher = HttpFetcher(repo) if repo.startswith(("http://", "https://")) else DirectoryFetcher(repo)
    return UpdateClient(
        default_state_dir(settings.data_dir), fetcher, anchor_root=settings.security.update_root_file or None
    )


def _installer(settings: Settings, args: argparse.Namespace) -> Installer:
    host = "127.0.0.1" if settings.api.host in ("0.0.0.0", "::") else settings.api.host
    url = args.health_url or f"http://{host}:{settings.api.port}/readyz"
    return Installer(
        args.prefix, health=service_health(shlex.split(args.restart_cmd), url, args.health_timeout)
    )


def init_root(args: argparse.Namespace) -> int:
    version = _client(load_settings(args.config)).init_root(args.root.read_bytes())
    print(f"trusted root version {version}")
    return 0


def refresh_metadata(args: argparse.Namespace) -> int:
    targets = _client(load_settings(args.config), args.repo).refresh()
    print(
        f"metadata verified: targets version {targets['version']}, {len(targets.get('targets') or {})} target(s)"
    )
    return 0


def list_targets(args: argparse.Namespace) -> int:
    client = _client(load_settings(args.config))
    signed = (client._load("targets") or {}).get("signed", {})
    installed = client.installed()
    rows = []
    for name in sorted(signed.get("targets") or {}):
        info = client.target(name, signed)
        rows.append(
            {
                "name": name,
                "kind": info.kind,
                "product": info.product,
                "version": info.version,
                "bytes": info.length,
                "installed": installed.get(f"{info.kind}/{info.product}", ""),
            }
        )
    print_listing(
        args.json,
        rows,
        lambda r: list(r.values()),
        ["TARGET", "KIND", "PRODUCT", "VERSION", "BYTES", "INSTALLED"],
        empty="no trusted targets yet: run `edge-agent update refresh --repo ...`",
        data={"targets_version": signed.get("version"), "expires": signed.get("expires"), "targets": rows},
    )
    return 0


def fetch_target(args: argparse.Namespace) -> int:
    client = _client(load_settings(args.config), args.repo)
    info = client.target(args.target)
    if info.kind == "agent":
        got = agent_update.stage(client, args.target)
        print(f"{got.path}: verified and staged; edge-agent-update.service installs it")
    else:
        got = client.download(args.target, args.dest or client.state_dir / "downloads")
        print(f"{got.path}: verified ({info.kind} {info.product} {info.version})")
    return 0


def apply_pending(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    result = agent_update.apply_pending(
        default_state_dir(settings.data_dir),
        _installer(settings, args),
        anchor_root=settings.security.update_root_file,
    )
    print(result.message)
    return 0 if result.outcome in ("installed", "recovered", "nothing", "abandoned") else 1


def recover_install(args: argparse.Namespace) -> int:
    result = _installer(load_settings(args.config), args).recover()
    print(result.message)
    return 0 if result.outcome != "rolled_back" else 1
