"""Checks of the API's security settings, kept apart from the middleware.

The daemon runs these at start, before the API binds; the middleware module
imports aiohttp, which the daemon loads only when the first API connection
arrives (``api.lazy``), so these must not live there.
"""

from __future__ import annotations

import ssl

from agent.config import Settings
from agent.core import auth
from agent.core.auth import is_loopback
from agent.errors import ConfigError

__all__ = ["check_settings", "is_loopback", "server_ssl_context"]


def check_settings(settings: Settings) -> list[str]:
    """Refuse unsafe API settings at start; return warnings worth logging.

    Call it where the daemon starts (before the API binds), so a bad setting
    stops the start with exit 2 rather than surfacing on the first request.
    """
    api, sec = settings.api, settings.security
    warnings: list[str] = []
    loopback = is_loopback(api.host)
    if not loopback and sec.api_auth == "off":
        raise ConfigError(
            f"security.api_auth = 'off' with api.host = {api.host!r}: an API reachable from the network "
            "must require tokens. Set api.host = '127.0.0.1' or security.api_auth = 'auto'"
        )
    if bool(sec.api_tls_cert) != bool(sec.api_tls_key):
        raise ConfigError("security.api_tls_cert and security.api_tls_key must be set together")
    if not loopback and not sec.api_tls_cert:
        warnings.append(
            f"the local API listens on {api.host} without TLS: tokens cross the network in clear; "
            "set security.api_tls_cert and security.api_tls_key"
        )
    return warnings


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for the API's listening socket, or None for plain HTTP."""
    return auth.server_ssl_context(settings.security.api_tls_cert, settings.security.api_tls_key)
