"""``edge-agent plugins``: list, install, enable, disable, remove, logs, new, pack.

Every command works on ``<data_dir>/plugins`` directly, so it works whether or
not the daemon runs; a running daemon notices each change within a second and
applies it without a restart (the same files the API and hub commands change).
Usage errors and refused plugins (unsigned, untrusted, bad settings) exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.config import load_settings
from agent.core.output import print_json, print_json_or, print_listing
from agent.errors import BadRequestError, ConfigError, ConflictError, NotFoundError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plugins",
        help="plugins: sources, detectors, voice skills and sinks in their own processes",
        description="Install, enable and watch plugins; changes apply to the running daemon without a restart.",
    )
    cmds = p.add_subparsers(dest="plugins_command", metavar="SUBCOMMAND", required=True)
    ls = cmds.add_parser(
        "list", help="installed plugins and their state", description="Installed plugins and their state."
    )
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=_files(list_plugins))
    inst = cmds.add_parser(
        "install",
        help="verify and install a signed plugin archive",
        description="Verify a signed plugin archive (.tar.gz) against the trusted publisher keys and install "
        "it; a newer version of an enabled plugin replaces the running one.",
    )
    inst.add_argument("archive", type=Path, help="the archive, as `plugins pack` made it")
    inst.add_argument("--json", action="store_true", help="print JSON")
    inst.set_defaults(handler=_files(install))
    en = cmds.add_parser(
        "enable", help="enable a plugin (starts it)", description="Enable a plugin: the daemon starts it."
    )
    en.add_argument("name", help="the plugin's name, as `plugins list` prints it")
    en.add_argument("--settings", type=Path, metavar="FILE", help="TOML file of the plugin's settings")
    en.add_argument("--json", action="store_true", help="print JSON")
    en.set_defaults(handler=_files(enable))
    dis = cmds.add_parser(
        "disable", help="disable a plugin (stops it)", description="Disable a plugin: the daemon stops it."
    )
    dis.add_argument("name", help="the plugin's name")
    dis.add_argument("--json", action="store_true", help="print JSON")
    dis.set_defaults(handler=_files(disable))
    rm = cmds.add_parser(
        "remove", help="remove an installed archive plugin", description="Stop and delete an archive plugin."
    )
    rm.add_argument("name", help="the plugin's name")
    rm.add_argument("--json", action="store_true", help="print JSON")
    rm.set_defaults(handler=_files(remove))
    lg = cmds.add_parser(
        "logs", help="a plugin's recent output", description="The last lines a plugin logged."
    )
    lg.add_argument("name", help="the plugin's name")
    lg.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default 50)")
    lg.add_argument("--json", action="store_true", help="print JSON")
    lg.set_defaults(handler=_files(logs))
    new = cmds.add_parser(
        "new",
        help="scaffold a new plugin",
        description="Write a minimal plugin of KIND to a new folder NAME.",
    )
    new.add_argument("kind", choices=("source", "detector", "skill", "sink"), help="what the plugin does")
    new.add_argument("name", help="the plugin's name (lowercase letters, digits, - and _)")
    new.add_argument("--dir", type=Path, default=Path("."), help="where to create the folder (default: here)")
    new.set_defaults(handler=_files(scaffold))
    trust = cmds.add_parser(
        "trust",
        help="trust a publisher's public key (for plugins and models)",
        description="Add a publisher's Ed25519 public key (hex, as `edge-agent models keygen` prints it) to "
        "<data_dir>/keys/model_publishers.pub: the trust store plugins share with models.",
    )
    trust.add_argument("key", help="the public key: 64 hex characters")
    trust.set_defaults(handler=_files(trust_key))
    pack = cmds.add_parser(
        "pack",
        help="sign a plugin folder and pack it as an archive",
        description="Sign every file of a plugin folder with a publisher key (`edge-agent models keygen`) "
        "and write NAME-VERSION.tar.gz.",
    )
    pack.add_argument("folder", type=Path, help="the plugin folder (with plugin.toml)")
    pack.add_argument(
        "--key", type=Path, required=True, metavar="FILE", help="the publisher's private key file"
    )
    pack.add_argument("--out", type=Path, help="the archive to write (default: NAME-VERSION.tar.gz here)")
    pack.set_defaults(handler=_files(pack_plugin))


def _files(handler: Any) -> Any:
    """A plugins folder this user cannot write (a root-owned /var/lib/edge-agent): one clear line, exit 1."""
    import functools

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(handler(args) or 0)
        except BrokenPipeError:
            raise  # a reader that left (`| head`): the CLI ends quietly
        except OSError as exc:
            print(
                f"edge-agent: cannot use {exc.filename or 'the plugins folder'}: {exc.strerror or exc}; "
                "run it as the daemon's user (or root), or pass --config with your own data_dir",
                file=sys.stderr,
            )
            return 1

    return wrapped


def _store(args: argparse.Namespace) -> Any:
    from agent.plugins.host import store_for

    return store_for(load_settings(args.config))


def _usage(message: str) -> int:
    print(f"edge-agent: {message}", file=sys.stderr)
    return 2


def _known(store: Any, name: str) -> Any:
    try:
        return store.get(name)
    except NotFoundError as exc:
        raise SystemExit(_usage(str(exc))) from None


def list_plugins(args: argparse.Namespace) -> int:
    from agent.plugins.manage import listing

    print_listing(
        args.json,
        listing(load_settings(args.config)),
        lambda r: (
            r["name"],
            r["version"],
            ",".join(r["kinds"]),
            r["origin"],
            r["state"],
            r["pid"] or "",
            r["restarts"],
            r["reason"][:70],
        ),
        ["name", "version", "kinds", "origin", "state", "pid", "restarts", "reason"],
    )
    return 0


def install(args: argparse.Namespace) -> int:
    store = _store(args)
    if not args.archive.is_file():
        return _usage(f"{args.archive}: no such file; pass the .tar.gz that `edge-agent plugins pack` wrote")
    try:
        manifest, previous = store.install(args.archive)
    except BadRequestError as exc:
        return _usage(f"plugin refused: {exc}")
    result = {"name": manifest.name, "version": manifest.version, "replaced": previous}
    if args.json:
        print_json(result)
    else:
        upgraded = f" (replaces {previous})" if previous and previous != manifest.version else ""
        print(f"installed {manifest.name} {manifest.version}{upgraded}")
        if not store.read_state().get(manifest.name, {}).get("enabled"):
            print(f"start it with: edge-agent plugins enable {manifest.name}")
    return 0


def enable(args: argparse.Namespace) -> int:
    from agent.plugins import manage

    values = None
    if args.settings is not None:
        from agent.config import read_toml

        try:
            values = read_toml(args.settings)
        except ConfigError as exc:
            return _usage(str(exc))
    try:
        manage.enable(load_settings(args.config), args.name, values)
    except (BadRequestError, NotFoundError) as exc:
        return _usage(str(exc))
    except ConfigError as exc:
        return _usage(f"plugin {args.name} not enabled: {exc}")
    return _said(args, {"name": args.name, "enabled": True}, f"enabled {args.name}")


def disable(args: argparse.Namespace) -> int:
    store = _store(args)
    _known(store, args.name)
    store.set_enabled(args.name, False, reason="disabled by an operator")
    return _said(args, {"name": args.name, "enabled": False}, f"disabled {args.name}")


def remove(args: argparse.Namespace) -> int:
    store = _store(args)
    _known(store, args.name)
    try:
        store.remove(args.name)
    except (BadRequestError, ConflictError) as exc:
        return _usage(str(exc))
    return _said(args, {"name": args.name, "removed": True}, f"removed {args.name}")


def logs(args: argparse.Namespace) -> int:
    store = _store(args)
    _known(store, args.name)
    if args.lines < 0:
        return _usage("--lines must be 0 or more")
    lines = store.tail_log(args.name, args.lines)
    if args.json:
        print_json({"name": args.name, "lines": lines})
    elif lines:
        print("\n".join(lines))
    else:
        print(f"no output from {args.name} yet")
    return 0


def scaffold(args: argparse.Namespace) -> int:
    from agent.plugins.scaffold import write_plugin

    try:
        folder = write_plugin(args.kind, args.name, args.dir)
    except BadRequestError as exc:
        return _usage(str(exc))
    print(f"wrote {folder}; sign and pack it with: edge-agent plugins pack {folder} --key KEY")
    return 0


def pack_plugin(args: argparse.Namespace) -> int:
    from agent.plugins.scaffold import pack
    from models.signing import read_private_key

    try:
        archive = pack(args.folder, read_private_key(args.key), args.out)
    except BadRequestError as exc:
        return _usage(str(exc))
    print(f"wrote {archive}")
    return 0


def _said(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    print_json_or(getattr(args, "json", False), data, text)
    return 0


def trust_key(args: argparse.Namespace) -> int:
    from models import signing
    from sync.keys import PUBLISHER_KEYS_FILE

    key = args.key.strip().lower()
    try:
        key_id = signing.key_id(key)
    except BadRequestError as exc:
        return _usage(f"{exc}; pass the public key `edge-agent models keygen` printed")
    path = load_settings(args.config).data_path / PUBLISHER_KEYS_FILE
    known = signing.load_trusted_keys_file(path) if path.is_file() else []
    if key not in known:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(key + "\n")
    print(f"trusted publisher key {key_id} (plugins and models) in {path}")
    return 0
