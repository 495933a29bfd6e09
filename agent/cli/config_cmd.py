"""``edge-agent config check|show``: validate and display the effective configuration."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.config import load_settings, reference_rows, settings_to_dict, settings_to_toml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="check or show the configuration",
        description="Validate the configuration or print the effective settings.",
    )
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = csub.add_parser(
        "check",
        help="validate the config file and environment; exit 2 when bad",
        description="Load the config exactly as `run` would and report problems.",
    )
    check.add_argument("--json", action="store_true", help='print {"ok", "source"} or {"ok": false, "error"}')
    check.set_defaults(handler=check_config)
    show = csub.add_parser(
        "show",
        help="print the effective configuration (secrets masked)",
        description="Print the settings after defaults, file and EDGE_AGENT_ "
        "variables are merged. Secrets are masked.",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.set_defaults(handler=show_config)
    ref = csub.add_parser(
        "reference",
        help="print every setting with its type, default and meaning",
        description="Print the configuration reference as a Markdown table "
        "(the README's reference is made with it).",
    )
    ref.set_defaults(handler=reference)


def check_config(args: argparse.Namespace) -> int:
    from agent.errors import ConfigError

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        if not args.json:
            raise
        print(json.dumps({"ok": False, "error": str(exc)}, indent=2))
        return 2
    if args.json:
        print(json.dumps({"ok": True, "source": settings.source}, indent=2))
    else:
        print(f"config OK ({settings.source})")
    return 0


def _with_sealed_marked(settings: Any) -> Any:
    """Settings where each secret sealed in ``secrets.json`` is non-empty, so it shows masked.

    ``run`` opens them at start; showing them as empty told the operator the
    secret was missing. Nothing is unsealed here (the seal key may be unreadable
    to whoever runs ``config show``).
    """
    import dataclasses

    from agent.security.seal import SecretsFile

    for name in SecretsFile(settings.data_dir).read():
        *sections, field_name = name.split(".")
        owners = [settings]
        for section in sections:
            owners.append(getattr(owners[-1], section, None))
        if owners[-1] is None or not hasattr(owners[-1], field_name) or getattr(owners[-1], field_name):
            continue
        value: Any = dataclasses.replace(owners[-1], **{field_name: "sealed"})
        for owner, section in zip(reversed(owners[:-1]), reversed(sections), strict=True):
            value = dataclasses.replace(owner, **{section: value})
        settings = value
    return settings


def show_config(args: argparse.Namespace) -> int:
    settings = _with_sealed_marked(load_settings(args.config))
    if args.json:
        print(json.dumps({"source": settings.source, **settings_to_dict(settings)}, indent=2))
    else:
        print(settings_to_toml(settings), end="")
    return 0


def reference(args: argparse.Namespace) -> int:
    print("| key | type | default | what it does |")
    print("|---|---|---|---|")
    for key, type_name, default, doc in reference_rows():
        print(f"| `{key}` | {type_name} | `{default}` | {doc} |")
    from agent.plugins.host import plugin_reference_rows

    for key, type_name, default, doc in plugin_reference_rows(load_settings(args.config)):
        print(f"| `{key}` | {type_name} | `{default}` | {doc} |")
    return 0
