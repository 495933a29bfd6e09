"""Webhook sink: each alert transition as one JSON POST, in order, retried with back-off until answered.

Events wait in a bounded queue (drop oldest, counted) while the webhook is
down; a 2xx answer is delivery, anything else is retried, so an outage of the
receiver delays events but does not lose them until the queue overflows.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from agent.plugins.sdk import Plugin


class WebhookSink(Plugin):
    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.queue: deque[dict[str, Any]] = deque()
        self.wake = asyncio.Event()
        self.sent = self.failed = self.dropped = 0

    async def on_event(self, type_: str, data: dict[str, Any]) -> None:
        if type_ not in self.ctx.settings["events"]:
            return
        if len(self.queue) >= self.ctx.settings["queue_size"]:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append({"type": type_, "alert": data.get("alert"), "ts": data.get("ts")})
        self.wake.set()

    async def run(self) -> None:
        import aiohttp

        url = self.ctx.settings["url"]
        if not url:
            raise ValueError("plugins.config.webhook.url is empty: set the webhook's http(s) address")
        timeout = aiohttp.ClientTimeout(total=self.ctx.settings["timeout_s"])
        delay = 0.5
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if not self.queue:
                    self.wake.clear()
                    await self.wake.wait()
                event = self.queue[0]
                try:
                    async with session.post(url, json=event) as resp:
                        ok = 200 <= resp.status < 300
                        why = f"HTTP {resp.status}"
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    ok, why = False, str(exc) or type(exc).__name__
                if ok:
                    if self.queue and self.queue[0] is event:
                        self.queue.popleft()
                    self.sent += 1
                    delay = 0.5
                else:
                    self.failed += 1
                    self.ctx.log.warning("webhook %s: %s; retrying in %.1f s", url, why, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 60.0)
                self.ctx.status(
                    sent=self.sent, failed=self.failed, dropped=self.dropped, queued=len(self.queue)
                )
