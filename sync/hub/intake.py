"""Intake: validated messages written in batches, exactly once, then acknowledged.

One writer thread takes whatever the MQTT reader has queued (up to
``batch_size``) and writes it in ONE transaction: the batch grows by itself
under load while the previous one commits (group commit), so the rate is
bounded by statements, not by fsyncs. The order within a transaction:

1. reads only: results must answer a command we sent to a device we know;
   those that do not are rejected before anything is written;
2. ``INSERT INTO messages ... ON CONFLICT (id) DO NOTHING RETURNING id``: the
   primary key on the message id is the de-duplication, and RETURNING says
   which rows are new. Two hub instances (or a redelivered message) racing on
   one id: exactly one insert returns it;
3. derived rows (registry, alerts, command results) only for the new ids, so
   a duplicate never updates anything twice.

Messages are acknowledged to the broker only after their batch committed (or
after they were rejected): an unacknowledged message is the broker's to
redeliver. A busy or unreachable database makes the batch wait and retry
(``TransientDBError``), with back-pressure through the bounded queue to the
MQTT reader and on to the broker; a batch the database refuses for its data
is split into one transaction per message, so one bad row costs only itself.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import BadRequestError, StoreError
from sync.hub import metrics
from sync.hub.db import HubDB, TransientDBError, Tx
from sync.hub.settings import IntakeSettings
from sync.hub.validate import Accepted, Incoming, alert_fields, error_text, validate

log = logging.getLogger("edge_hub.intake")

AckFn = Callable[[Incoming], None]
CommittedFn = Callable[[list[Accepted], float], None]


@dataclass
class BatchOutcome:
    """What one batch came to; metrics and logs are taken from it once it is final."""

    stored: list[Accepted] = field(default_factory=list)
    #: kinds of the messages that were already stored (by us earlier, or by a peer instance)
    duplicates: list[str] = field(default_factory=list)
    #: (reason, message, topic) of each rejected message
    rejections: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def rejected(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for reason, _, _ in self.rejections:
            out[reason] = out.get(reason, 0) + 1
        return out

    def merge(self, part: BatchOutcome) -> None:
        self.stored.extend(part.stored)
        self.duplicates.extend(part.duplicates)
        self.rejections.extend(part.rejections)


class _RejectLog:
    """Logs each rejection reason at most ``burst`` times a minute, so a flood cannot drown the log."""

    def __init__(self, burst: int = 10, window_s: float = 60.0) -> None:
        self.burst = burst
        self.window_s = window_s
        self._seen: dict[str, tuple[float, int]] = {}

    def __call__(self, reason: str, message: str, topic: str) -> None:
        now = time.monotonic()
        start, count = self._seen.get(reason, (now, 0))
        if now - start > self.window_s:
            if count > self.burst:
                log.warning("%d more messages rejected for %s in the last minute", count - self.burst, reason)
            start, count = now, 0
        count += 1
        self._seen[reason] = (start, count)
        if count <= self.burst:
            log.warning("rejected a message on %s: %s", topic, message, extra={"reason": reason})


class Intake:
    """The bounded queue and the batch writer. ``process()`` is usable without a thread (tests)."""

    def __init__(
        self,
        db: HubDB,
        settings: IntakeSettings,
        *,
        ack: AckFn | None = None,
        on_committed: CommittedFn | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.queue: queue.Queue[Incoming | None] = queue.Queue(maxsize=settings.queue_size)
        self._ack = ack or (lambda _msg: None)
        self._on_committed = on_committed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log_reject = _RejectLog()
        #: counts since start (the API's /v1/info); Prometheus has the same, process-wide
        self.totals: dict[str, int] = {"stored": 0, "duplicates": 0, "rejected": 0, "batches": 0}
        self.rejected_by_reason: dict[str, int] = {}

    # ------------------------------------------------------------ feeding

    def submit(self, msg: Incoming) -> bool:
        """Queue ``msg``; blocks while the queue is full (back-pressure). False once stopping."""
        while not self._stop.is_set():
            try:
                self.queue.put(msg, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    # ------------------------------------------------------------ the writer thread

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hub-intake", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then end the writer thread."""
        if self._thread is None:
            return
        self.queue.put(None)
        self._thread.join(timeout)
        self._stop.set()
        self._thread = None

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.settings.linger_s
            stop_after = False
            while len(batch) < self.settings.batch_size:
                try:
                    timeout = deadline - time.monotonic()
                    item = self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop_after = True
                    break
                batch.append(item)
            metrics.QUEUE_DEPTH.set(self.queue.qsize())
            try:
                self.process(batch)
            except TransientDBError:
                return  # stopping while the database is away: already logged, left unacknowledged
            except Exception:  # never let the writer die: a bug here must not stop intake
                log.exception(
                    "intake batch of %d messages failed unexpectedly; they stay unacknowledged", len(batch)
                )
            if stop_after:
                return

    # ------------------------------------------------------------ one batch

    def process(self, batch: Sequence[Incoming]) -> BatchOutcome:
        """Validate, store (retrying while the database is unavailable) and acknowledge ``batch``."""
        outcome = BatchOutcome()
        accepted: list[Accepted] = []
        seen: set[str] = set()
        for msg in batch:
            try:
                item = validate(msg, max_bytes=self.settings.max_message_bytes)
            except BadRequestError as exc:
                outcome.rejections.append((exc.code, str(exc), msg.topic))
                continue
            if item.id in seen:  # the same message twice in one batch (a QoS 1 redelivery)
                outcome.duplicates.append(item.kind)
                continue
            seen.add(item.id)
            accepted.append(item)
        if accepted:
            outcome.merge(self._store_with_retry(accepted))
        committed_at = time.time()
        self._account(batch, outcome, committed_at)
        for msg in batch:
            if msg.qos:
                self._ack(msg)
        if self._on_committed is not None and outcome.stored:
            self._on_committed(outcome.stored, committed_at)
        return outcome

    def _account(self, batch: Sequence[Incoming], outcome: BatchOutcome, committed_at: float) -> None:
        for item in outcome.stored:
            metrics.MESSAGES.labels(item.kind, "stored").inc()
            metrics.LATENCY.observe(max(0.0, committed_at - item.env.ts))
        for kind in outcome.duplicates:
            metrics.MESSAGES.labels(kind, "duplicate").inc()
        for reason, message, topic in outcome.rejections:
            metrics.REJECTED.labels(reason).inc()
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1
            self._log_reject(reason, message, topic)
        metrics.BATCHES.inc()
        metrics.BATCH_SIZE.observe(len(batch))
        self.totals["stored"] += len(outcome.stored)
        self.totals["duplicates"] += len(outcome.duplicates)
        self.totals["rejected"] += len(outcome.rejections)
        self.totals["batches"] += 1

    def _store_with_retry(self, accepted: list[Accepted]) -> BatchOutcome:
        delay = 0.05
        while True:
            try:
                return self._store(accepted)
            except TransientDBError as exc:
                metrics.RETRIES.inc()
                if self._stop.is_set():
                    log.error(
                        "stopping with %d messages unstored (%s); they stay unacknowledged at the broker",
                        len(accepted),
                        exc,
                    )
                    raise
                log.warning(
                    "database unavailable, retrying a batch of %d in %.2f s: %s", len(accepted), delay, exc
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _store(self, accepted: list[Accepted]) -> BatchOutcome:
        """One transaction for the batch; one per message when the database refuses the batch's data."""
        outcome = BatchOutcome()
        try:
            with self.db.transaction() as tx:
                write_batch(tx, accepted, outcome, self.db.max_params)
            return outcome
        except TransientDBError:
            raise
        except StoreError as exc:
            log.warning(
                "a batch of %d was refused by the database (%s); storing one by one", len(accepted), exc
            )
        outcome = BatchOutcome()
        for item in accepted:
            one = BatchOutcome()
            try:
                with self.db.transaction() as tx:
                    write_batch(tx, [item], one, self.db.max_params)
            except TransientDBError:
                raise
            except StoreError as exc:
                one = BatchOutcome(rejections=[("store_failed", str(exc), item.incoming.topic)])
            outcome.merge(one)
        return outcome


# ------------------------------------------------------------ the SQL of one batch


def write_batch(tx: Tx, accepted: Sequence[Accepted], outcome: BatchOutcome, max_params: int) -> None:
    """Write ``accepted`` inside ``tx``; fill ``outcome`` (stored, duplicates, rejected)."""
    results = [a for a in accepted if a.kind == "result"]
    refused: set[str] = set()
    if results:
        refused = _check_results(tx, results, outcome, max_params)
    rows = sorted((a for a in accepted if a.id not in refused), key=lambda a: a.id)
    if not rows:
        return
    inserted = _insert_messages(tx, rows, max_params)
    new = [a for a in accepted if a.id in inserted]  # arrival order: states apply in it
    outcome.stored.extend(new)
    outcome.duplicates.extend(a.kind for a in rows if a.id not in inserted)
    if new:
        _apply_derived(tx, new)


def _check_results(tx: Tx, results: list[Accepted], outcome: BatchOutcome, max_params: int) -> set[str]:
    refused: set[str] = set()
    devices = {
        r["device"]
        for r in _select_in(
            tx,
            "SELECT device FROM devices WHERE device IN ({})",
            sorted({a.device for a in results}),
            max_params,
        )
    }
    commands = {
        r["id"]: r["device"]
        for r in _select_in(
            tx,
            "SELECT id, device FROM commands WHERE id IN ({})",
            sorted({a.command_id or "" for a in results}),
            max_params,
        )
    }
    for a in results:
        reason = None
        if a.device not in devices:
            reason, why = "unknown_device", f"result {a.id} from {a.device!r}, a device the hub does not know"
        elif a.command_id not in commands:
            reason, why = (
                "unknown_command",
                f"result {a.id} answers command {a.command_id}, which the hub never sent",
            )
        elif commands[a.command_id] != a.device:
            reason, why = (
                "wrong_device",
                (
                    f"result {a.id} from {a.device!r} answers command {a.command_id} sent to "
                    f"{commands[a.command_id]!r}"
                ),
            )
        if reason:
            refused.add(a.id)
            outcome.rejections.append((reason, why, a.incoming.topic))
    return refused


def _select_in(tx: Tx, sql: str, values: list[str], max_params: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for start in range(0, len(values), max_params):
        chunk = values[start : start + max_params]
        out.extend(tx.query(sql.format(",".join("?" * len(chunk))), chunk))
    return out


_MESSAGE_COLUMNS = 6


def _insert_messages(tx: Tx, rows: list[Accepted], max_params: int) -> set[str]:
    inserted: set[str] = set()
    per = max(1, max_params // _MESSAGE_COLUMNS)
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        params: list[Any] = []
        for a in chunk:
            params += [a.id, a.device, a.kind, a.env.ts, a.incoming.received_at, a.body_json]
        values = ",".join(["(?,?,?,?,?,?)"] * len(chunk))
        found = tx.query(
            "INSERT INTO messages (id, device, kind, ts, received_at, body) VALUES "
            f"{values} ON CONFLICT (id) DO NOTHING RETURNING id",
            params,
        )
        inserted.update(r["id"] for r in found)
    return inserted


def _apply_derived(tx: Tx, new: list[Accepted]) -> None:
    import json

    seen: dict[str, float] = {}
    for a in new:
        seen[a.device] = max(seen.get(a.device, 0.0), a.incoming.received_at)
    tx.executemany(
        "INSERT INTO devices (device, first_seen, last_seen) VALUES (?, ?, ?) ON CONFLICT (device) DO UPDATE "
        "SET last_seen = CASE WHEN excluded.last_seen > devices.last_seen THEN excluded.last_seen "
        "ELSE devices.last_seen END",
        [(d, t, t) for d, t in sorted(seen.items())],
    )
    latest_state: dict[str, Accepted] = {}
    for a in new:
        if a.kind == "state":
            latest_state[a.device] = a  # arrival order: the last one received wins
    for device in sorted(latest_state):
        a = latest_state[device]
        body = a.env.body
        online = 1 if body["online"] else 0
        labels = body.get("labels")
        models = body.get("models")
        tx.execute(
            "UPDATE devices SET online = ?, "
            "online_changed_at = CASE WHEN online <> ? OR online_changed_at IS NULL THEN ? "
            "ELSE online_changed_at END, "
            "last_state_id = ?, agent_version = COALESCE(?, agent_version), "
            "public_key = COALESCE(?, public_key), labels = COALESCE(?, labels), models = COALESCE(?, models) "
            "WHERE device = ?",
            (
                online,
                online,
                a.incoming.received_at,
                a.id,
                body.get("agent_version"),
                body.get("public_key"),
                None if labels is None else json.dumps(labels, sort_keys=True),
                None if models is None else json.dumps(models, sort_keys=True),
                device,
            ),
        )
    rows = []
    for a in new:
        if a.kind == "alerts":
            f = alert_fields(a.env.body)
            assert f is not None  # validate() refused alerts without these fields
            rows.append(
                (a.id, a.device, a.env.ts, f["alert_id"], f["level"], f["title"], f["state"], a.body_json)
            )
    tx.executemany(
        "INSERT INTO alerts (id, device, ts, alert_id, level, title, state, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    results = [a for a in new if a.kind == "result"]
    tx.executemany(
        "UPDATE commands SET status = ?, result_id = ?, result_at = ?, ok = ?, result = ?, error = ? "
        "WHERE id = ? AND result_id IS NULL",
        [
            (
                "ok" if a.env.body["ok"] else "failed",
                a.id,
                a.incoming.received_at,
                1 if a.env.body["ok"] else 0,
                json.dumps(a.env.body.get("result"), sort_keys=True),
                error_text(a.env.body.get("error")),
                a.command_id,
            )
            for a in results
        ],
    )


__all__ = ["BatchOutcome", "Intake", "write_batch"]
