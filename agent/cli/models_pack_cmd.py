"""``edge-agent models pack DIR`` and ``models sign DIR``: make a model bundle from a directory of model files.

``pack`` writes ``DIR/manifest.json`` (file hashes, tensors, a smoke test
recorded by running the model here; see ``models/pack.py``) and a tar of the
bundle that ``edge-hub deploy`` takes. Unsigned, the hub signs it on upload
(for an admin); ``--key FILE`` signs it here with a publisher key (``models
keygen``), which boxes trust through ``models.trusted_keys``. ``sign`` signs
an existing bundle's manifest as it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.cli.output import print_json
from agent.core.cli import usage_errors
from agent.errors import BadRequestError


def register(msub: argparse._SubParsersAction) -> None:
    c = msub.add_parser(
        "pack",
        help="make a model bundle (manifest.json and a tar for edge-hub deploy) from a directory of model files",
        description="Hash the model files in DIR (.onnx; also .tflite, .xml + .bin beside it), read the "
        "tensors, record a smoke test by running the ONNX model here, write DIR/manifest.json and a tar "
        "of the bundle. Unsigned unless --key: the hub signs it when an admin uploads it (edge-hub deploy).",
    )
    c.add_argument("directory", type=Path, metavar="DIR", help="directory holding the model file(s)")
    c.add_argument("--name", help="model name (default: the directory's name)")
    c.add_argument("--version", required=True, help="version, e.g. 1.2.0")
    c.add_argument("--task", default="custom", help="what the model does (e.g. anomaly, classification)")
    c.add_argument("--description", default="", help="a line about this version")
    c.add_argument(
        "--key", type=Path, metavar="FILE", help="private key that signs the manifest (models keygen)"
    )
    c.add_argument(
        "--out", type=Path, metavar="FILE", help="the bundle's tar (default: NAME-VERSION.tar here)"
    )
    c.add_argument(
        "--no-smoke", action="store_true", help="record no smoke test (boxes then only check hashes)"
    )
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(handler=usage_errors(pack))

    s = msub.add_parser(
        "sign",
        help="sign a bundle directory's manifest.json with a publisher key",
        description="Sign DIR/manifest.json as it is with the private key in FILE (replacing any signature).",
    )
    s.add_argument("directory", type=Path, metavar="DIR", help="bundle directory holding manifest.json")
    s.add_argument("--key", type=Path, metavar="FILE", required=True, help="private key (models keygen)")
    s.set_defaults(handler=usage_errors(sign))


def _key(path: Path) -> str:
    from models.signing import read_private_key

    if not path.is_file():
        raise BadRequestError(
            f"{path}: no such key file; make one with `edge-agent models keygen --out {path}`"
        )
    return read_private_key(path)


def pack(args: argparse.Namespace) -> int:
    from models.pack import pack_directory, tar_directory

    directory: Path = args.directory
    name = args.name or directory.resolve().name.lower()
    private = _key(args.key) if args.key else None
    manifest = pack_directory(
        directory,
        name=name,
        version=args.version,
        task=args.task,
        description=args.description,
        private_hex=private,
        smoke=not args.no_smoke,
    )
    out = tar_directory(directory, args.out or Path(f"{manifest.name}-{manifest.version}.tar"))
    variants = [v.label for v in manifest.variants]
    info: dict[str, Any] = {
        "name": manifest.name,
        "version": manifest.version,
        "variants": variants,
        "files": [f.path for f in manifest.files],
        "signed": private is not None,
        "smoke_test": manifest.smoke_test is not None,
        "manifest": str(directory / "manifest.json"),
        "bundle": str(out),
        "size": out.stat().st_size,
    }
    if args.json:
        print_json(info)
        return 0
    print(
        f"packed {manifest.name} {manifest.version}: {', '.join(variants)}, "
        f"{'signed' if private else 'unsigned (the hub signs it on upload)'}, "
        f"{'with' if info['smoke_test'] else 'no'} smoke test"
    )
    print(f"bundle: {out} ({info['size']} bytes); deploy it with `edge-hub deploy {out} --to LABEL=VALUE`")
    return 0


def sign(args: argparse.Namespace) -> int:
    from models.manifest import MANIFEST_FILE, parse_manifest_json, sign_manifest

    path = args.directory / MANIFEST_FILE
    if not path.is_file():
        raise BadRequestError(
            f"{args.directory} has no {MANIFEST_FILE}; make one with `edge-agent models pack`"
        )
    read = parse_manifest_json(path.read_bytes())
    signed = sign_manifest(read.manifest, _key(args.key))
    path.write_bytes(signed.to_json())
    print(f"signed {read.manifest.name} {read.manifest.version} with key {signed.signature.key_id}")  # type: ignore[union-attr]
    return 0


__all__ = ["register"]
