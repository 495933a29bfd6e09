"""How CLI commands talk to the running daemon: its local API, with the token and TLS it needs.

Standard-library HTTP only (urllib), so commands like ``status`` start fast
and work where aiohttp's client is not imported. The bearer token comes from
``--token`` or ``EDGE_AGENT_TOKEN``; with ``security.api_tls_cert`` set the
daemon serves HTTPS and its own certificate is the CA we check it against.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

from agent.config import Settings, load_settings
from agent.core.cliutil import api_error
from agent.errors import ConfigError, EdgeAgentError

TOKEN_ENV = "EDGE_AGENT_TOKEN"
#: added to a 401's message: how to get past it
TOKEN_HINT = f" (pass --token or set {TOKEN_ENV}; make one with `edge-agent tokens create`)"


class DaemonUnreachable(EdgeAgentError, code="daemon_unreachable"):
    """The daemon's local API did not answer (not running, or another address)."""


def checked_token(token: str | None) -> str | None:
    """The token as given, or a usage error that says what is wrong without repeating the secret."""
    token = (token or "").strip()
    if not token:
        return None
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(
            "the API token has spaces or line breaks in it; pass the token alone "
            "(the one line `edge-agent tokens create` prints on stdout)",
            code="bad_token",
        )
    return token


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the daemon's Unix socket (``<data_dir>/api.sock``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DaemonClient:
    def __init__(self, settings: Settings, token: str | None = None, timeout: float = 10.0) -> None:
        self.settings = settings
        self.token = checked_token(token or os.environ.get(TOKEN_ENV))
        self.timeout = timeout
        host = "127.0.0.1" if settings.api.host in ("0.0.0.0", "::", "") else settings.api.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        cert = getattr(getattr(settings, "security", None), "api_tls_cert", "")
        self.base_url = f"{'https' if cert else 'http'}://{host}:{settings.api.port}"
        self._ssl: ssl.SSLContext | None = None
        if cert:
            self._ssl = ssl.create_default_context(cafile=cert)
            self._ssl.check_hostname = False  # the daemon's own certificate, pinned as the only CA

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        """(status, JSON body); HTTP errors are returned, not raised; no answer raises DaemonUnreachable."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        else:
            local = self._via_local_socket(method, path, data, headers)
            if local is not None:
                status, raw = local
                try:
                    return status, json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    return status, {"error": {"code": "http_error", "message": f"HTTP {status}"}}
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except json.JSONDecodeError:
                return exc.code, {"error": {"code": "http_error", "message": f"HTTP {exc.code}"}}
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DaemonUnreachable(
                f"no daemon answers at {self.base_url} ({reason}); start it with `edge-agent run` "
                "or `systemctl start edge-agent`"
            ) from None

    def _via_local_socket(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes] | None:
        """Without a token, try the Unix socket first: the daemon knows root and its own user there.

        None when the socket is missing or refuses us (not root, not the service user):
        the caller then goes over TCP. A failure after connecting is the daemon's answer.
        """
        from agent.api.local_socket import socket_path

        unix_path = socket_path(self.settings.data_path)
        if not unix_path.exists():
            return None
        conn = _UnixConnection(str(unix_path), self.timeout)
        try:
            try:
                conn.connect()
            except OSError:
                return None
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise DaemonUnreachable(f"the daemon's socket {unix_path} did not answer ({exc})") from None
        finally:
            conn.close()

    def request_bytes(
        self, method: str, path: str, data: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        """(status, raw body) for uploads and audio; no answer raises DaemonUnreachable."""
        headers = {"Content-Type": content_type} if content_type else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DaemonUnreachable(f"no daemon answers at {self.base_url} ({reason})") from None

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """Like ``request`` but an error status raises EdgeAgentError with the daemon's message."""
        status, data = self.request(method, path, body)
        if status >= 400:
            raise api_error(status, data, hint=TOKEN_HINT)
        return data


def api(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """One call for a command (``--config``, ``--token``, ``--timeout``): the answer's JSON.

    Exits 3 when no daemon answers, 2 when it refuses the request (4xx), 1
    when it fails (5xx), each with the reason on stderr.
    """
    client = DaemonClient(
        load_settings(args.config), getattr(args, "token", None), getattr(args, "timeout", 10.0)
    )
    try:
        status, data = client.request(method, path, body)
    except DaemonUnreachable as exc:
        print(f"edge-agent is not running: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    if status >= 400:
        print(f"edge-agent: {api_error(status, data, hint=TOKEN_HINT)} (HTTP {status})", file=sys.stderr)
        raise SystemExit(2 if status < 500 else 1)
    return data
