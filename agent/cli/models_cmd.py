"""``edge-agent models``: the model store on this box, and the running daemon's loaded models.

Store commands (``list``, ``install``, ``verify``, ``activate``, ``rollback``,
``remove``, ``quantize``, ``keygen``) work on ``<data_dir>/models`` directly;
the store is safe to change while the daemon runs (flock, atomic renames).
``load`` and ``unload`` ask the running daemon through its local API, since
loading a model into this short-lived process would help no one. ``bench``
loads the model here, through the same manager the daemon uses.

Trusted publisher keys (hex, one per line): ``--trusted-keys FILE``, else
every key from ``models.trusted_keys`` (when the config has it),
``sync.trusted_keys``, ``sync.trusted_keys_file`` (default
``<data_dir>/hub_keys.txt``) and ``<data_dir>/keys/model_publishers.pub``. The key that signs quantized
versions: ``--key FILE``, else ``<data_dir>/keys/model_signing.key`` (make it
with ``models keygen`` and add its public key to the trusted file).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from agent.cli.output import print_json, table
from agent.config import Settings, load_settings
from agent.errors import BadRequestError, ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="install, verify, load and quantize models",
        description="Manage the model store and the daemon's loaded models.",
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    def cmd(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        c = msub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        c.set_defaults(handler=handler)
        return c

    c = cmd("list", "list installed models, and what the running daemon serves", list_models)
    c.add_argument("--json", action="store_true", help="print JSON")
    c = cmd("install", "verify a signed bundle and install it", install)
    c.add_argument(
        "bundle",
        type=Path,
        help="bundle directory (holding manifest.json), its manifest.json, or the bundle's tar "
        "(as `models pack` writes it)",
    )
    c.add_argument("--no-activate", action="store_true", help="install without making it the active version")
    c.add_argument("--trusted-keys", type=Path, metavar="FILE", help="trusted publisher keys (hex per line)")
    c = cmd("verify", "re-hash an installed version and check its signature", verify)
    c.add_argument("name", help="model name")
    c.add_argument("--version", help="version (default: the active one)")
    c.add_argument("--trusted-keys", type=Path, metavar="FILE", help="trusted publisher keys (hex per line)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c = cmd("activate", "make an installed version the active one", activate)
    c.add_argument("name", help="model name")
    c.add_argument("version", help="version to activate")
    c = cmd("rollback", "re-activate the previously active version", rollback)
    c.add_argument("name", help="model name")
    c = cmd("remove", "delete an installed version", remove)
    c.add_argument("name", help="model name")
    c.add_argument("version", help="version to delete")
    c.add_argument("--force", action="store_true", help="also when it is the active version")
    c = cmd("load", "ask the running daemon to load a model", load)
    c.add_argument("name", help="model name")
    c.add_argument("--version", help="version (default: the active one)")
    c.add_argument("--pin", action="store_true", help="keep it loaded (never idle-unloaded or evicted)")
    c.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the daemon")
    c = cmd("unload", "ask the running daemon to unload a model", unload)
    c.add_argument("name", help="model name")
    c.add_argument("--force", action="store_true", help="also when pinned (it is unpinned)")
    c.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the daemon")
    c = cmd("quantize", "make an FP16 or INT8 version of an installed FP32 ONNX model", quantize)
    c.add_argument("name", help="model name")
    c.add_argument("--method", required=True, choices=["fp16", "int8-dynamic", "int8-static"], help="method")
    c.add_argument("--calibration", type=Path, help="calibration .npy/.npz file or directory (int8-static)")
    c.add_argument("--version", help="source version (default: the active one)")
    c.add_argument("--new-version", help="version to create (default: <source>+<fp16|int8|int8s>)")
    c.add_argument("--key", type=Path, metavar="FILE", help="private key that signs the new version")
    c.add_argument("--trusted-keys", type=Path, metavar="FILE", help="trusted publisher keys (hex per line)")
    c.add_argument("--activate", action="store_true", help="activate the new version")
    c.add_argument("--json", action="store_true", help="print JSON")
    c = cmd("bench", "time loading and inference of an installed model on this box", bench)
    c.add_argument("name", help="model name")
    c.add_argument("--version", help="version (default: the active one)")
    c.add_argument("--runs", type=int, default=100, help="inferences to time")
    c.add_argument("--json", action="store_true", help="print JSON")
    c = cmd("keygen", "make an Ed25519 key pair for signing models", keygen)
    c.add_argument("--out", type=Path, help="private key file (default: <data_dir>/keys/model_signing.key)")
    from agent.cli import models_pack_cmd

    models_pack_cmd.register(msub)  # pack DIR, sign DIR: making a bundle


# -- helpers ----------------------------------------------------------------------------------------------


def _store(settings: Settings) -> Any:
    from models.store import ModelStore

    return ModelStore(settings.data_path / "models")


def _trusted(settings: Settings, path: Path | None) -> list[str]:
    from models.signing import load_trusted_keys_file

    if path is not None:
        return load_trusted_keys_file(path)
    keys: list[str] = list(getattr(getattr(settings, "models", None), "trusted_keys", ()) or ())
    # the hub signs model manifests with the key it signs commands with (design: Security)
    sync = getattr(settings, "sync", None)
    keys += list(getattr(sync, "trusted_keys", ()) or ())
    hub_file = getattr(sync, "trusted_keys_file", "") or ""
    candidates = [Path(hub_file)] if hub_file else [settings.data_path / "hub_keys.txt"]
    candidates.append(settings.data_path / "keys" / "model_publishers.pub")
    for candidate in candidates:
        if candidate.is_file():
            keys += load_trusted_keys_file(candidate)
    if not keys:
        raise ConfigError(
            "no trusted model keys: pass --trusted-keys FILE, set sync.trusted_keys (the hub's key), "
            f"or write publisher keys (hex, one per line) to {candidates[-1]}"
        )
    return list(dict.fromkeys(keys))


def _post(
    settings: Settings, path: str, body: dict[str, Any], timeout: float, token: str | None = None
) -> dict[str, Any]:
    from agent.cli.apiclient import DaemonClient

    return DaemonClient(settings, token, timeout).call("POST", path, body)


# -- commands ----------------------------------------------------------------------------------------------


def _served(settings: Settings, token: str | None) -> tuple[str, list[dict[str, Any]]] | None:
    """(daemon URL, the models the running daemon serves), or None when no daemon answers."""
    from agent.cli.apiclient import DaemonClient, DaemonUnreachable

    client = DaemonClient(settings, token, timeout=3.0)
    try:
        status, body = client.request("GET", "/v1/models")
    except DaemonUnreachable:
        return None
    if status != 200:
        message = (body.get("error") or {}).get("message", f"HTTP {status}") if isinstance(body, dict) else ""
        print(f"edge-agent: the running daemon did not list its models: {message}", file=sys.stderr)
        return None
    return client.base_url, list(body.get("data") or body.get("models") or [])


def _runs_on(d: dict[str, Any]) -> str:
    if d.get("device"):
        return f"{d.get('runtime')}@{d['device']}"
    return str(d.get("would_run_on") or "")


def list_models(args: argparse.Namespace) -> int:
    """The store's models, and what the running daemon serves (packaged voice models too)."""
    settings = load_settings(args.config)
    models = _store(settings).list()
    served = _served(settings, getattr(args, "token", None))
    daemon = {m["name"]: m for m in served[1]} if served else {}
    if args.json:
        rows: list[dict[str, Any]] = [
            {
                "name": m.name,
                "version": m.version,
                "active": m.active,
                "previous": m.previous,
                "task": m.manifest.task,
                "variants": [v.label for v in m.manifest.variants],
                "size_bytes": m.size_bytes(),
                "memory_bytes": m.manifest.memory_bytes,
                **({"state": daemon[m.name]["state"]} if m.active and m.name in daemon else {}),
            }
            for m in models
        ]
        stored = {m.name for m in models}
        rows += [
            {
                "name": n,
                "version": d.get("active_version"),
                "active": True,
                "state": d["state"],
                "source": "daemon",
            }
            for n, d in daemon.items()
            if n not in stored
        ]
        print_json(rows)
        return 0
    if served:
        print(f"served by the running daemon ({served[0]}):")
        if not daemon:
            print("  nothing (no model is installed or packaged)")
        else:
            print(
                table(
                    [
                        (
                            d["name"],
                            d.get("active_version") or "",
                            d["state"] + (" (pinned)" if d.get("pinned") else ""),
                            _runs_on(d),
                        )
                        for d in daemon.values()
                    ],
                    ["name", "version", "state", "runs on"],
                )
            )
        print()
    if not models:
        print(f"no models installed in {settings.data_path / 'models'}")
        return 0
    rows_text = [
        (
            m.name,
            m.version,
            "active" if m.active else ("previous" if m.previous else ""),
            m.manifest.task,
            ", ".join(v.label for v in m.manifest.variants),
            f"{m.size_bytes() / 1e6:.1f} MB",
        )
        for m in models
    ]
    if served:
        print(f"installed in {settings.data_path / 'models'}:")
    print(table(rows_text, ["name", "version", "state", "task", "variants", "size"]))
    return 0


