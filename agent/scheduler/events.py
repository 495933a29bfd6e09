"""Bus events of the scheduler: every change of a job run's state is one ``job.run`` event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from agent.bus import Event


@dataclass(frozen=True, kw_only=True)
class JobRun(Event):
    type: ClassVar[str] = "job.run"
    job: str
    run_id: int
    #: queued | held | running | ok | failed | timeout | skipped | missed | cancelled | interrupted
    state: str
    reason: str = ""
    attempt: int = 1
    scheduled_for: float = 0.0
    duration_s: float | None = None
    error: str = ""
