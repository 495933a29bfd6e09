"""``edge-hub bundle build``: a model bundle from a directory of model files, or a config bundle from a TOML
file, signed with this hub's key (the key file here, as ``keys`` without ``--hub``), as a tar for ``deploy``.

A model directory is packed as ``edge-agent models pack`` does (``models/pack.py``); a config bundle is a
tar with one ``manifest.json`` of kind ``config`` whose ``settings`` are the TOML file's tree, checked here
against what no bundle may change (``security.*``, trusted keys, identity: ``setting_protected``).
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import tomllib

from agent.core.cli import usage_errors
from agent.core.errors import BadRequestError, ConfigError
from agent.core.output import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bundle",
        help="build a model or config bundle signed with this hub's key",
        description="Build bundles for `edge-hub deploy`.",
    )
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    b = bsub.add_parser(
        "build",
        help="a model bundle from DIR, or a config bundle from --config FILE.toml, signed with the hub key",
        description="Model: hash the model files in DIR, read their tensors, record a smoke test, write "
        "DIR/manifest.json and a tar. Config: a tar holding a manifest of kind config whose settings are "
        "the TOML file's. Either is signed with the hub's key file (--data-dir, or the config's data_dir / "
        "key_file); --unsigned leaves signing to the hub at upload (needs an admin token then).",
    )
    b.add_argument(
        "directory", nargs="?", type=Path, metavar="DIR", help="directory of model files (model bundle)"
    )
    b.add_argument(
        "--config-file", type=Path, metavar="FILE.toml", help="settings for a config bundle instead"
    )
    b.add_argument("--name", help="bundle name (default: the directory's or the file's name)")
    b.add_argument("--version", required=True, help="version, e.g. 1.2.0")
    b.add_argument("--task", default="custom", help="model bundles: what the model does")
    b.add_argument("--description", default="", help="a line about this version")
    b.add_argument(
        "--out", type=Path, metavar="FILE", help="the tar to write (default: NAME-VERSION.tar here)"
    )
    b.add_argument("--data-dir", metavar="DIR", help="where the hub key lives (data_dir)")
    b.add_argument("--unsigned", action="store_true", help="do not sign (the hub signs it on upload)")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(handler=usage_errors(build))  # a bad directory, file, name or setting: exit 2


def _hub_key(args: argparse.Namespace) -> tuple[str, str]:
    """(private hex, key id) of this hub's current key."""
    from sync.hub.keys import HubKeys
    from sync.hub.settings import load_hub_settings

    settings = load_hub_settings(args.config, overrides={"data_dir": args.data_dir})
    keys = HubKeys(settings.key_path)
    if not keys.path.exists():
        raise ConfigError(
            f"no hub key at {keys.path}: give the hub's --data-dir (its key is made at the first `edge-hub run`), "
            "or --unsigned to let the hub sign it on upload"
        )
    key = keys.current()
    return key.private_hex, key.key_id


def _config_bundle(source: Path, name: str, version: str, description: str, key: str | None) -> bytes:
    from sync.config_bundle import parse_config_document, refuse_protected, sign_config_document
    from sync.hub.cli_local import _local_operator

    try:
        tree = tomllib.loads(source.read_text())
    except FileNotFoundError:
        raise BadRequestError(f"{source}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadRequestError(f"{source}: not valid TOML: {exc}") from None
    refuse_protected(tree, str(source))
    body: dict[str, Any] = {"kind": "config", "name": name, "version": version, "settings": tree}
    if description:
        body["description"] = description
    data = json.dumps({"manifest": body}, sort_keys=True).encode()
    parse_config_document(data)  # the same checks a box makes
    if key:
        data = sign_config_document(data, key, signed_for=_local_operator())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build(args: argparse.Namespace) -> int:
    if (args.directory is None) == (args.config_file is None):
        raise BadRequestError("give a model directory DIR or --config-file FILE.toml (one of them)")
    key, key_id = (None, "") if args.unsigned else _hub_key(args)
    if args.config_file is not None:
        name = args.name or args.config_file.stem
        out = args.out or Path(f"{name}-{args.version}.tar")
        out.write_bytes(_config_bundle(args.config_file, name, args.version, args.description, key))
        kind = "config"
    else:
        from models.pack import pack_directory, tar_directory

        manifest = pack_directory(
            args.directory,
            name=args.name or args.directory.resolve().name.lower(),
            version=args.version,
            task=args.task,
            description=args.description,
            private_hex=key,
        )
        name = manifest.name
        out = tar_directory(args.directory, args.out or Path(f"{name}-{args.version}.tar"))
        kind = "model"
    info = {
        "kind": kind,
        "name": name,
        "version": args.version,
        "bundle": str(out),
        "signed_by": key_id or None,
    }
    if args.json:
        print_json(info)
    else:
        signed = f"signed with hub key {key_id}" if key_id else "unsigned (the hub signs it on upload)"
        print(f"built {kind} bundle {name} {args.version}: {out}, {signed}")
        print(f"deploy it with `edge-hub deploy {out} --to LABEL=VALUE --canary 50%`")
    return 0


__all__ = ["register"]
