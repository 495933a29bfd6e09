"""A process that runs the daemon's real sync service (and nothing else) until killed.

Used by the SIGKILL fault tests: the daemon's own ``build_context`` opens the
store on the data dir from the environment, and ``SyncService`` drains the
outbox to the broker in ``EDGE_AGENT_MQTT__URL``.

``EDGE_TEST_PRODUCE=N,RATE``: the worker also writes N records at RATE a
second, numbered 0..N-1 across restarts, the way the daemon's features do:
each an ``events`` row and its outbox message (every fourth an alert) in ONE
transaction, so after a SIGKILL it carries on from the last committed number.
Other ``EDGE_AGENT_*`` variables (e.g. ``SYNC__RECEIPT_TIMEOUT_S``) reach the settings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from agent.daemon import build_context
from agent.syncd.service import SyncRuntime, SyncService
from sync import topics
from sync.envelope import Envelope
from sync.outbox import Priority
from tests.sync_support import sync_settings

_PASSED = ("EDGE_AGENT_DATA_DIR", "EDGE_AGENT_MQTT__URL", "EDGE_AGENT_DEVICE_ID")


async def produce(ctx: Any, device: str, total: int, rate: float) -> None:
    """Records numbered from the last one committed (a restart carries on, never repeats)."""
    store, outbox = ctx.store, ctx.outbox
    row = store.execute(
        "SELECT MAX(CAST(json_extract(data, '$.i') AS INTEGER)) FROM events WHERE type = 'test.n'"
    )
    last = row.fetchone()[0]
    i = 0 if last is None else last + 1
    while i < total:
        alert = i % 4 == 3
        body: dict[str, Any] = {"i": i}
        if alert:
            body.update(level="warning", title=f"alert {i}", state="firing", alert_id=f"a{i}")
        kind = "alerts" if alert else "events"
        with store.atomic() as conn:
            conn.execute(
                "INSERT INTO events (ts, type, source, data) VALUES (?, 'test.n', 'test', ?)",
                (0.0, f'{{"i": {i}}}'),
            )
            env = Envelope(kind="alert" if alert else "event", device=device, body=body)
            outbox.enqueue(
                conn, topics.device_topic(device, kind), env, Priority.ALERT if alert else Priority.EVENT
            )
        i += 1
        await asyncio.sleep(1.0 / rate)
    print(f"produced up to {total}", flush=True)


async def main() -> None:
    extra = {
        k.removeprefix("EDGE_AGENT_"): v
        for k, v in os.environ.items()
        if k.startswith("EDGE_AGENT_") and k not in _PASSED
    }
    device = os.environ.get("EDGE_AGENT_DEVICE_ID", "d1")
    settings = sync_settings(
        Path(os.environ["EDGE_AGENT_DATA_DIR"]),
        os.environ["EDGE_AGENT_MQTT__URL"],
        device=device,
        **{"STORE__SYNCHRONOUS": "full", **extra},
    )
    ctx = build_context(settings)
    service = SyncService(SyncRuntime(ctx))
    print("worker running", flush=True)
    produce_spec = os.environ.get("EDGE_TEST_PRODUCE")
    if produce_spec:
        total, rate = produce_spec.split(",")
        asyncio.get_running_loop().create_task(produce(ctx, device, int(total), float(rate)))
    await service.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main())
