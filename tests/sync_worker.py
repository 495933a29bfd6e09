"""A process that runs the daemon's real sync service (and nothing else) until killed.

Used by the SIGKILL fault test: the daemon's own ``build_context`` opens the
store on the data dir from the environment, and ``SyncService`` drains the
outbox to the broker in ``EDGE_AGENT_MQTT__URL``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from agent.daemon import build_context
from sync.service import SyncRuntime, SyncService
from tests.sync_support import sync_settings


async def main() -> None:
    settings = sync_settings(
        __import__("pathlib").Path(os.environ["EDGE_AGENT_DATA_DIR"]),
        os.environ["EDGE_AGENT_MQTT__URL"],
        device=os.environ.get("EDGE_AGENT_DEVICE_ID", "d1"),
        STORE__SYNCHRONOUS="full",
    )
    ctx = build_context(settings)
    service = SyncService(SyncRuntime(ctx))
    print("worker running", flush=True)
    await service.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main())
