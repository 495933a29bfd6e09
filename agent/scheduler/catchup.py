"""What a timed job owes when the clock has moved on: the runs to queue, the fires recorded as missed.

Pure: it reads the job's trigger, missed policy and fire times, and the engine
(``agent/scheduler/engine.py``) records, queues and persists what it returns.
Fires that fell while the daemon was down (``first``: the start's catch-up), or
that piled up (more than one due at once), follow the job's missed policy:
``once`` runs the newest, ``skip`` runs none, ``all`` runs each (at most
``MAX_REPLAY``; older ones are recorded as missed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo

from agent.scheduler.jobs import MAX_REPLAY, JobSpec

#: "never fired" for an ``at`` job whose one fire must still be replayed
_NEVER = -1e18


@dataclass
class CatchUp:
    #: fire times with what they say about each other, recorded before any run is queued
    missed: list[tuple[list[float], str]] = field(default_factory=list)
    #: (scheduled_for, reason) of each run to queue, oldest first
    runs: list[tuple[float, str]] = field(default_factory=list)
    last_fire: float | None = None
    next_run: float | None = None


def catch_up(
    spec: JobSpec,
    last_fire: float | None,
    next_run: float | None,
    now: float,
    tz: tzinfo | None,
    *,
    first: bool,
    paused: bool,
) -> CatchUp | None:
    """What is due for ``spec`` at ``now``; None when nothing is (the fire times stay as they are)."""
    trigger = spec.trigger
    if not trigger.timed:
        return None
    last = last_fire
    if last is None:
        if trigger.kind != "at":  # a new job starts counting now
            return CatchUp(last_fire=now, next_run=trigger.next_after(now, tz))
        last = _NEVER if spec.missed != "skip" else now
    if not first and (next_run is None or next_run > now):
        return None
    fires = trigger.fires_between(last, now, tz, limit=MAX_REPLAY + 1)
    out = CatchUp()
    if fires and not paused:
        if len(fires) == 1 and not first:
            out.runs.append((fires[0], "schedule"))
        elif spec.missed == "skip":
            out.missed.append((fires, "policy skip: none were run"))
        elif spec.missed == "once":
            if len(fires) > 1:
                out.missed.append((fires[:-1], "policy once: only the newest runs"))
            out.runs.append((fires[-1], "missed"))
        else:
            if len(fires) > MAX_REPLAY:
                out.missed.append((fires[:-MAX_REPLAY], f"policy all replays {MAX_REPLAY}"))
            out.runs += [(t, "missed") for t in fires[-MAX_REPLAY:]]
    newest = fires[-1] if fires else last
    out.last_fire = newest if newest > _NEVER / 10 else now
    out.next_run = trigger.next_after(max(newest, now) if trigger.kind != "every" else newest, tz)
    return out
