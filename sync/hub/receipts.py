"""The hub's receipts, coalesced per device: fewer, fuller messages back to each box.

After each batch commit the intake hands over what each device's receipt must
name (``BatchOutcome.receipted`` / ``refused``). Sent at once, a fleet of slow
publishers would get one receipt per message: as many messages back as in,
each a publish for the hub, a delivery for the broker and a wake-up for the
box. So ids wait here per device until ``flush_ids`` of them are waiting (a
busy device: its receipt window must keep moving, see
sync/publisher_receipts.py) or its oldest has waited ``linger_s``. A receipt
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


class _Pending:
    """One device's receipt in the making: since when its oldest id waits, and the ids."""

    __slots__ = ("refused", "since", "stored")

    def __init__(self, since: float) -> None:
        self.since = since
        self.stored: list[str] = []
        self.refused: dict[str, str] = {}


class ReceiptBatcher:
    """Pending receipt ids per device; used from the intake writer thread only.

    Each device has its own deadline (its oldest id plus ``linger_s``), so the
    receipts of a large fleet go out spread over time as their ids came in,
    not as one burst of a publish per device that stalls the next batch.
    """

    def __init__(self, send: SendFn, *, linger_s: float = 1.0, flush_ids: int = 500) -> None:
        self.send = send
        self.linger_s = linger_s
        self.flush_ids = flush_ids
        #: insertion order is the order of each device's oldest waiting id: the first is due first
        self._pending: dict[str, _Pending] = {}
        self.sent = 0

    def add(self, stored: dict[str, list[str]], refused: dict[str, dict[str, str]]) -> None:
        """Queue a batch's receipt ids; sends what is due."""
        now = time.monotonic()
        for device, ids in stored.items():
            entry = self._entry(device, now)
            entry.stored.extend(ids)
            if len(entry.stored) >= self.flush_ids:  # a busy device: its receipt window must keep moving
                self._send(device)
        for device, reasons in refused.items():
            self._entry(device, now).refused.update(reasons)
        self.send_due(now)

    def _entry(self, device: str, now: float) -> _Pending:
        entry = self._pending.get(device)
        if entry is None:
            entry = self._pending[device] = _Pending(now)
        return entry

    def due_in(self) -> float | None:
        """Seconds until the oldest pending id is due (0: now); None when nothing waits."""
        for entry in self._pending.values():
            return max(0.0, entry.since + self.linger_s - time.monotonic())
        return None

    def send_due(self, now: float | None = None) -> None:
        """Send the receipts of the devices whose oldest id has waited ``linger_s``."""
        limit = (time.monotonic() if now is None else now) - self.linger_s
        while self._pending:
            device, entry = next(iter(self._pending.items()))
            if entry.since > limit:
                return
            self._send(device)

    def flush(self) -> None:
        """Send every pending receipt now."""
        while self._pending:
            self._send(next(iter(self._pending)))

    def _send(self, device: str) -> None:
        entry = self._pending.pop(device)
        if not entry.stored and not entry.refused:
            return
        try:
            self.send(device, entry.stored, entry.refused)
            self.sent += 1
        except Exception as exc:  # never let a receipt stop intake
            log.warning("could not send %s its receipt (%s); it will send those messages again", device, exc)


__all__ = ["ReceiptBatcher", "SendFn"]
