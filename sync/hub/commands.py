"""Signed commands: sign with the hub key, record, publish, and wait for the device's result.

The command row is committed *before* the command is published, so whichever
hub instance receives the result (shared subscriptions spread them) finds the
command it answers. Waiting is therefore a database question: a waiter is
woken at once when this instance stores the result, and re-reads the
database every ``poll_s`` in case a peer instance stored it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent.core.errors import NotFoundError, UnavailableError
from sync import topics
from sync.hub import metrics
from sync.hub.db import HubDB
from sync.hub.keys import HubKey, HubKeys
from sync.hub.validate import Accepted
from sync.signed import make_command

log = logging.getLogger("edge_hub.commands")

PublishFn = Callable[[str, bytes], None]

_COLUMNS = (
    "id, device, name, args, created_at, expires, key_id, status, deployment_id, result_at, ok, result, error, "
    "operator"
)


def command_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["args"] = json.loads(out["args"]) if out.get("args") else {}
    out["result"] = json.loads(out["result"]) if out.get("result") else None
    out["ok"] = None if out.get("ok") is None else bool(out["ok"])
    return out


class CommandCenter:
    """Sends commands and waits for results; the blocking parts run in a thread via ``asyncio.to_thread``."""

    def __init__(
        self, db: HubDB, keys: HubKeys, publish: PublishFn, *, ttl_s: float, poll_s: float = 0.5
    ) -> None:
        self.db = db
        self.keys = keys
        self._publish = publish
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Event] = set()

    # ------------------------------------------------------------ sending (blocking)

    def send(
        self,
        device: str,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        ttl_s: float | None = None,
        deployment_id: str | None = None,
        key: HubKey | None = None,
        operator: str = "",
    ) -> dict[str, Any]:
        """Sign, record and publish one command; the command row (status ``sent``).

        ``operator`` (the name of the token that asked) is recorded here and
        signed into the command, so the device's audit log names it too.
        """
        if not self.db.query("SELECT device FROM devices WHERE device = ?", (device,)):
            raise NotFoundError(f"device {device!r} is not registered at this hub (see `edge-hub devices`)")
        key = key or self.keys.current()
        env = make_command(
            device, name, args or {}, key.private_hex, ttl_s=ttl_s or self.ttl_s, operator=operator
        )
        body = env.body
        self.db.execute(
            "INSERT INTO commands (id, device, name, args, created_at, expires, key_id, status, deployment_id, "
            "operator) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                env.id,
                device,
                name,
                json.dumps(body["args"], sort_keys=True),
                env.ts,
                body["expires"],
                body["key_id"],
                "sent",
                deployment_id,
                operator or None,
            ),
        )
        try:
            self._publish(topics.command_topic(device, env.id), env.encode())
        except UnavailableError as exc:
            self.db.execute(
                "UPDATE commands SET status = 'unsent', error = ? WHERE id = ? AND result_id IS NULL",
                (str(exc), env.id),
            )
            raise
        metrics.COMMANDS.labels(name).inc()
        log.info("sent %s to %s as %s (operator %s)", name, device, env.id, operator or "-")
        return self.get(env.id)

    def get(self, command_id: str) -> dict[str, Any]:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM commands WHERE id = ?", (command_id,))
        if not rows:
            raise NotFoundError(f"command {command_id!r} is unknown to this hub")
        return command_dict(rows[0])

    def get_many(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(ids)
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self.db.query(
                f"SELECT {_COLUMNS} FROM commands WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
            out.update((r["id"], command_dict(r)) for r in rows)
        return out

    # ------------------------------------------------------------ waiting (async)

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, stored: list[Accepted], committed_at: float) -> None:
        """Intake hook (its thread): results were stored; wake the waiters."""
        if self._loop is None or not any(a.kind == "result" for a in stored):
            return
        for event in list(self._waiters):
            self._loop.call_soon_threadsafe(event.set)

    async def wait(self, ids: Iterable[str], timeout: float) -> dict[str, dict[str, Any]]:
        """The rows of ``ids`` once every one has a result, or as they are when ``timeout`` ends."""
        ids = list(ids)
        deadline = time.monotonic() + timeout
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            while True:
                event.clear()
                rows = await asyncio.to_thread(self.get_many, ids)
                if all(rows.get(i, {}).get("status") not in (None, "sent") for i in ids):
                    return rows
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return rows
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, self.poll_s))
                except asyncio.TimeoutError:
                    pass
        finally:
            self._waiters.discard(event)


__all__ = ["CommandCenter", "command_dict"]
