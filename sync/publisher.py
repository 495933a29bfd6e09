"""The publisher: drains the outbox over one MQTT connection, in order, deleting only on PUBACK.

Per connection it keeps a cursor per priority (the last ``seq`` handed to the
client), so each batch continues where the previous one stopped while a new
alert is still picked up first. When the connection ends, the cursors go with
it: the next connection starts again from the oldest unacknowledged message,
so everything in flight is re-sent, in order; the hub de-duplicates by id.

Back-pressure is the client's in-flight window: ``publish_start`` waits for a
free slot. Acknowledged rows are deleted in batches in a worker thread (one
commit, one fsync, per batch) while publishing goes on.

A message the broker refuses for good (PUBACK reason >= 0x80, e.g. not
authorized) is dropped and counted (``refused_by_broker``) rather than
blocking everything behind it; a transient refusal (quota exceeded, server
busy) ends the connection so the caller reconnects and re-sends in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sync import metrics
from sync.mqtt_client import MqttClient, MqttConnectionLost, MqttError, MqttPublishError
from sync.outbox import Outbox, OutboxMessage

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
    ) -> None:
        self.outbox = outbox
        self.batch = batch
        self.ack_batch = ack_batch
        self.ack_interval_s = ack_interval_s
        self.idle_poll_s = idle_poll_s
        self.published = 0
        self.refused = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._wake_pending = False
        outbox.add_listener(self.wake)

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
        self.outbox.open_reader()  # peeks never wait behind an ack batch's commit
        session = _Session(self, client)
        try:
            await session.drain(stop_when_empty)
        finally:
            await asyncio.shield(session.close())


class _Session:
    """One connection's worth of draining: cursors, in-flight rows, pending acks."""

    def __init__(self, publisher: Publisher, client: MqttClient) -> None:
        self.p = publisher
        self.client = client
        self.cursors: dict[int, int] = {}
        self.inflight = 0
        self.acked: list[int] = []
        self.refused: list[int] = []
        self.failure: BaseException | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.ack_ready = asyncio.Event()
        self.flushing: asyncio.Future[None] | None = None
        self.flusher = asyncio.create_task(self._flush_loop(), name="sync:ack-flush")

    async def drain(self, stop_when_empty: bool) -> None:
        p, client = self.p, self.client
        lost = asyncio.ensure_future(client.wait_lost())
        try:
            while True:
                self._raise_failure()
                rows = await asyncio.to_thread(p.outbox.peek_batch, p.batch, self.cursors)
                if not rows:
                    if stop_when_empty and self.inflight == 0:
                        return
                    await self._wait_for_work(lost)
                    continue
                for row in rows:
                    fut = await client.publish_start(row.topic, row.payload, 1)
                    self.cursors[row.priority] = row.seq
                    self.inflight += 1
                    self.idle.clear()
                    fut.add_done_callback(self._make_done(row))
                    if self.failure is not None:
                        break
        finally:
            lost.cancel()
            with contextlib.suppress(BaseException):
                await lost

    async def _wait_for_work(self, lost: asyncio.Future[None]) -> None:
        wake = self.p._wake
        assert wake is not None
        wake.clear()
        waiter = asyncio.ensure_future(wake.wait())
        idle = asyncio.ensure_future(self.idle.wait()) if self.inflight else None
        try:
            aws = [waiter, lost] + ([idle] if idle else [])
            await asyncio.wait(aws, timeout=self.p.idle_poll_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if idle:
                idle.cancel()
        if lost.done():
            lost.result()  # raises MqttConnectionLost

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _make_done(self, row: OutboxMessage) -> Callable[[asyncio.Future[None]], None]:
        def done(fut: asyncio.Future[None]) -> None:
            self.inflight -= 1
            if self.inflight == 0:
                self.idle.set()
            exc = fut.exception() if not fut.cancelled() else MqttConnectionLost("cancelled")
            if exc is None:
                self.acked.append(row.seq)
                if len(self.acked) >= self.p.ack_batch:
                    self.ack_ready.set()
            elif isinstance(exc, MqttPublishError) and not exc.transient:
                log.error(
                    "broker refused message %s on %s for good (%s); dropping it", row.id, row.topic, exc
                )
                self.refused.append(row.seq)
                self.ack_ready.set()
            elif isinstance(exc, MqttPublishError):
                # re-sent after a reconnect, in order; a later message may already be through
                self.failure = self.failure or MqttError(f"broker busy ({exc}); reconnecting to re-send")
            # MqttConnectionLost: stays in the outbox, re-sent on the next connection

        return done

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.ack_ready.wait(), self.p.ack_interval_s)
            self.ack_ready.clear()
            # shielded: cancelling the loop (session end) must not drop a batch already taken
            self.flushing = asyncio.ensure_future(self._flush())
            await asyncio.shield(self.flushing)

    async def _flush(self) -> None:
        acked, self.acked = self.acked, []
        refused, self.refused = self.refused, []
        if acked:
            await asyncio.to_thread(self.p.outbox.ack, acked)
            self.p.published += len(acked)
            metrics.PUBLISHED.labels().inc(len(acked))
        if refused:
            await asyncio.to_thread(self.p.outbox.drop, refused, "refused_by_broker")
            self.p.refused += len(refused)

    async def close(self) -> None:
        """Stop the flusher and commit every PUBACK received, whatever ended the session."""
        self.flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.flusher
        if self.flushing is not None:
            await self.flushing  # a batch in progress finishes first
        await self._flush()
