"""The ``edge-hub`` command: ``run`` and ``keys`` act locally; everything else asks the running hub's API.

A thin layer, like ``edge-agent``: each command builds one request, prints a
table for people or ``--json`` for scripts, and returns an exit code:
0 ok, 1 failure (a command or deployment failed or timed out), 2 bad
configuration or usage (a missing, wrong or too weak token included), 3 no
hub answers. Commands that talk to the API send ``--token`` /
``EDGE_HUB_TOKEN`` as a bearer token; it is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from agent.core.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_UNREACHABLE, run_command
from agent.core.cliutil import api_error
from agent.core.errors import EdgeAgentError
from agent.core.version import __version__


class HubUnreachable(EdgeAgentError, code="hub_unreachable"):
    """The hub's operator API did not answer."""


class HubClient:
    """JSON over HTTP to the hub's operator API (urllib: no extra dependency for the CLI)."""

    def __init__(self, base_url: str, timeout: float = 10.0, token: str = "") -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self._token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        length: int | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
            if length is not None:
                headers["Content-Length"] = str(length)
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                refusal = json.loads(exc.read() or b"{}")
            except ValueError:
                refusal = None
            hint = "" if self._token else "; no token was given: pass --token or set EDGE_HUB_TOKEN"
            raise api_error(
                exc.code, refusal, fallback=f"the hub answered HTTP {exc.code}", hint=hint
            ) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HubUnreachable(
                f"no hub answers at {self.base} ({reason}); start it with `edge-hub run` or point --hub at it"
            ) from None
        return json.loads(raw) if raw else None

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)


def build_parser() -> argparse.ArgumentParser:
    from sync.hub import cli_fleet, cli_local, cli_tokens

    parser = argparse.ArgumentParser(
        prog="edge-hub",
        description="edge-hub: the fleet manager (device registry, telemetry and alerts, signed commands, "
        "staged model rollout).",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (default: /etc/edge-hub/hub.toml when it exists; also EDGE_HUB_CONFIG)",
    )
    parser.add_argument(
        "--hub",
        metavar="URL",
        help="the running hub's API (default: from api.host/api.port in the config, or EDGE_HUB_URL)",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="operator token for the hub's API (default: EDGE_HUB_TOKEN; make one with "
        "`edge-hub tokens create`). Prefer the variable: arguments show in the process list",
    )
    parser.add_argument("--version", action="version", version=f"edge-hub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cli_local.register(sub)
    cli_tokens.register(sub)
    cli_fleet.register(sub)
    return parser


def remote_url(args: argparse.Namespace) -> str | None:
    """The hub named by --hub or EDGE_HUB_URL, or None (then the config's api.host/api.port)."""
    import os

    return getattr(args, "hub", None) or os.environ.get("EDGE_HUB_URL") or None


def client_for(args: argparse.Namespace, timeout: float = 10.0) -> HubClient:
    import os

    url = remote_url(args)
    if not url:
        from sync.hub.settings import load_hub_settings

        url = load_hub_settings(args.config).api_base_url
    token = getattr(args, "token", None) or os.environ.get("EDGE_HUB_TOKEN", "")
    return HubClient(url, timeout=timeout, token=token.strip())


def _exit_code(exc: EdgeAgentError) -> int:
    """3 when the hub cannot be reached; 2 for a request the hub refused as wrong; else 1."""
    if isinstance(exc, HubUnreachable):
        return EXIT_UNREACHABLE
    return EXIT_CONFIG if exc.code in ("bad_request", "unauthorized", "forbidden") else EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, "edge-hub", _exit_code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
