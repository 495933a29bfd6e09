"""``edge-hub run`` and ``edge-hub keys``: the commands that act on this machine.

``keys`` acts on the key file here, unless ``--hub`` / ``EDGE_HUB_URL`` names
a running hub: then it asks that hub's API (``GET /v1/keys``, and
``POST /v1/keys/rotate`` with an admin token), so a rotation never touches an
unrelated key on the operator's own machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from agent.core import eventloop
from agent.core.output import print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the hub in the foreground",
        description="Run the hub until SIGTERM or Ctrl-C: MQTT intake (shared subscriptions), the device "
        "registry, the operator API. Flags override the config file and EDGE_HUB_ variables.",
    )
    p.add_argument("--mqtt-url", metavar="URL", help="broker, mqtt://host:port (mqtt.url)")
    p.add_argument("--db", metavar="PATH_OR_DSN", help="SQLite file or postgresql:// DSN (db)")
    p.add_argument("--api-port", type=int, metavar="N", help="operator API port (api.port)")
    p.add_argument("--api-host", metavar="HOST", help="operator API address (api.host)")
    p.add_argument("--data-dir", metavar="DIR", help="key, bundles and default database (data_dir)")
    p.add_argument("--share-group", metavar="NAME", help="shared-subscription group (mqtt.share_group)")
    p.add_argument(
        "--client-id",
        metavar="ID",
        help="MQTT client id of this instance's persistent session (default: a stable id derived from "
        "the host, data dir, database and API port)",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="certificate for HTTPS on the API (api.tls_cert)")
    p.add_argument("--tls-key", metavar="PEM", help="its private key (api.tls_key)")
    p.add_argument(
        "--advertise",
        action="store_true",
        help="announce this hub on the LAN (zeroconf _edge-hub._tcp: the broker devices use and this API), "
        "so agents with no mqtt.url find it",
    )
    p.add_argument(
        "--advertise-interface",
        action="append",
        metavar="ADDR",
        help="announce on this address only (repeatable; default: every interface, as this host's address)",
    )
    p.set_defaults(handler=run)

    k = sub.add_parser(
        "keys",
        help="show (or create) the hub's signing key; rotate it",
        description="The hub signs every command with its Ed25519 key (created on first use, mode 0600). "
        "Devices must trust its public key. Acts on the key file on this machine, or, with --hub or "
        "EDGE_HUB_URL, on that running hub through its API (rotate needs an admin token).",
    )
    k.add_argument("--json", action="store_true", help="print JSON")
    k.add_argument("--data-dir", metavar="DIR", help="where the key lives (data_dir)")
    ksub = k.add_subparsers(dest="keys_command", metavar="ACTION")
    show = ksub.add_parser(
        "show",
        help="print the key id and public key (default)",
        description="Print the key id and public key, creating the key if there is none.",
    )
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    show.set_defaults(handler=keys_show)
    rot = ksub.add_parser(
        "rotate",
        help="make a new key, announce it to every device (signed by the old key), then switch",
        description="Make a new key; send every registered device a trust.rotate command carrying the new "
        "public key and a rotation announcement, both signed by the OLD key (the announcement retires the "
        "old key on the device); then switch the hub to the new key (the old one is kept as <key>.prev). "
        "Connects to the broker and database itself; a running hub picks the new key up at its next "
        "command. All hub instances must share the key file.",
    )
    rot.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    rot.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for devices to confirm (needs a running hub to store results)",
    )
    rot.set_defaults(handler=keys_rotate)
    k.set_defaults(handler=keys_show)


def _settings(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Any:
    from sync.hub.settings import load_hub_settings

    return load_hub_settings(args.config, overrides=overrides)


def run(args: argparse.Namespace) -> int:
    from agent.core.logs import setup_logging
    from sync.hub.service import HubService

    settings = _settings(
        args,
        {
            "mqtt.url": args.mqtt_url,
            "db": args.db,
            "api.port": args.api_port,
            "api.host": args.api_host,
            "data_dir": args.data_dir,
            "mqtt.share_group": args.share_group,
            "mqtt.client_id": args.client_id,
            "api.tls_cert": args.tls_cert,
            "api.tls_key": args.tls_key,
        },
    )
    setup_logging(settings.log.level, settings.log.format)
    if not args.advertise:
        return eventloop.run(HubService(settings).run(), settings.event_loop)
    from sync.hub.advertise import advertised

    with advertised(settings, args.advertise_interface or []):
        return eventloop.run(HubService(settings).run(), settings.event_loop)


def _remote(args: argparse.Namespace) -> Any:
    """A client of the hub named by --hub / EDGE_HUB_URL, or None to act on the local key file."""
    from agent.core.errors import BadRequestError
    from sync.hub.cli import client_for, remote_url

    if not remote_url(args):
        return None
    if getattr(args, "data_dir", None):
        raise BadRequestError(
            "--data-dir names a local key file, --hub / EDGE_HUB_URL a running hub: give one of them"
        )
    return client_for(args, timeout=getattr(args, "wait", 10.0) + 30)


def _local_operator() -> str:
    """Who runs a local key command, for the devices' audit logs: the hub host's user."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"local:{user}@{socket.gethostname()}"[:128]


