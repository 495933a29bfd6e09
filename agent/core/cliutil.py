"""What both command lines (``edge-agent``, ``edge-hub``) share when they talk to their service's API.

The daemon and the hub refuse a request with ``{"error": {"code", "message"}}``
(``agent/core/errors.py``); ``api_error`` turns that answer into the
EdgeAgentError a command raises or prints, with how to get past a missing or
weak token added where it applies.
"""

from __future__ import annotations

from typing import Any

from agent.core.errors import EdgeAgentError


def api_error(
    status: int, body: Any, *, fallback: str = "", hint: str = "", hint_for: tuple[int, ...] = (401,)
) -> EdgeAgentError:
    """The refusal in ``body`` (any JSON, or None) as EdgeAgentError; ``hint`` is added for ``hint_for``.

    The message is the service's own, else ``fallback`` (default ``HTTP <status>``);
    the code is the service's, else ``http_error``.
    """
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    message = err.get("message") or fallback or f"HTTP {status}"
    if status in hint_for:
        message += hint
    return EdgeAgentError(message, code=err.get("code") or "http_error")
