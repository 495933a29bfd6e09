"""Commands from the hub: check, de-duplicate, execute once, answer through the outbox.

Pipeline for each message on ``edge/v1/{device}/cmd/{id}``:

1. strict checks, none of which writes anything: size, JSON, schema version,
   envelope shape, topic id = envelope id, our device, signature by a trusted
   hub key, expiry (``sync.signed.verify_command``). A failure is logged with
   its reason and counted (``edge_sync_commands_rejected_total{reason}``);
   nothing is answered (an unauthenticated message gets no reply to amplify).
2. the inbox row is inserted with state ``received`` in its own transaction;
   an id already there is a replay (or a QoS 1 redelivery): rejected.
3. the handler runs; its result and the inbox row's ``done``/``failed`` state
   are written in ONE transaction with the result message in the outbox and
   an audit log entry (``hub:<operator>``, ``command.<name>``): what the hub
   changes on the box is in the box's own tamper-evident log.

Exactly once across crashes: a command found ``received`` at start was
interrupted mid-execution. It is not run again (its side effects may be half
done: a download, a file write) but answered as failed with code
``interrupted``, so the hub knows to look and retry with a new command.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.core.errors import BadRequestError, EdgeAgentError
from agent.core.store import Store
from sync import metrics, topics
from sync.commands import CommandRegistry, CommandRequest
from sync.envelope import MAX_MESSAGE_BYTES, Envelope, decode
from sync.outbox import Outbox, Priority
from sync.signed import MAX_AGE_S, MAX_SKEW_S, verify_command

log = logging.getLogger("edge_agent.sync.commands")

#: the box's audit log: ``audit(actor, action, target, detail)``, written inside the answer's transaction
#: (the daemon passes ``AuditLog(store).append``, agent/security/audit.py)
AuditFn = Callable[[str, str, str, Mapping[str, Any]], Any]

#: inbox rows are kept this long: longer than a command can live, so any replay is recognised
KEEP_S = 2 * (MAX_AGE_S + MAX_SKEW_S)
#: a deploy command carries the bundle's signed manifest, smoke vectors included: allow the envelope's limit
MAX_COMMAND_BYTES = MAX_MESSAGE_BYTES


class Inbox:
    """The ``sync_inbox`` table: one row per command id ever accepted (until pruned)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def begin(self, conn: Any, env: Envelope, now: float) -> bool:
        """Record ``env`` as received; False when its id is already known (a replay)."""
        cur = conn.execute(
            "INSERT OR IGNORE INTO sync_inbox (id, name, state, received_at) VALUES (?, ?, 'received', ?)",
            (env.id, str(env.body.get("name", "")), now),
        )
        return cur.rowcount == 1

    def finish(self, conn: Any, command_id: str, ok: bool, answer: dict[str, Any], now: float) -> None:
        conn.execute(
            "UPDATE sync_inbox SET state = ?, finished_at = ?, ok = ?, result = ? WHERE id = ?",
            ("done" if ok else "failed", now, int(ok), json.dumps(answer, separators=(",", ":")), command_id),
        )

    def get(self, command_id: str) -> dict[str, Any] | None:
        rows = self.store.query("SELECT * FROM sync_inbox WHERE id = ?", (command_id,))
        if not rows:
            return None
        row = rows[0]
        row["result"] = json.loads(row["result"]) if row["result"] else None
        return row

    def unfinished(self) -> list[dict[str, Any]]:
        return self.store.query("SELECT id, name, received_at FROM sync_inbox WHERE state = 'received'")

    def prune(self, now: float) -> int:
        with self.store.atomic() as conn:
            return conn.execute(
                "DELETE FROM sync_inbox WHERE state != 'received' AND received_at < ?", (now - KEEP_S,)
            ).rowcount


def _audit_detail(
    request: CommandRequest, ok: bool, result: Any, error: dict[str, Any] | None
) -> dict[str, Any]:
    """What the audit log keeps of a command: who, which key, the outcome, what changed (no secrets)."""
    detail: dict[str, Any] = {"operator": request.operator, "key_id": request.key_id, "ok": ok}
    if error:
        detail["error"] = error.get("code", "failed")
    if isinstance(result, dict):
        # names and versions of what changed; 'set' is already masked by config.set
        kept = ("set", "name", "version", "previous", "signed_for", "service", "trusted", "restored")
        detail.update({k: result[k] for k in kept if k in result})
    if request.name == "config.set" and not ok:  # a refused change is worth seeing: which keys it tried
        values = request.args.get("values")
        detail["keys"] = (
            sorted(map(str, values)) if isinstance(values, dict) else [str(request.args.get("key"))]
        )
    return detail


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str


