"""The hub's receipts, coalesced per device: fewer, fuller messages back to each box.

After each batch commit the intake hands over what each device's receipt must
name (``BatchOutcome.receipted`` / ``refused``). Sent at once, a fleet of slow
publishers would get one receipt per message: as many messages back as in,
each a publish for the hub, a delivery for the broker and a wake-up for the
box. So ids wait here per device until ``flush_ids`` of them are waiting (a
busy device: its receipt window must keep moving, see
sync/publisher_receipts.py) or the oldest has waited ``linger_s``. A receipt
held here when the hub dies is never sent: the device sends those messages
again after its timeout and they are receipted as duplicates, so nothing is
lost, only repeated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("edge_hub.receipts")

#: (device, ids stored, {id: reason refused for good}): publishes one device's receipt
SendFn = Callable[[str, list[str], dict[str, str]], None]


class ReceiptBatcher:
    """Pending receipt ids per device; used from the intake writer thread only."""

    def __init__(self, send: SendFn, *, linger_s: float = 1.0, flush_ids: int = 500) -> None:
        self.send = send
        self.linger_s = linger_s
        self.flush_ids = flush_ids
        self._stored: dict[str, list[str]] = {}
        self._refused: dict[str, dict[str, str]] = {}
        self._since: float | None = None
        self.sent = 0

    def add(self, stored: dict[str, list[str]], refused: dict[str, dict[str, str]]) -> None:
        """Queue a batch's receipt ids; sends what is due."""
        for device, ids in stored.items():
            self._stored.setdefault(device, []).extend(ids)
        for device, reasons in refused.items():
            self._refused.setdefault(device, {}).update(reasons)
        if (stored or refused) and self._since is None:
            self._since = time.monotonic()
        full = [d for d, ids in self._stored.items() if len(ids) >= self.flush_ids]
        for device in full:
            self._send(device)
        if self.due_in() == 0.0:
            self.flush()

    def due_in(self) -> float | None:
        """Seconds until the oldest pending id is due (0: now); None when nothing waits."""
        if self._since is None:
            return None
        return max(0.0, self._since + self.linger_s - time.monotonic())

    def flush(self) -> None:
        """Send every pending receipt now."""
        for device in sorted(set(self._stored) | set(self._refused)):
            self._send(device)
        self._since = None

    def _send(self, device: str) -> None:
        stored = self._stored.pop(device, [])
        refused = self._refused.pop(device, {})
        if not self._stored and not self._refused:
            self._since = None
        if not stored and not refused:
            return
        try:
            self.send(device, stored, refused)
            self.sent += 1
        except Exception as exc:  # never let a receipt stop intake
            log.warning("could not send %s its receipt (%s); it will send those messages again", device, exc)


__all__ = ["ReceiptBatcher", "SendFn"]