def keys_show(args: argparse.Namespace) -> int:
    from sync.hub.keys import HubKeys

    client = _remote(args)
    if client is not None:
        out = client.get("/v1/keys")
        if args.json:
            print_json(out)
        else:
            print(f"hub:        {client.base}\nkey id:     {out['key_id']}\npublic key: {out['public_key']}")
            if out.get("previous"):
                print(f"previous:   {out['previous']['key_id']}")
        return 0
    settings = _settings(args, {"data_dir": getattr(args, "data_dir", None)})
    keys = HubKeys(settings.key_path)
    key, created = keys.ensure()
    prev = keys.previous()
    out = {
        "key_file": str(keys.path),
        "created": created,
        "key_id": key.key_id,
        "public_key": key.public_hex,
        "previous": {"key_id": prev.key_id, "public_key": prev.public_hex} if prev else None,
    }
    if args.json:
        print_json(out)
        return 0
    if created:
        print(f"created a new signing key in {keys.path} (mode 0600)")
    print(f"key id:     {key.key_id}\npublic key: {key.public_hex}")
    if prev:
        print(f"previous:   {prev.key_id} (kept in {keys.prev_path})")
    print("devices must trust this public key to accept the hub's commands")
    return 0


def rotation_args(old_private_hex: str, new_public_hex: str, *, ttl_s: float) -> dict[str, Any]:
    """Args of ``trust.rotate``: the new key, and the announcement the agent's trust store checks.

    The command is signed by the old key like any command; the announcement
    (``sync.rotation.make_rotation``) is a second, standalone signature
    by the old key that also retires it, so a device that took the new key no
    longer obeys the old one, and replaying the announcement later fails.
    """
    from models import signing
    from sync.rotation import make_rotation

    old_id = signing.key_id(signing.public_key_of(old_private_hex))
    announcement = make_rotation(new_public_hex, old_private_hex, retire=[old_id], ttl_s=ttl_s)
    return {"new_key": new_public_hex, "announcement": announcement}


def keys_rotate(args: argparse.Namespace) -> int:
    from sync.hub.commands import CommandCenter
    from sync.hub.db import open_hub_db
    from sync.hub.keys import HubKeys
    from sync.hub.mqtt import HubMqtt
    from sync.hub.registry import list_devices
    from sync.signed import MAX_AGE_S  # offline devices with a persistent session get it for a day

    client = _remote(args)
    if client is not None:
        out = client.post("/v1/keys/rotate", {"wait_s": max(0.0, args.wait)})
        return _print_rotation(args, out, len(out["announced"]) + len(out["unsent"]))
    settings = _settings(args, {"data_dir": getattr(args, "data_dir", None)})
    keys = HubKeys(settings.key_path)
    old, _ = keys.ensure()
    db = open_hub_db(settings.db_url, synchronous=settings.intake.synchronous)
    mqtt = HubMqtt(
        settings.mqtt, subscribe=False, client_id=f"edge-hub-keys-{int(time.time())}", persistent=False
    )
    try:
        devices = [d["device"] for d in list_devices(db)]
        new = keys.rotate_prepare()
        sent: list[dict[str, Any]] = []
        unsent: list[dict[str, str]] = []
        if devices:
            mqtt.start()
            mqtt.wait_connected(10.0)
            center = CommandCenter(
                db, keys, lambda t, p: mqtt.publish(t, p, qos=1), ttl_s=settings.command_ttl_s
            )
            announce = rotation_args(
                old.private_hex, new.public_hex, ttl_s=max(settings.command_ttl_s, 7 * 86400)
            )
            for device in devices:
                try:
                    sent.append(
                        center.send(
                            device,
                            "trust.rotate",
                            announce,
                            key=old,
                            ttl_s=MAX_AGE_S,
                            operator=_local_operator(),
                        )
                    )
                except Exception as exc:
                    unsent.append({"device": device, "error": str(exc)})
        current = keys.rotate_commit()
        results = (
            asyncio.run(center.wait([c["id"] for c in sent], args.wait)) if sent and args.wait > 0 else {}
        )
    finally:
        mqtt.stop()
        db.close()
    rows = [results.get(c["id"], c) for c in sent]
    out = {
        "old_key_id": old.key_id,
        "key_id": current.key_id,
        "public_key": current.public_hex,
        "announced": rows,
        "unsent": unsent,
    }
    return _print_rotation(args, out, len(devices))


def _print_rotation(args: argparse.Namespace, out: dict[str, Any], devices: int) -> int:
    rows, unsent = out["announced"], out["unsent"]
    if args.json:
        print_json(out)
    else:
        print(f"switched from key {out['old_key_id']} to {out['key_id']} ({devices} devices announced)")
        if rows or unsent:
            lines = [(c["device"], c["status"], c.get("error") or "") for c in rows]
            lines += [(u["device"], "unsent", u["error"]) for u in unsent]
            print(table(lines, ["device", "announcement", "error"]))
            pending = sum(1 for c in rows if c["status"] == "sent")
            if pending:
                print(
                    f"{pending} devices have not confirmed yet (offline, or no hub running to store results)"
                )
    return 0