class CommandProcessor:
    """Receives command messages and runs them once, a bounded number at a time."""

    def __init__(
        self,
        *,
        device: str,
        store: Store,
        outbox: Outbox,
        registry: CommandRegistry,
        trusted_keys: Callable[[], Iterable[str]],
        audit: AuditFn,
        clock: Callable[[], float] = time.time,
        workers: int = 2,
        max_bytes: int = MAX_COMMAND_BYTES,
    ) -> None:
        self.device = device
        self.store = store
        self.outbox = outbox
        self.inbox = Inbox(store)
        self.registry = registry
        self.trusted_keys = trusted_keys
        self.audit = audit
        self.clock = clock
        self.max_bytes = min(max_bytes, MAX_MESSAGE_BYTES)
        self._slots = asyncio.Semaphore(workers)
        self._tasks: set[asyncio.Task[None]] = set()
        self.rejected: dict[str, int] = {}
        self.executed = 0

    # ------------------------------------------------------------ receiving

    def check(self, topic: str, payload: bytes) -> tuple[Envelope, str] | Rejection:
        """Every check that needs no write; returns the envelope and signing key id, or why not."""
        parsed = topics.parse(topic)
        if parsed is None or parsed.kind != "cmd":
            return Rejection("bad_topic", f"{topic!r} is not a command topic")
        if parsed.device != self.device:
            return Rejection("wrong_device", f"command topic is for device {parsed.device!r}")
        try:
            env = decode(payload, max_bytes=self.max_bytes)
            if env.id != parsed.command_id:
                raise BadRequestError(
                    f"envelope id {env.id} differs from the topic's {parsed.command_id}", code="bad_schema"
                )
            key_id = verify_command(env, list(self.trusted_keys()), device=self.device, now=self.clock())
        except BadRequestError as exc:
            return Rejection(exc.code, str(exc))
        return env, key_id

    def _reject(self, rejection: Rejection, topic: str) -> None:
        self.rejected[rejection.reason] = self.rejected.get(rejection.reason, 0) + 1
        metrics.COMMANDS_REJECTED.labels(rejection.reason).inc()
        log.warning(
            "command rejected (%s): %s",
            rejection.reason,
            rejection.message,
            extra={"reason": rejection.reason, "topic": topic},
        )

    async def handle(self, topic: str, payload: bytes) -> str | None:
        """Check and record one message; schedules its execution. Returns the command id or None."""
        checked = self.check(topic, payload)
        if isinstance(checked, Rejection):
            self._reject(checked, topic)
            return None
        env, key_id = checked
        now = self.clock()
        with self.store.atomic() as conn:
            fresh = self.inbox.begin(conn, env, now)
        if not fresh:
            self._reject(Rejection("replayed", f"command {env.id} was already received"), topic)
            return None
        request = CommandRequest(
            id=env.id,
            name=env.body["name"],
            args=dict(env.body["args"]),
            device=self.device,
            key_id=key_id,
            received_at=now,
            operator=str(env.body.get("operator", "")),
        )
        log.info("command %s %s received", request.name, request.id, extra={"command": request.name})
        task = asyncio.create_task(self._run(request), name=f"command:{request.name}:{request.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return env.id

    # ------------------------------------------------------------ executing

    async def _run(self, request: CommandRequest) -> None:
        async with self._slots:
            handler = self.registry.get(request.name)
            started = time.monotonic()
            if handler is None:
                ok, result, error = (
                    False,
                    None,
                    {
                        "code": "unknown_command",
                        "message": f"unknown command {request.name!r}; known: {', '.join(self.registry.names())}",
                    },
                )
            else:
                try:
                    result = await handler(request)
                    ok, error = True, None
                except asyncio.CancelledError:
                    raise  # stays 'received': answered as interrupted at the next start
                except EdgeAgentError as exc:
                    ok, result, error = False, None, {"code": exc.code, "message": str(exc)}
                except Exception as exc:  # a handler bug must not kill the processor
                    log.exception("command %s %s failed", request.name, request.id)
                    ok, result, error = (
                        False,
                        None,
                        {"code": "internal", "message": f"{type(exc).__name__}: {exc}"},
                    )
            self._answer(request.id, request.name, ok, result, error, request=request)
            outcome = "ok" if ok else (error or {}).get("code", "failed")
            metrics.COMMANDS.labels(request.name if handler else "unknown", outcome).inc()
            self.executed += 1
            log.info(
                "command %s %s %s in %.0f ms",
                request.name,
                request.id,
                "succeeded" if ok else f"failed ({outcome})",
                (time.monotonic() - started) * 1000,
                extra={"command": request.name, "ok": ok},
            )

    def _answer(
        self,
        command_id: str,
        name: str,
        ok: bool,
        result: Any,
        error: dict[str, Any] | None,
        *,
        request: CommandRequest | None = None,
    ) -> None:
        """The inbox's final state, the result message and the audit entry: one transaction."""
        body = {"command_id": command_id, "name": name, "ok": ok, "result": result, "error": error}
        now = self.clock()
        env = Envelope(kind="result", device=self.device, body=body, ts=now)
        with self.store.atomic() as conn:
            self.inbox.finish(conn, command_id, ok, body, now)
            self.outbox.enqueue(conn, topics.result_topic(self.device, command_id), env, Priority.EVENT)
            if request is not None:
                self.audit(
                    f"hub:{request.operator or 'unnamed'}",
                    f"command.{name}",
                    f"command:{command_id}",
                    _audit_detail(request, ok, result, error),
                )

    def recover(self) -> list[str]:
        """Answer commands interrupted by a crash or stop as failed; never re-run them."""
        ids = []
        for row in self.inbox.unfinished():
            self._answer(
                row["id"],
                row["name"],
                False,
                None,
                {
                    "code": "interrupted",
                    "message": "the agent stopped while this command ran; it was not re-executed (its effects "
                    "may be partial): check the device and send a new command",
                },
            )
            ids.append(row["id"])
        if ids:
            log.warning("answered %d interrupted command(s) as failed: %s", len(ids), ", ".join(ids))
        return ids

    async def join(self, timeout: float | None = None) -> None:
        """Wait for running commands (tests, graceful stop)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self) -> None:
        """Cancel running commands; they stay 'received' and are answered as interrupted at next start."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def stats(self) -> dict[str, Any]:
        return {"executed": self.executed, "running": len(self._tasks), "rejected": dict(self.rejected)}
