"""The publisher: drains the outbox over one MQTT connection, in order; deletes on the hub's receipt.

A row is deleted when the hub says it STORED it (a receipt by id on
``edge/v1/{device}/receipts``, ``sync/receipts.py``), not when the broker
acknowledged it: a broker killed before it wrote its queue to disk, or a hub
session that expired, would otherwise lose what the box already let go of.
What awaits a receipt, the window that bounds it and the timeout that sends it
again are in ``sync/publisher_receipts.py``. ``receipts=False`` is the older
PUBACK-only path (a row deleted on PUBACK), kept for brokers without our hub
and as the bench's peer.

Per connection it keeps a cursor per priority (the last ``seq`` handed to the
client), so each batch continues where the previous one stopped while a new
alert is still picked up first. When the connection ends, the cursors go with
it: the next connection starts again from the oldest row still in the outbox
(not yet receipted), so everything unconfirmed is re-sent, in order; the hub
de-duplicates by id and receipts the copies.

Back-pressure is the client's in-flight window (``publish_start`` waits for a
free slot) and, with receipts, the receipt window. Confirmed rows are deleted
in batches in a worker thread (one commit, one fsync, per batch) while
publishing goes on.

A message the broker refuses for good (PUBACK reason >= 0x80, e.g. not
authorized) is dropped and counted (``refused_by_broker``) rather than
blocking everything behind it; a transient refusal (quota exceeded, server
busy) ends the connection so the caller reconnects and re-sends in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from agent.core.aio import wait_for
from sync import metrics
from sync.mqtt_client import MqttClient, MqttConnectionLost, MqttError, MqttPublishError
from sync.outbox import Outbox, OutboxMessage
from sync.publisher_receipts import AwaitingReceipts
from sync.receipts import decode as decode_receipt

log = logging.getLogger("edge_agent.sync.publisher")


class Publisher:
    """Drains ``outbox`` through whatever connection ``run`` is given."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        batch: int = 256,
        ack_batch: int = 512,
        ack_interval_s: float = 0.02,
        idle_poll_s: float = 1.0,
        receipts: bool = True,
        receipt_timeout_s: float = 30.0,
        receipt_window: int = 2000,
    ) -> None:
        self.outbox = outbox
        self.batch = batch
        self.ack_batch = ack_batch
        self.ack_interval_s = ack_interval_s
        self.idle_poll_s = idle_poll_s
        #: None: the PUBACK-only path (rows deleted on PUBACK)
        self.awaiting = AwaitingReceipts(receipt_timeout_s, receipt_window) if receipts else None
        #: rows confirmed (stored at the hub, or PUBACKed on the PUBACK-only path)
        self.published = 0
        self.pubacked = 0
        self.refused = 0
        self.receipts = 0
        self.resent = 0
        #: wall-clock time of the last hub receipt (None: none since this process started)
        self.last_receipt_at: float | None = None
        #: row keys to delete (confirmed) and to drop (refused for good, with the reason), flushed in batches
        self.acked: list[int] = []
        self.refused_rows: list[tuple[int, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._ack_ready: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._wake_pending = False
        #: the last hub presence stamp seen (on_hub_online)
        self._hub_seen: Any = None
        outbox.add_listener(self.wake)

    def on_receipt(self, payload: bytes) -> int:
        """A hub receipt (on the loop's thread): its rows are deleted at the next flush; returns how many."""
        receipt = decode_receipt(payload)
        if receipt is None:
            log.warning("ignored a malformed hub receipt (%d bytes)", len(payload))
            return 0
        self.receipts += 1
        self.last_receipt_at = time.time()
        awaiting = self.awaiting
        if awaiting is None:
            return 0
        awaiting.receipted()
        n = 0
        for message_id in receipt.stored:
            seq = awaiting.pop(message_id)
            if seq is not None:
                self.acked.append(seq)
                n += 1
        for message_id, reason in receipt.rejected.items():
            seq = awaiting.pop(message_id)
            if seq is not None:
                log.error("the hub refused message %s for good (%s); dropping it", message_id, reason)
                self.refused_rows.append((seq, "refused_by_hub"))
                n += 1
        for event in (self._ack_ready, self._room, self._wake):
            if event is not None:
                event.set()
        return n

    def on_hub_online(self, payload: bytes) -> None:
        """A hub instance (re)connected (its retained presence): what awaits a receipt goes again now.

        The first presence seen by this process is only noted: it is the retained one, delivered at
        every subscribe, and a new connection re-sends everything unconfirmed anyway.
        """
        try:
            stamp = json.loads(payload).get("ts")
        except (ValueError, AttributeError):
            return
        first, changed = self._hub_seen is None, stamp != self._hub_seen
        self._hub_seen = stamp
        if first or not changed or not self.awaiting:
            return
        log.info("the hub is back: sending again the %d message(s) awaiting its receipt", len(self.awaiting))
        self.awaiting.due_now()
        for event in (self._room, self._wake):
            if event is not None:
                event.set()

    def stats(self) -> dict[str, Any]:
        return {
            "receipts": self.awaiting is not None,
            "awaiting_receipt": len(self.awaiting) if self.awaiting is not None else 0,
            "last_receipt_at": self.last_receipt_at,
            "confirmed": self.published,
            "pubacked": self.pubacked,
            "resent": self.resent,
            "refused": self.refused,
        }

    def wake(self) -> None:
        """Something was enqueued (callable from any thread)."""
        loop = self._loop
        if loop is None or self._wake_pending or loop.is_closed():
            return
        self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._set_wake)
        except RuntimeError:
            pass

    def _set_wake(self) -> None:
        self._wake_pending = False
        if self._wake is not None:
            self._wake.set()

    async def run(self, client: MqttClient, *, stop_when_empty: bool = False) -> None:
        """Publish until the connection ends (raises its MqttError) or, if asked, the outbox is empty."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._ack_ready = asyncio.Event()
        self._room = asyncio.Event()
        self.outbox.open_reader()  # peeks never wait behind an ack batch's commit
        session = _Session(self, client)
        try:
            await session.drain(stop_when_empty)
        finally:
            await asyncio.shield(session.close())


class _Session:
    """One connection's worth of draining: cursors and in-flight rows (what awaits receipts outlives it)."""

    def __init__(self, publisher: Publisher, client: MqttClient) -> None:
        self.p = publisher
        self.client = client
        self.cursors: dict[int, int] = {}
        self.inflight = 0
        self.failure: BaseException | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.flushing: asyncio.Future[None] | None = None
        self.stop_when_empty = False
        self.flusher = asyncio.create_task(self._flush_loop(), name="sync:ack-flush")

    async def drain(self, stop_when_empty: bool) -> None:
        p, client, awaiting = self.p, self.client, self.p.awaiting
        self.stop_when_empty = stop_when_empty
        lost = asyncio.ensure_future(client.wait_lost())
        try:
            while True:
                self._raise_failure()
                self._maybe_rewind()
                rows = await asyncio.to_thread(p.outbox.peek_batch, p.batch, self.cursors)
                if not rows:
                    if stop_when_empty and self.inflight == 0 and not awaiting and not p.acked:
                        return
                    await self._wait_for_work(lost)
                    continue
                for row in rows:
                    if awaiting is not None and awaiting.full and row.id not in awaiting:
                        await self._wait_for_room(lost)
                        break  # look again: receipts came back, or the oldest were rewound
                    fut = await client.publish_start(row.topic, row.payload, 1)
                    self.cursors[row.priority] = row.seq
                    if awaiting is not None:
                        awaiting.sent(row.id, row.seq)
                    self.inflight += 1
                    self.idle.clear()
                    fut.add_done_callback(self._make_done(row))
                    if self.failure is not None:
                        break
        finally:
            lost.cancel()
            with contextlib.suppress(BaseException):
                await lost

    def _maybe_rewind(self) -> None:
        awaiting = self.p.awaiting
        if awaiting is not None and awaiting.overdue():
            n = awaiting.rewind(self.cursors)
            self.p.resent += n
            metrics.RESENT.labels().inc(n)
            log.warning(
                "no hub receipt for %d message(s) within %.0f s; sending them again (next wait %.0f s)",
                n,
                awaiting.current_timeout / 2,
                awaiting.current_timeout,
            )

    def _timeout(self) -> float:
        due = self.p.awaiting.due_in() if self.p.awaiting is not None else None
        return self.p.idle_poll_s if due is None else max(0.0, min(self.p.idle_poll_s, due))

    async def _wait_for_work(self, lost: asyncio.Future[None]) -> None:
        wake = self.p._wake
        assert wake is not None
        wake.clear()
        waiter = asyncio.ensure_future(wake.wait())
        idle = asyncio.ensure_future(self.idle.wait()) if self.inflight else None
        try:
            aws: list[asyncio.Future[Any]] = [waiter, lost, *([idle] if idle else [])]
            await asyncio.wait(aws, timeout=self._timeout(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if idle:
                idle.cancel()
        if lost.done():
            lost.result()  # raises MqttConnectionLost

    async def _wait_for_room(self, lost: asyncio.Future[None]) -> None:
        """The receipt window is full: until a receipt frees room, the oldest is overdue, or the link ends."""
        room = self.p._room
        assert room is not None
        room.clear()
        waiter = asyncio.ensure_future(room.wait())
        try:
            both: list[asyncio.Future[Any]] = [waiter, lost]
            await asyncio.wait(both, timeout=self._timeout(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if lost.done():
            lost.result()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _make_done(self, row: OutboxMessage) -> Callable[[asyncio.Future[None]], None]:
        p = self.p

        def done(fut: asyncio.Future[None]) -> None:
            self.inflight -= 1
            if self.inflight == 0:
                self.idle.set()
            exc = fut.exception() if not fut.cancelled() else MqttConnectionLost("cancelled")
            if exc is None:
                p.pubacked += 1
                if p.awaiting is None:  # the PUBACK-only path: the broker's word is final
                    p.acked.append(row.seq)
                    if len(p.acked) >= p.ack_batch and p._ack_ready is not None:
                        p._ack_ready.set()
                # else: kept until the hub's receipt names it
            elif isinstance(exc, MqttPublishError) and not exc.transient:
                log.error(
                    "broker refused message %s on %s for good (%s); dropping it", row.id, row.topic, exc
                )
                if p.awaiting is not None:
                    p.awaiting.pop(row.id)
                p.refused_rows.append((row.seq, "refused_by_broker"))
                if p._ack_ready is not None:
                    p._ack_ready.set()
            elif isinstance(exc, MqttPublishError):
                # re-sent after a reconnect, in order; a later message may already be through
                self.failure = self.failure or MqttError(f"broker busy ({exc}); reconnecting to re-send")
            # MqttConnectionLost: stays in the outbox, re-sent on the next connection

        return done

    async def _flush_loop(self) -> None:
        ready = self.p._ack_ready
        assert ready is not None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(ready.wait(), self.p.ack_interval_s)
            ready.clear()
            # shielded: cancelling the loop (session end) must not drop a batch already taken
            self.flushing = asyncio.ensure_future(self._flush())
            await asyncio.shield(self.flushing)

    async def _flush(self) -> None:
        p = self.p
        acked, p.acked = p.acked, []
        refused, p.refused_rows = p.refused_rows, []
        if acked:
            await asyncio.to_thread(p.outbox.ack, acked)
            p.published += len(acked)
            metrics.PUBLISHED.labels().inc(len(acked))
        for reason in sorted({r for _, r in refused}):
            seqs = [seq for seq, r in refused if r == reason]
            await asyncio.to_thread(p.outbox.drop, seqs, reason)
            p.refused += len(seqs)
        if self.stop_when_empty and (acked or refused) and p._wake is not None:
            p._wake.set()  # the drain looks again now whether it is done, not at its next idle poll

    async def close(self) -> None:
        """Stop the flusher and commit every confirmation received, whatever ended the session."""
        self.flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.flusher
        if self.flushing is not None:
            await self.flushing  # a batch in progress finishes first
        await self._flush()
