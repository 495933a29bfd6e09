"""Bearer tokens for the local API, with roles, stored hashed in the daemon's database.

A token is ``eat_<id>_<secret>``; the format, the hashing and the roles are
the ground floor's (agent/core/auth.py), shared with the hub's operator
tokens. Roles: ``viewer`` reads, ``operator`` also acts (load a model, ack
an alert), ``admin`` also changes security (tokens, updates, keys).
"""

from __future__ import annotations

import time

from agent.core.auth import ROLES, TokenInfo, hash_matches, hash_token, new_token, role_rank, token_pattern
from agent.errors import ConflictError, NotFoundError
from agent.security.audit import AuditLog
from agent.store import Store

__all__ = ["PREFIX", "ROLES", "TokenInfo", "TokenStore", "hash_token", "role_rank"]

PREFIX = "eat_"
_TOKEN_RE = token_pattern(PREFIX)


class TokenStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.audit = AuditLog(store)

    def create(
        self, name: str, role: str, *, ttl_s: float | None = None, actor: str = "cli"
    ) -> tuple[str, TokenInfo]:
        """Make a token; the plain text is returned once and never stored."""
        token, info = new_token(PREFIX, name, role, ttl_s)
        with self.store.atomic() as conn:
            clash = conn.execute(
                "SELECT id FROM api_tokens WHERE name = ? AND revoked_at IS NULL", (name,)
            ).fetchone()
            if clash:
                raise ConflictError(f"an active token named {name!r} exists (id {clash[0]}); revoke it first")
            conn.execute(
                "INSERT INTO api_tokens (id, name, role, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (info.id, name, role, hash_token(token), info.created_at, info.expires_at),
            )
            self.audit.append(
                actor,
                "token.create",
                f"token:{info.id}",
                {"name": name, "role": role, "expires_at": info.expires_at},
            )
        return token, info

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
        if row is None or not hash_matches(row[6], token.strip()):
            return None
        info = TokenInfo(*row[:6])
        return info if info.active else None

    def any_active(self) -> bool:
        row = self.store.execute(
            "SELECT 1 FROM api_tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) LIMIT 1",
            (time.time(),),
        ).fetchone()
        return row is not None
