"""Intake: validated messages written in batches, exactly once, then acknowledged.

One writer thread takes what the MQTT reader has queued (up to
``batch_size``; ``linger_s`` > 0 waits that long after the first for more)
and writes it in ONE transaction: the batch grows by itself under load while
the previous one commits (group commit), so the rate is bounded by
statements, not by fsyncs. At 1,000 devices a 10 ms linger took a third less
CPU (5x fewer commits) but cost 10-15 ms at p50 and did not raise the rate
here, so the default stays 0. The order within a transaction:

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
redeliver. After the commit and those acks, each device gets a RECEIPT
(``sync/receipts.py``): the ids of its messages now stored, new ones and
duplicates alike (a device re-sends what no receipt named, and must hear
again that it is stored), and the ids refused for good, coalesced per device
for up to a second (``sync/hub/receipts.py``). The device deletes its outbox
rows only then: "delivered" means stored here, not taken by the broker. A busy or unreachable database makes the batch wait and retry
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

from agent.core.errors import BadRequestError, StoreError
from agent.core.metrics import observe_all
from sync.hub import metrics
from sync.hub.db import HubDB, TransientDBError
from sync.hub.intake_batch import BatchOutcome, one_statement, write_batch
from sync.hub.receipts import ReceiptBatcher
from sync.hub.settings import IntakeSettings
from sync.hub.validate import Accepted, Incoming, validate

log = logging.getLogger("edge_hub.intake")

AckFn = Callable[[Incoming], None]
CommittedFn = Callable[[list[Accepted], float], None]
#: (device, ids stored, {id: reason refused for good}): publishes the device's receipt
ReceiptFn = Callable[[str, list[str], dict[str, str]], None]


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
        receipts: ReceiptFn | None = None,
        receipt_linger_s: float = 1.0,
    ) -> None:
        self.db = db
        self.settings = settings
        #: C-level and lock-free for the MQTT reader (a queue.Queue took two Python locks per message);
        #: ``queue_size`` is enforced by ``submit``, which waits on ``_room`` while it is reached
        self.queue: queue.SimpleQueue[Incoming | None] = queue.SimpleQueue()
        self._room = threading.Condition()
        self._ack = ack or (lambda _msg: None)
        #: a whole batch's acks in one go when ``ack`` offers it (``ack.many``: sync/hub/mqtt.py's one write)
        self._ack_many: Callable[[Sequence[Incoming]], None] | None = getattr(ack, "many", None)
        self._on_committed = on_committed
        #: receipts coalesced per device (sync/hub/receipts.py); without a writer thread, sent at once
        self._receipts = ReceiptBatcher(receipts, linger_s=receipt_linger_s) if receipts else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log_reject = _RejectLog()
        #: counts since start (the API's /v1/info); Prometheus has the same, process-wide
        self.totals: dict[str, int] = {"stored": 0, "duplicates": 0, "rejected": 0, "batches": 0}
        self.rejected_by_reason: dict[str, int] = {}

    # ------------------------------------------------------------ feeding

    def submit(self, msg: Incoming) -> bool:
        """Queue ``msg``; blocks while the queue is full (back-pressure). False once stopping."""
        limit = self.settings.queue_size
        while not self._stop.is_set():
            if self.queue.qsize() < limit:
                self.queue.put(msg)
                return True
            with self._room:  # the writer notifies under this lock once it took a batch
                if self.queue.qsize() >= limit:
                    self._room.wait(0.2)
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
        try:
            self._loop()
        finally:
            if self._receipts is not None:
                self._receipts.flush()

    def _loop(self) -> None:
        while True:
            due = self._receipts.due_in() if self._receipts is not None else None
            try:
                first = self.queue.get() if due is None else self.queue.get(timeout=due)
            except queue.Empty:
                assert self._receipts is not None
                self._receipts.send_due()  # quiet until the oldest was due: the receipts due go out
                continue
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
            with self._room:
                self._room.notify_all()
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
                outcome.refuse(*_identify(msg), exc.code)
                continue
            if item.id in seen:  # the same message twice in one batch (a QoS 1 redelivery)
                outcome.duplicates.append(item.kind)
                outcome.receipt(item.kind, item.device, item.id)
                continue
            seen.add(item.id)
            accepted.append(item)
        if accepted:
            outcome.merge(self._store_with_retry(accepted))
        committed_at = time.time()
        self._account(batch, outcome, committed_at)
        if self._ack_many is not None:
            self._ack_many(batch)
        else:
            for msg in batch:
                if msg.qos:
                    self._ack(msg)
        # after the acks, so the broker's window to us opens first; a crash in between only means the
        # device sends those again after its timeout, and they are receipted as duplicates then
        self._send_receipts(outcome)
        if self._on_committed is not None and outcome.stored:
            self._on_committed(outcome.stored, committed_at)
        return outcome

    def _send_receipts(self, outcome: BatchOutcome) -> None:
        """Each device's receipt, after the commit (and the broker's acks).

        A receipt that cannot go out (the broker is away) is harmless: the
        device sends those messages again after its timeout, and they are
        receipted as duplicates then.
        """
        if self._receipts is None:
            return
        self._receipts.add(outcome.receipted, outcome.refused)
        if self._thread is None:
            self._receipts.flush()  # no writer thread to send them later (tests calling process())

    def _account(self, batch: Sequence[Incoming], outcome: BatchOutcome, committed_at: float) -> None:
        counts: dict[tuple[str, str], int] = {}
        latencies: list[float] = []
        for item in outcome.stored:
            counts[item.kind, "stored"] = counts.get((item.kind, "stored"), 0) + 1
            latencies.append(max(0.0, committed_at - item.env.ts))
        observe_all(metrics.LATENCY, latencies)
        for kind in outcome.duplicates:
            counts[kind, "duplicate"] = counts.get((kind, "duplicate"), 0) + 1
        for (kind, result), n in counts.items():  # one labelled counter step per kind, not per message
            metrics.MESSAGES.labels(kind, result).inc(n)
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
        dialect = self.db.dialect
        try:
            # one statement (PostgreSQL, telemetry/events only): committed by itself, one round trip
            with self.db.statement() if one_statement(accepted, dialect) else self.db.transaction() as tx:
                write_batch(tx, accepted, outcome, self.db.max_params, dialect=dialect)
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
                    write_batch(tx, [item], one, self.db.max_params, dialect=self.db.dialect)
            except TransientDBError:
                raise
            except StoreError as exc:
                one = BatchOutcome(rejections=[("store_failed", str(exc), item.incoming.topic)])
                one.refuse(item.kind, item.device, item.id, "store_failed")
            outcome.merge(one)
        return outcome


def _identify(msg: Incoming) -> tuple[str | None, str | None, str | None]:
    """(topic kind, device, message id) of a message refused before it parsed; None where unknown."""
    import json

    from sync import topics

    parsed = topics.parse(msg.topic)
    if parsed is None:
        return None, None, None
    try:
        data = json.loads(msg.payload)
        message_id = data.get("id") if isinstance(data, dict) else None
    except (ValueError, UnicodeDecodeError):
        message_id = None
    return parsed.kind, parsed.device, message_id if isinstance(message_id, str) else None


__all__ = ["BatchOutcome", "Intake", "ReceiptFn", "write_batch"]
