"""What the publisher sent and the hub has not yet confirmed stored: the receipt window.

Every message published stays in the outbox and is listed here (id -> row key
and when it went out, in send order) until a hub receipt names it
(``sync/receipts.py``); then its row is deleted. Two rules keep this bounded
and make loss impossible:

- the window: at most ``window`` messages await a receipt; the publisher
  stops taking new rows until receipts come back (while the hub is down the
  broker is not flooded with copies it may drop: Mosquitto keeps 1,000
  queued messages per offline session by default);
- the timeout: when the oldest has waited ``timeout_s`` without a receipt
  (the broker lost it, the hub's session expired, the hub refused to start),
  the cursors are rewound to the oldest unconfirmed row of each priority and
  everything from there is sent again, in order; the hub de-duplicates by id
  and receipts the copies. While nothing answers, each rewind doubles the
  wait (up to ``max_timeout_s``); the first receipt resets it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sync.outbox_bound import SHIFT


class AwaitingReceipts:
    """Ids sent and not yet receipted, oldest first. Used from the event loop's thread only."""

    def __init__(
        self,
        timeout_s: float = 30.0,
        window: int = 2000,
        *,
        max_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_timeout_s = max_timeout_s if max_timeout_s is not None else max(timeout_s, 10 * timeout_s)
        self.window = window
        self.clock = clock
        self.current_timeout = timeout_s
        #: id -> (seq, monotonic time sent); insertion order is send order (a re-send moves it last)
        self._entries: dict[str, tuple[int, float]] = {}
        self._due_now = False
        self.rewinds = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._entries

    def sent(self, message_id: str, seq: int) -> None:
        self._entries.pop(message_id, None)
        self._entries[message_id] = (seq, self.clock())

    def pop(self, message_id: str) -> int | None:
        """The row key of a receipted message (None: not awaited, e.g. sent before a restart)."""
        entry = self._entries.pop(message_id, None)
        if not self._entries:
            self._due_now = False
        return None if entry is None else entry[0]

    def receipted(self) -> None:
        """The hub answers: back to the normal timeout."""
        self.current_timeout = self.timeout_s

    def due_now(self) -> None:
        """The hub is back (its presence): everything awaiting is overdue now, the wait back to normal."""
        self.current_timeout = self.timeout_s
        self._due_now = True

    @property
    def full(self) -> bool:
        return len(self._entries) >= self.window

    def due_in(self) -> float | None:
        """Seconds until the oldest is overdue (<= 0: now); None when nothing awaits."""
        for _seq, at in self._entries.values():
            return 0.0 if self._due_now else at + self.current_timeout - self.clock()
        return None

    def overdue(self) -> bool:
        due = self.due_in()
        return due is not None and due <= 0

    def rewind(self, cursors: dict[int, int]) -> int:
        """Move ``cursors`` back before the oldest unconfirmed row of each priority; forget them all.

        Returns how many messages will be sent again. The wait before the next
        rewind doubles, so a long hub outage costs one copy per window, not a storm.
        """
        oldest: dict[int, int] = {}
        for seq, _at in self._entries.values():
            priority = seq >> SHIFT
            if seq < oldest.get(priority, seq + 1):
                oldest[priority] = seq
        for priority, seq in oldest.items():
            if priority in cursors:
                cursors[priority] = min(cursors[priority], seq - 1)
        n = len(self._entries)
        self._entries.clear()
        self.rewinds += 1
        if self._due_now:
            self._due_now = False  # the hub just came back: no reason to wait longer next time
        else:
            self.current_timeout = min(self.max_timeout_s, self.current_timeout * 2)
        return n


__all__ = ["AwaitingReceipts"]
