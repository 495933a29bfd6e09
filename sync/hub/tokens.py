"""Operator tokens of the hub's API: roles, stored hashed in the hub's database.

The same scheme as the device's API tokens (agent/core/auth.py: format,
hashing, roles and ``TokenInfo``, shared with the device): a token is
``eht_<id>_<secret>`` (``eht``: edge-hub token, so a device token pasted at
the hub is recognisably the wrong kind), the id (12 hex) finds the row, the
secret is 32 random bytes, and only the SHA-256 of the whole token is kept;
the comparison is constant-time.

Roles, least first: ``viewer`` reads the registry, alerts, commands and
deployments; ``operator`` also sends commands and starts deployments;
``admin`` also uploads bundles (the hub signs them: an upload is a request
for the hub's signature), manages tokens and rotates keys.

Tokens are made on the hub's own machine (``edge-hub tokens create``, which
opens the database directly: whoever can read the database is already its
administrator) or by an admin through the API.
"""

from __future__ import annotations

import time
from typing import Any

from agent.core.auth import (
    ROLES,
    TokenInfo,
    hash_matches,
    hash_token,
    new_token,
    role_rank,
    token_pattern,
)
from agent.core.errors import ConflictError, NotFoundError
from sync.hub.db import HubDB

PREFIX = "eht_"
_TOKEN_RE = token_pattern(PREFIX)
_COLUMNS = "id, name, role, created_at, expires_at, revoked_at"


def _info(row: dict[str, Any]) -> TokenInfo:
    return TokenInfo(
        row["id"], row["name"], row["role"], row["created_at"], row["expires_at"], row["revoked_at"]
    )


class HubTokens:
    """The ``operator_tokens`` table. Blocking: the API calls it through ``asyncio.to_thread``."""

    def __init__(self, db: HubDB) -> None:
        self.db = db

    def create(
        self, name: str, role: str, *, ttl_s: float | None = None, created_by: str = "cli"
    ) -> tuple[str, TokenInfo]:
        """Make a token; its plain text is returned once and never stored."""
        token, info = new_token(PREFIX, name, role, ttl_s)
        with self.db.transaction() as tx:
            clash = tx.query("SELECT id FROM operator_tokens WHERE name = ? AND revoked_at IS NULL", (name,))
            if clash:
                raise ConflictError(
                    f"an active token named {name!r} exists (id {clash[0]['id']}); revoke it first "
                    "(edge-hub tokens revoke NAME)"
                )
            tx.execute(
                "INSERT INTO operator_tokens (id, name, role, hash, created_at, expires_at, created_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (info.id, name, role, hash_token(token), info.created_at, info.expires_at, created_by),
            )
        return token, info

    def list(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        sql = f"SELECT {_COLUMNS} FROM operator_tokens"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        return [_info(r) for r in self.db.query(sql + " ORDER BY created_at")]

    def revoke(self, id_or_name: str) -> TokenInfo:
        with self.db.transaction() as tx:
            rows = tx.query(
                f"SELECT {_COLUMNS} FROM operator_tokens WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                (id_or_name, id_or_name),
            )
            if not rows:
                raise NotFoundError(
                    f"no active token with id or name {id_or_name!r}; see `edge-hub tokens list`"
                )
            if len(rows) > 1:
                raise ConflictError(f"{id_or_name!r} matches several tokens; revoke by id")
            info = _info(rows[0])
            now = time.time()
            tx.execute("UPDATE operator_tokens SET revoked_at = ? WHERE id = ?", (now, info.id))
        return TokenInfo(info.id, info.name, info.role, info.created_at, info.expires_at, now)

    def authenticate(self, token: str) -> TokenInfo | None:
        """The active token matching ``token``, or None (unknown, malformed, revoked or expired)."""
        token = token.strip()
        match = _TOKEN_RE.match(token)
        if not match:
            return None
        rows = self.db.query(f"SELECT {_COLUMNS}, hash FROM operator_tokens WHERE id = ?", (match.group(1),))
        if not rows or not hash_matches(rows[0]["hash"], token):
            return None
        info = _info(rows[0])
        return info if info.active else None

    def any_active(self) -> bool:
        rows = self.db.query(
            "SELECT id FROM operator_tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
            (time.time(),),
        )
        return bool(rows)


__all__ = ["PREFIX", "ROLES", "HubTokens", "TokenInfo", "role_rank"]
