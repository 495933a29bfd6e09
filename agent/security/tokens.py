"""Bearer tokens for the local API, with roles, stored hashed.

A token is ``eat_<id>_<secret>``: the id (12 hex) finds the row, the secret
is 32 random bytes (base64url). Only the SHA-256 of the whole token is
stored. A fast hash is the right tool here, unlike for passwords: a
256-bit random secret cannot be guessed or brute-forced from its hash, so a
slow KDF (bcrypt, argon2) would only add milliseconds to every request
without adding protection. Comparison is constant-time.

Roles are ordered: ``viewer`` reads, ``operator`` also acts (load a model,
ack an alert), ``admin`` also changes security (tokens, updates, keys).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from agent.errors import BadRequestError, ConflictError, NotFoundError
from agent.security.audit import AuditLog
from agent.store import Store

ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
PREFIX = "eat_"
_TOKEN_RE = re.compile(r"^eat_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def role_rank(role: str) -> int:
    try:
        return ROLES.index(role)
    except ValueError:
        raise BadRequestError(f"unknown role {role!r}; roles are {', '.join(ROLES)}") from None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


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
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "active": self.active,
        }


class TokenStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.audit = AuditLog(store)

    def create(
        self, name: str, role: str, *, ttl_s: float | None = None, actor: str = "cli"
    ) -> tuple[str, TokenInfo]:
        """Make a token; the plain text is returned once and never stored."""
        if not _NAME_RE.match(name):
            raise BadRequestError("token name: 1-64 letters, digits, '.', '_', '@' or '-'")
        role_rank(role)
        if ttl_s is not None and ttl_s <= 0:
            raise BadRequestError("token lifetime must be positive")
        now = time.time()
        token_id = secrets.token_hex(6)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        token = f"{PREFIX}{token_id}_{secret}"
        expires = now + ttl_s if ttl_s else None
        with self.store.atomic() as conn:
            clash = conn.execute(
                "SELECT id FROM api_tokens WHERE name = ? AND revoked_at IS NULL", (name,)
            ).fetchone()
            if clash:
                raise ConflictError(f"an active token named {name!r} exists (id {clash[0]}); revoke it first")
            conn.execute(
                "INSERT INTO api_tokens (id, name, role, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, name, role, hash_token(token), now, expires),
            )
            self.audit.append(
                actor,
                "token.create",
                f"token:{token_id}",
                {"name": name, "role": role, "expires_at": expires},
            )
        return token, TokenInfo(token_id, name, role, now, expires, None)

    def list(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        sql = "SELECT id, name, role, created_at, expires_at, revoked_at FROM api_tokens"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        return [TokenInfo(*row) for row in self.store.execute(sql + " ORDER BY created_at").fetchall()]

    def revoke(self, id_or_name: str, *, actor: str = "cli") -> TokenInfo:
        with self.store.atomic() as conn:
            rows = conn.execute(
                "SELECT id, name, role, created_at, expires_at, revoked_at FROM api_tokens "
                "WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                (id_or_name, id_or_name),
            ).fetchall()
            if not rows:
                raise NotFoundError(
                    f"no active token with id or name {id_or_name!r}; see `edge-agent tokens list`"
                )
            if len(rows) > 1:
                raise ConflictError(f"{id_or_name!r} matches several tokens; revoke by id")
            info = TokenInfo(*rows[0])
            now = time.time()
            conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", (now, info.id))
            self.audit.append(actor, "token.revoke", f"token:{info.id}", {"name": info.name})
        return TokenInfo(info.id, info.name, info.role, info.created_at, info.expires_at, now)

    def authenticate(self, token: str) -> TokenInfo | None:
        """The active token matching ``token``, or None (unknown, malformed, revoked or expired)."""
        match = _TOKEN_RE.match(token.strip())
        if not match:
            return None
        row = self.store.execute(
            "SELECT id, name, role, created_at, expires_at, revoked_at, hash FROM api_tokens WHERE id = ?",
            (match.group(1),),
        ).fetchone()
        if row is None or not hmac.compare_digest(row[6], hash_token(token.strip())):
            return None
        info = TokenInfo(*row[:6])
        return info if info.active else None

    def any_active(self) -> bool:
        row = self.store.execute(
            "SELECT 1 FROM api_tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) LIMIT 1",
            (time.time(),),
        ).fetchone()
        return row is not None