def install(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    m = _store(settings).install(
        args.bundle, _trusted(settings, args.trusted_keys), activate=not args.no_activate
    )
    print(f"installed {m.name} {m.version}" + (" (active)" if m.active else ""))
    return 0


def verify(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    trusted = _trusted(settings, args.trusted_keys)
    report = _store(settings).verify(args.name, args.version, trusted)
    if args.json:
        print_json(report.to_dict())
    elif report.ok:
        print(f"{report.name} {report.version}: OK (signed by {report.key_id})")
    else:
        print(f"{report.name} {report.version}: FAILED")
        for problem in report.problems:
            print(f"  {problem}")
    return 0 if report.ok else 1


def activate(args: argparse.Namespace) -> int:
    m = _store(load_settings(args.config)).activate(args.name, args.version)
    print(f"{m.name}: {m.version} is active")
    return 0


def rollback(args: argparse.Namespace) -> int:
    m = _store(load_settings(args.config)).rollback(args.name)
    print(f"{m.name}: rolled back to {m.version}")
    return 0


def remove(args: argparse.Namespace) -> int:
    _store(load_settings(args.config)).remove(args.name, args.version, force=args.force)
    print(f"removed {args.name} {args.version}")
    return 0


def load(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    body: dict[str, Any] = {"pin": args.pin}
    if args.version:
        body["version"] = args.version
    st = _post(settings, f"/v1/models/{args.name}/load", body, args.timeout, args.token)
    print(
        f"{st['name']} {st.get('version')} loaded on {st.get('runtime')}/{st.get('device')} "
        f"({st.get('precision')}, {st.get('memory_bytes', 0) / 1e6:.1f} MB, {st.get('load_ms')} ms)"
        + (" pinned" if st.get("pinned") else "")
    )
    for f in st.get("fallback", []):
        print(f"  skipped {f['what']}: {f['reason']}")
    return 0


def unload(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    res = _post(settings, f"/v1/models/{args.name}/unload", {"force": args.force}, args.timeout, args.token)
    print(f"{args.name}: {'unloaded' if res['unloaded'] else 'was not loaded'}")
    return 0


def _signing_key(settings: Settings, path: Path | None) -> str:
    from models.signing import read_private_key

    path = path or settings.data_path / "keys" / "model_signing.key"
    if not path.is_file():
        raise ConfigError(f"no signing key at {path}: make one with `edge-agent models keygen` or pass --key")
    return read_private_key(path)


def quantize(args: argparse.Namespace) -> int:
    from models.quantize import quantize_model

    settings = load_settings(args.config)
    result = quantize_model(
        _store(settings),
        args.name,
        args.method,
        private_key_hex=_signing_key(settings, args.key),
        trusted_keys=_trusted(settings, args.trusted_keys),
        version=args.version,
        new_version=args.new_version,
        calibration=args.calibration,
        activate=args.activate,
    )
    d = result.to_dict()
    if args.json:
        print_json(d)
        return 0
    print(f"{d['name']} {d['version']}: {d['method']} from {d['source_version']}")
    print(f"  size {d['source_size_bytes']} -> {d['size_bytes']} bytes (x{d['size_ratio']})")
    print(
        f"  smoke vector: max abs error {d['smoke_max_abs_error']:.3g}, relative {d['smoke_max_rel_error']:.3g}"
    )
    if d["calibration_samples"]:
        print(
            f"  calibration ({d['calibration_samples']} samples): max abs error "
            f"{d['calibration_max_abs_error']:.3g}, relative {d['calibration_max_rel_error']:.3g}"
        )
    print(
        "  active"
        if d["active"]
        else f"  not active: `edge-agent models activate {d['name']} {d['version']}`"
    )
    return 0


def _bench_feed(model: Any) -> dict[str, Any]:
    """The smoke vector when there is one, else zeros shaped like the inputs (dynamic dims = 1)."""
    import numpy as np

    from models.smoke import smoke_inputs

    if model.manifest.smoke_test is not None:
        return smoke_inputs(model.manifest)
    feed = {}
    for spec in model.manifest.inputs:
        if spec.dtype not in (
            "float32",
            "float16",
            "float64",
            "int8",
            "uint8",
            "int16",
            "int32",
            "int64",
            "bool",
        ):
            raise BadRequestError(f"cannot make a bench input of dtype {spec.dtype}")
        shape = [d if d is not None and d > 0 else 1 for d in spec.shape]
        feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feed


async def _bench(settings: Settings, name: str, version: str | None, runs: int) -> dict[str, Any]:
    from models.manager import ManagerSettings, ModelManager

    store = _store(settings)
    model = store.get(name, version)
    feed = _bench_feed(model)
    async with ModelManager(store, ManagerSettings(idle_timeout_s=None)) as mgr:
        t0 = time.perf_counter()
        await mgr.load(name, version)
        load_ms = (time.perf_counter() - t0) * 1000
        for _ in range(runs):
            await mgr.infer(name, feed)
        st = mgr.model_status(name)
    return {"name": name, "version": model.version, "load_ms": round(load_ms, 1), **st}


def bench(args: argparse.Namespace) -> int:
    if args.runs < 1:
        raise BadRequestError("--runs must be at least 1")
    settings = load_settings(args.config)
    st = asyncio.run(_bench(settings, args.name, args.version, args.runs))
    if args.json:
        print_json(st)
        return 0
    lat = st["latency"]
    print(f"{st['name']} {st['version']} on {st['runtime']}/{st['device']} ({st['precision']})")
    print(f"  load {st['load_ms']} ms, memory {st['memory_bytes'] / 1e6:.1f} MB")
    print(f"  {lat['count']} runs: mean {lat['mean_ms']} ms, p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms")
    return 0


def keygen(args: argparse.Namespace) -> int:
    from models.signing import generate_keypair, write_private_key

    settings = load_settings(args.config)
    out = args.out or settings.data_path / "keys" / "model_signing.key"
    if out.exists():
        raise ConfigError(f"{out} exists; refusing to overwrite a key")
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    kp = generate_keypair()
    write_private_key(out, kp.private_hex)
    print(f"private key: {out}", file=sys.stderr)
    print(f"public key (add to the trusted keys), id {kp.key_id}:", file=sys.stderr)
    print(kp.public_hex)
    return 0
