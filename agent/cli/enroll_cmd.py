"""``edge-agent enroll URL TOKEN``: join a hub with the claim token `edge-hub enroll` printed.

The box sends its id and identity public key with the token to the hub's
``POST /v1/enroll``; the hub registers it and answers with the broker URL,
the hub key to trust and the labels. Those are written into the box's config
file (``--config``, ``EDGE_AGENT_CONFIG`` or /etc/edge-agent/agent.toml;
created when missing): ``mqtt.url``, ``sync.trusted_keys`` (the hub key added
to those already trusted) and ``sync.labels``. The file is edited in place,
key by key, so its comments and other settings stay; the result is checked
with the daemon's own loader before it replaces the file (atomically). The
daemon reads it at its next start.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import tomllib

from agent import __version__
from agent.cli.output import print_json
from agent.errors import ConfigError, EdgeAgentError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "enroll",
        help="join a hub with a claim token from `edge-hub enroll` (writes mqtt.url, the hub key, labels)",
        description="Exchange a one-time claim token with the hub at URL: the hub registers this box (its id "
        "and identity key) and answers with the broker, its signing key and the labels, which are written "
        "to this box's config file (--config, EDGE_AGENT_CONFIG or /etc/edge-agent/agent.toml). Restart "
        "the agent afterwards (systemctl restart edge-agent).",
    )
    p.add_argument("url", metavar="URL", help="the hub's API, e.g. http://hub.lan:8480")
    p.add_argument("claim", metavar="CLAIM_TOKEN", help="the claim token `edge-hub enroll` printed (ehc_...)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the hub")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=enroll)


def config_path(args: argparse.Namespace) -> Path:
    from agent.config import DEFAULT_CONFIG_PATH, ENV_PREFIX

    return Path(getattr(args, "config", None) or os.environ.get(ENV_PREFIX + "CONFIG") or DEFAULT_CONFIG_PATH)


def _toml(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string is a JSON string


_SECTION = re.compile(r"^\s*\[([A-Za-z0-9_.\-]+)\]\s*(#.*)?$")


def set_toml_keys(text: str, section: str, values: dict[str, Any]) -> str:
    """``text`` with ``[section] key = value`` set for each of ``values``: replaced where the key is, else
    added at the end of the section (the section appended when missing). Comments and the rest stay."""
    lines = text.splitlines()
    start = end = None
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if m and start is None and m.group(1) == section:
            start = i
        elif (m or line.lstrip().startswith("[")) and start is not None and end is None and i > start:
            end = i
    if start is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines.append(f"[{section}]")
        start, end = len(lines) - 1, len(lines)
    end = len(lines) if end is None else end
    for key, value in values.items():
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        found = next((i for i in range(start + 1, end) if pattern.match(lines[i])), None)
        if found is not None:
            if lines[found].rstrip().endswith(("[", ",")):
                raise ConfigError(
                    f"{section}.{key} spans several lines in the config file; put it on one line and retry"
                )
            lines[found] = f"{key} = {_toml(value)}"
        else:
            insert = end
            while insert - 1 > start and not lines[insert - 1].strip():
                insert -= 1
            lines.insert(insert, f"{key} = {_toml(value)}")
            end += 1
    return "\n".join(lines) + "\n"


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(
        url.rstrip("/") + "/v1/enroll",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read() or b"{}").get("error", {}).get("message", "")
        except ValueError:
            message = ""
        if exc.code in (400, 401, 409):
            # a usage error (exit 2): this token, this box, or what was sent
            raise ConfigError(
                f"the hub refused the claim: {message or f'HTTP {exc.code}'}", code="claim_refused"
            ) from None
        raise EdgeAgentError(f"the hub at {url} answered HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        raise EdgeAgentError(
            f"no hub answers at {url} ({getattr(exc, 'reason', exc)}); check the URL `edge-hub enroll` printed",
            code="hub_unreachable",
        ) from None


def enroll(args: argparse.Namespace) -> int:
    from agent.config import load_settings
    from agent.security import identity

    if not args.url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{args.url!r}: expected the hub's API URL, e.g. http://hub.lan:8480", code="bad_request"
        )
    path = config_path(args)
    old_text = path.read_text() if path.exists() else ""
    settings = load_settings(path if path.exists() else None)
    ident = identity.load_or_create(settings.data_dir, settings.device_id)
    answer = _post(
        args.url,
        {
            "token": args.claim.strip(),
            "device": settings.device_id,
            "public_key": ident.public_hex,
            "agent_version": __version__,
        },
        args.timeout,
    )
    current = tomllib.loads(old_text) if old_text else {}
    trusted = list(current.get("sync", {}).get("trusted_keys", []))
    trusted += [k for k in answer["hub_keys"] if k not in trusted]
    labels = [f"{k}={v}" for k, v in sorted(answer["labels"].items())]
    text = set_toml_keys(old_text, "mqtt", {"url": answer["mqtt_url"]})
    text = set_toml_keys(text, "sync", {"trusted_keys": trusted, "labels": labels})
    _write_checked(path, text, answer["mqtt_url"], trusted, labels)
    if args.json:
        print_json({**answer, "config": str(path)})
        return 0
    print(
        f"enrolled {answer['device']} at {answer['hub_url']}: broker {answer['mqtt_url']}, "
        f"labels {','.join(labels) or '-'}, trusts hub key {answer['hub_key_id']}"
    )
    print(f"written to {path}; restart the agent to connect (systemctl restart edge-agent)")
    overridden = [
        k
        for k in ("EDGE_AGENT_MQTT__URL", "EDGE_AGENT_SYNC__TRUSTED_KEYS", "EDGE_AGENT_SYNC__LABELS")
        if os.environ.get(k)
    ]
    if overridden:
        print(f"note: {', '.join(overridden)} set in the environment win over the file", file=sys.stderr)
    return 0


def _write_checked(path: Path, text: str, url: str, trusted: list[str], labels: list[str]) -> None:
    """Check the edited file with the daemon's own loader, then replace the old one atomically."""
    from agent.config import load_settings

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.enroll")
    tmp.write_text(text)
    try:
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        check = load_settings(tmp, env={})
        if (
            check.mqtt.url != url
            or list(check.sync.trusted_keys) != trusted
            or list(check.sync.labels) != labels
        ):
            raise ConfigError(f"{path}: the edited file does not read back as written; edit it by hand")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["config_path", "register", "set_toml_keys"]
