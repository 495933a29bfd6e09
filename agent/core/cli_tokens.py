"""Listing API bearer tokens (never their secrets): ``edge-agent tokens list`` and ``edge-hub tokens list``.

Both keep tokens as :class:`agent.core.auth.TokenInfo`; each command keeps its
own headers and its own word for a time that is not set.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.core.auth import TokenInfo
from agent.core.output import local_minute, print_listing


def token_state(token: TokenInfo) -> str:
    """``active``, ``revoked`` or ``expired``."""
    return "active" if token.active else ("revoked" if token.revoked_at else "expired")


def print_tokens(
    as_json: bool,
    tokens: Sequence[TokenInfo],
    headers: Sequence[str],
    *,
    unset: str,
    never: str,
    empty: str | None = None,
) -> None:
    """``--json``: each token's ``to_dict()``; else a table of id, name, role, created, expires and state.

    ``unset`` stands for a creation time that is not set, ``never`` for no expiry.
    """
    print_listing(
        as_json,
        tokens,
        lambda t: (
            t.id,
            t.name,
            t.role,
            local_minute(t.created_at, unset),
            local_minute(t.expires_at, never),
            token_state(t),
        ),
        headers,
        empty=empty,
        data=[t.to_dict() for t in tokens],
    )
