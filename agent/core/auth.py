"""Access to an API, the pieces the device's API and the hub's share: tokens and roles, rate limits, TLS.

Tokens are ``<prefix><id>_<secret>`` (``eat_`` for the device, ``eht_`` for
the hub): the id (12 hex) finds the row, the secret is 32 random bytes
(base64url), and only the SHA-256 of the whole token is stored. A fast hash
is the right tool here, unlike for passwords: a 256-bit random secret cannot
be guessed or brute-forced from its hash, so a slow KDF would only add
milliseconds to every request. Comparison is constant-time.

Roles are ordered: ``viewer`` reads, ``operator`` also acts, ``admin`` also
changes security. A route's ``role`` is the least role allowed; a
state-changing route left at ``viewer`` is treated as ``operator``
(``role_for``), so a forgotten role never lets a read-only token act.

No aiohttp here: the daemon checks its API settings (``is_loopback``, TLS)
at start, before it loads aiohttp for the first connection (``api.lazy``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import re
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.core.errors import BadRequestError, ConfigError

ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
#: paths answered without a token (probes carry no secrets)
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
#: rate-limit buckets kept; the least recently seen are forgotten beyond this
_MAX_BUCKETS = 4096


def role_rank(role: str) -> int:
    try:
        return ROLES.index(role)
    except ValueError:
        raise BadRequestError(f"unknown role {role!r}; roles are {', '.join(ROLES)}") from None


def role_for(routes: Mapping[tuple[str, str], Any], method: str, path: str) -> str:
    """The least role allowed to call ``method path`` (HEAD as GET; a write needs at least operator)."""
    method = "GET" if method == "HEAD" else method
    role = getattr(routes.get((method, path)), "role", "viewer")
    if method not in SAFE_METHODS and role_rank(role) < role_rank("operator"):
        return "operator"
    return str(role)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_matches(stored_hash: str, token: str) -> bool:
    """Whether ``token`` is the one whose hash was stored (constant-time)."""
    return hmac.compare_digest(stored_hash, hash_token(token))


def new_token(prefix: str, name: Any, role: str, ttl_s: float | None) -> tuple[str, TokenInfo]:
    """A fresh token and what is kept of it; refuses a bad name, an unknown role, a lifetime not > 0.

    The plain token is shown once; only its hash (``hash_token``) and the ``TokenInfo`` are stored.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise BadRequestError(
            "token name: 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    role_rank(role)
    if ttl_s is not None and ttl_s <= 0:
        raise BadRequestError("a token's lifetime must be positive (seconds)")
    now = time.time()
    token_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    info = TokenInfo(token_id, name, role, now, now + ttl_s if ttl_s else None, None)
    return f"{prefix}{token_id}_{secret}", info


def token_pattern(prefix: str) -> re.Pattern[str]:
    """Matches a well-formed token of ``prefix``; group 1 is its id."""
    return re.compile(rf"^{re.escape(prefix)}([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > time.time())

    def allows(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "active": self.active}


class RateLimiter:
    """One token bucket per client (token id, else peer address); the least recently seen are forgotten."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 when allowed, else the seconds until a request would be."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def source_key(peer: str | None) -> str:
    """The rate-limit identity of an address: all of loopback is one source, IPv6 counts by /64."""
    if not peer:
        return "peer:unknown"
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return f"peer:{peer[:64]}"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return "peer:loopback"
    if isinstance(addr, ipaddress.IPv6Address):
        return f"peer:{ipaddress.ip_network(f'{addr}/64', strict=False)}"
    return f"peer:{addr}"


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext | None:
    """The TLS context of an API's listening socket (TLS 1.2 at least), or None without a certificate."""
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the API's TLS certificate {cert} / key {key}: {exc}; check the paths, that they "
            "are PEM, and that the key matches the certificate"
        ) from None
    return ctx


def retry_after(wait_s: float) -> dict[str, str]:
    """The Retry-After header of a 429: whole seconds, at least 1."""
    return {"Retry-After": str(max(1, int(wait_s + 0.999)))}
