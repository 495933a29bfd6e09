"""Resource awareness: when batch jobs must wait so voice and sensors keep the box.

A batch job waits while any of these holds (the first reason is shown):

- a voice turn is active on some stream (thinking, speaking, listening after
  the wake word, or the VAD hearing speech): a report render must not add
  latency to an answer;
- the CPU is thermally throttled (a kernel thermal zone at or above its
  passive trip, or the Raspberry Pi firmware's throttle bits: ``hal``);
- the box runs on battery, where the power-supply class says so (a mains or
  USB supply present and offline, and a battery discharging).

Thermal and power state are read from sysfs through ``hal.probe_fs.Tree``
(a recorded board tree in tests), at most every ``recheck_s``: the gate is
asked on every dispatch, and sysfs reads are not free on a small board.
Realtime and normal jobs are never held.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

VOICE_BUSY_STATES = frozenset({"thinking", "speaking"})
#: bus events the gate follows (the service subscribes to them)
VOICE_EVENTS = frozenset({"voice.state", "voice.vad.started", "voice.vad.stopped"})


def on_battery(root: str | Path = "/") -> bool:
    """True when a battery discharges and no mains/USB supply is online (``/sys/class/power_supply``)."""
    from hal.probe_fs import Tree

    tree = Tree(root)
    mains_online = False
    discharging = False
    for supply in tree.glob("/sys/class/power_supply/*"):
        kind = (tree.read(f"{supply}/type") or "").strip()
        if kind == "Battery":
            discharging |= (tree.read(f"{supply}/status") or "").strip() == "Discharging"
        elif kind in ("Mains", "USB", "USB_C", "USB_PD"):
            mains_online |= (tree.read(f"{supply}/online") or "").strip() == "1"
    return discharging and not mains_online


def thermally_throttled(root: str | Path = "/") -> bool:
    from hal.probe_fs import Tree
    from hal.probe_thermal import probe_thermal

    return probe_thermal(Tree(root)).throttling


@dataclass(eq=False)
class ResourceGate:
    """Answers "may a batch job start now?" with the reason it may not."""

    root: str | Path = "/"
    _: KW_ONLY
    recheck_s: float = 10.0
    max_turn_s: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _voice_active: set[str] = field(init=False, default_factory=set)
    _speech: set[str] = field(init=False, default_factory=set)
    _voice_at: float = field(init=False, default=-1e18)
    _checked_at: float = field(init=False, default=-1e18)
    _hw_reason: str = field(init=False, default="")

    def note_event(self, event: dict[str, Any]) -> bool:
        """Follow the voice pipelines; True when the gate may have opened.

        A turn is active on a stream while it thinks or speaks, while it listens
        after its wake word, and while the VAD hears speech. A stream that merely
        listens (an open microphone, push-to-talk held with nobody talking)
        holds nothing back.
        """
        kind = event.get("type")
        if kind not in VOICE_EVENTS:
            return False
        stream = str(event.get("stream", ""))
        self._voice_at = self.clock()
        if kind == "voice.vad.started":
            self._speech.add(stream)
        elif kind == "voice.vad.stopped":
            self._speech.discard(stream)
        else:
            state = str(event.get("state", ""))  # a PipelineState (a str Enum) or its name
            if state in VOICE_BUSY_STATES or (state == "listening" and event.get("reason") == "wake"):
                self._voice_active.add(stream)
            else:
                self._voice_active.discard(stream)
            if state != "listening":
                self._speech.discard(stream)
        return not self.voice_active

    @property
    def voice_active(self) -> bool:
        """A turn is on, unless no voice event came for ``max_turn_s``: a pipeline that never said
        it ended (a crash, a lost event) must not hold batch work back for good."""
        if not (self._voice_active or self._speech):
            return False
        return self.clock() - self._voice_at < self.max_turn_s

    def refresh(self) -> None:
        """Read thermal and power state now (the next ``busy`` call would after ``recheck_s``)."""
        self._checked_at = -1e18

    def busy(self) -> str:
        """Why batch work must wait now, or "" when it may run."""
        if self.voice_active:
            return "a voice turn is active"
        now = self.clock()
        if now - self._checked_at >= self.recheck_s:
            self._checked_at = now
            if thermally_throttled(self.root):
                self._hw_reason = "the CPU is thermally throttled"
            elif on_battery(self.root):
                self._hw_reason = "the box is on battery power"
            else:
                self._hw_reason = ""
        return self._hw_reason
